"""Errors as RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"

T = TypeVar("T")


class Problem(Exception):
    """An error the client can act on. ``type`` names the kind of problem."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type_: str = "about:blank",
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type_
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers
        self.extra = extra


def not_found(what: str, ident: object) -> Problem:
    return Problem(404, f"{what} {ident} does not exist", type_="/problems/not-found")


def found(row: T | None, what: str, ident: object) -> T:
    """``row`` (a ``session.get``), or the not-found problem when there is none."""
    if row is None:
        raise not_found(what, ident)
    return row


def conflict(detail: str) -> Problem:
    return Problem(409, detail, type_="/problems/conflict")


def invalid(detail: str, field: str | None = None) -> Problem:
    errors = [{"loc": ["body", field], "msg": detail}] if field else []
    return Problem(422, detail, type_="/problems/validation", errors=errors)


def _out_of_range() -> Problem:
    return Problem(
        422,
        "a value is out of range for this service (a number too large, or a NUL character)",
        type_="/problems/validation",
        title="Invalid request",
    )


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
        **problem.extra,
    }
    return JSONResponse(
        body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers
    )


def _clean_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Pydantic echoes the rejected input; for a password field that would leak it.
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = _clean_errors(exc.errors())
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        detail = f"{where}: {first['msg']}" if where else first["msg"]
        return problem_response(
            request,
            Problem(
                422, detail, type_="/problems/validation", title="Invalid request", errors=errors
            ),
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError):
        # Races past the explicit checks end here: a duplicate name or a vanished reference.
        log.info("integrity error on %s %s", request.method, request.url.path)
        return problem_response(
            request,
            conflict("the change conflicts with existing data (duplicate or missing reference)"),
        )

    # What the database cannot store: a number past its integer column (ids are 32-bit on
    # PostgreSQL, 64-bit on SQLite) or a NUL character in text (PostgreSQL). No such id
    # can exist and no such text can be kept, so the request is invalid, not a server error.
    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError):
        return problem_response(request, _out_of_range())

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError):
        log.info("data error on %s %s: %s", request.method, request.url.path, exc.orig)
        return problem_response(request, _out_of_range())

    @app.exception_handler(StatementError)
    async def _statement(request: Request, exc: StatementError):
        if isinstance(exc.orig, OverflowError | ValueError):
            return problem_response(request, _out_of_range())
        raise exc

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return problem_response(
            request, Problem(exc.status_code, str(exc.detail), headers=exc.headers)
        )
