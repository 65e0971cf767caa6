"""Offset pagination with a total, and sorting restricted to named fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.api.problems import invalid

T = TypeVar("T")
MAX_LIMIT = 500
MAX_OFFSET = 2**31 - 1


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


@dataclass
class PageWindow:
    """Which slice of a list: ``limit`` items from ``offset``."""

    limit: int = Query(default=50, ge=1, le=MAX_LIMIT, description="Items per page")
    # Bounded: both databases take a 32-bit signed offset at least, and no list is longer.
    offset: int = Query(default=0, ge=0, le=MAX_OFFSET, description="Items to skip")


def query_page(
    session: Session,
    query: Select,
    window: PageWindow,
    sort: str | None,
    *,
    sortable: dict[str, Any],
    default_sort: str,
) -> tuple[list[Any], int]:
    """Run ``query`` sorted by ``sort`` (``name`` or ``-name``); one page of rows and the total."""
    key = sort or default_sort
    column = sortable.get(key.lstrip("-"))
    if column is None:
        raise invalid(
            f"cannot sort by '{key}'; choose one of: {', '.join(sorted(sortable))}", "sort"
        )
    order = column.desc() if key.startswith("-") else column.asc()
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    # The primary key as a tie-breaker keeps pages stable when sort values repeat.
    pk = query.column_descriptions[0]["entity"].id
    rows = session.scalars(
        query.order_by(order, pk).limit(window.limit).offset(window.offset)
    ).all()
    return list(rows), int(total or 0)


def paginate(
    session: Session,
    query: Select,
    window: PageWindow,
    sort: str | None,
    *,
    sortable: dict[str, Any],
    default_sort: str,
) -> dict[str, Any]:
    """One page as the list endpoints return it: ``{items, total, limit, offset}``."""
    items, total = query_page(
        session, query, window, sort, sortable=sortable, default_sort=default_sort
    )
    return {"items": items, "total": total, "limit": window.limit, "offset": window.offset}
