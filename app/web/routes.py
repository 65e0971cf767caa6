"""The dashboard: server-rendered pages (Jinja2) with htmx for the live parts."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from app.web.errors import WebRoute, error_page
from app.web.pages import (
    arrays,
    auth,
    catalog,
    connections,
    disk_images,
    holds,
    inventory,
    mailboxes,
    overview,
    policies,
    repositories,
    restore_points,
    servers,
    users,
    whole_vm,
)

router = APIRouter(include_in_schema=False, route_class=WebRoute)
for module in (
    auth,
    overview,
    connections,
    arrays,
    inventory,
    servers,
    policies,
    catalog,
    restore_points,
    whole_vm,
    disk_images,
    repositories,
    mailboxes,
    holds,
    users,
):
    router.include_router(module.router)


class _DashboardPath(Convertor[str]):
    """Any path outside the API and the static files (they answer their own 404s)."""

    regex = r"(?!(?:api|static)(?:/|$)).*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("dashboard_path", _DashboardPath())


# Must stay the last dashboard route: an unknown page gets an HTML 404, not problem+json.
@router.get("/{path:dashboard_path}")
def not_found(request: Request, path: str) -> Response:
    return error_page(
        request, 404, "There is no such page. Check the address, or start from the overview."
    )
