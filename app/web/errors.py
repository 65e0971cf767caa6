"""Dashboard errors as HTML pages; the API keeps answering with problem+json."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from app.api.deps import runtime, session_user
from app.api.problems import Problem
from app.web.context import LoginRequired, login_url
from app.web.templating import render

log = logging.getLogger(__name__)

TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Invalid request",
    429: "Too many requests",
    500: "Something went wrong",
}


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def error_page(
    request: Request, status: int, detail: str, headers: dict[str, str] | None = None
) -> Response:
    """A friendly page in the dashboard's frame (with navigation when someone is signed in)."""
    user = None
    try:
        with runtime(request).db.session() as session:
            user = session_user(request, session)
            if user is not None:
                session.expunge(user)
    except Exception:  # the error page must not fail because the database does
        log.exception("could not load the user for an error page")
    if status == 403 and "csrf" in detail.lower():
        detail = (
            "This form has expired or did not come from Bulwark's own pages, so nothing "
            "was changed. Go back, reload the page and try again."
        )
    template = "partials/error.html" if is_htmx(request) else "errors/error.html"
    return render(
        request,
        template,
        {"status": status, "title": TITLES.get(status, "Error"), "detail": detail},
        user=user,
        status_code=status,
        headers=headers,
    )


def login_redirect(request: Request, next_url: str) -> Response:
    target = login_url(next_url)
    if is_htmx(request):
        # htmx follows HX-Redirect with a full page load instead of swapping the login page in.
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


class WebRoute(APIRoute):
    """Route class for dashboard pages: turns the exceptions pages raise into HTML answers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as exc:
                return login_redirect(request, exc.next_url)
            except Problem as exc:
                return error_page(request, exc.status, exc.detail, exc.headers)
            except RequestValidationError:
                # Only path and query parameters are declared, so a bad one names no page.
                return error_page(request, 404, "There is no such page.")
            except StarletteHTTPException as exc:
                return error_page(request, exc.status_code, str(exc.detail), exc.headers)
            except IntegrityError:
                log.info("integrity error on %s %s", request.method, request.url.path)
                return error_page(
                    request,
                    409,
                    "The change conflicts with existing data (a duplicate name, or something "
                    "another user removed meanwhile). Reload and try again.",
                )
            except (OverflowError, DataError) as exc:
                # A number past any id, or a NUL character: nothing by that name can exist.
                log.info("out-of-range value on %s %s: %s", request.method, request.url.path, exc)
                return error_page(request, 404, "There is no such page.")
            except Exception:
                log.exception("dashboard page %s %s failed", request.method, request.url.path)
                return error_page(
                    request,
                    500,
                    "The page could not be shown. The error has been logged; try again, "
                    "and tell your administrator if it persists.",
                )

        return handle
