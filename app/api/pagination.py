"""Offset pagination with a total, and sorting restricted to named fields."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.api.problems import invalid

T = TypeVar("T")
MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


def paginate(
    session: Session,
    query: Select,
    *,
    limit: int,
    offset: int,
    sort: str | None,
    sortable: dict[str, Any],
    default_sort: str,
) -> tuple[list[Any], int]:
    """Run ``query`` sorted by ``sort`` (``name`` or ``-name``) and cut one page of it."""
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
    rows = session.scalars(query.order_by(order, pk).limit(limit).offset(offset)).all()
    return list(rows), int(total or 0)
