"""Page numbers for dashboard lists, on top of the API's offset pagination."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Select
from sqlalchemy.orm import Session

from app.api.pagination import MAX_OFFSET, PageWindow, query_page

PAGE_SIZE = 25


@dataclass
class Pager:
    page: int
    size: int
    total: int
    params: dict[str, Any]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def first_item(self) -> int:
        return 0 if self.total == 0 else (self.page - 1) * self.size + 1

    @property
    def last_item(self) -> int:
        return min(self.total, self.page * self.size)

    def url(self, page: int) -> str:
        query = {k: v for k, v in self.params.items() if v not in (None, "")}
        if page > 1:
            query["page"] = page
        return "?" + urlencode(query) if query else "?"


def page_of(
    session: Session,
    query: Select,
    *,
    page: int,
    sortable: dict[str, Any],
    default_sort: str,
    params: dict[str, Any],
    size: int = PAGE_SIZE,
) -> tuple[list[Any], Pager]:
    # Past the last page is an empty page, and no page number overflows an offset.
    page = min(max(1, page), MAX_OFFSET // size)
    window = PageWindow(limit=size, offset=(page - 1) * size)
    items, total = query_page(
        session, query, window, None, sortable=sortable, default_sort=default_sort
    )
    return items, Pager(page, size, total, params)


def enum_or_none(enum_cls, value: str | None):
    """A filter value from the query string, or None when it is empty or unknown."""
    if not value:
        return None
    try:
        return enum_cls(value)
    except ValueError:
        return None


def int_or_none(value: str | None) -> int | None:
    """A numeric filter value from the query string, or None when it is empty or not a number."""
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if -(2**31) <= number < 2**31 else None  # no id is past a 32-bit column
