"""The API's own description: for signed-in readers only, served from this origin.

The OpenAPI document declares the bearer-token scheme (so the docs can authorize) and, for
every operation, the problem-details errors it can answer with; a client generated from it,
or a fuzzer checking it, finds no undocumented status. Swagger UI is vendored under
``static/vendor/swagger-ui`` (pinned, see its VERSION file) and runs under the dashboard's CSP.
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from app.api import API_PREFIX
from app.api.deps import Reader, runtime, session_user

OPENAPI_URL = API_PREFIX + "/openapi.json"
BEARER = "bearerToken"

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}
ERRORS = {
    "400": "The request cannot be read",
    "401": "No valid credentials",
    "403": "The role does not allow this, or a CSRF token is missing",
    "404": "No such object",
    "409": "Conflicts with the current state",
    "413": "The request body is too large",
    "422": "Invalid request",
    "429": "Too many attempts; see Retry-After",
    "502": "A system this call depends on failed",
}
PUBLIC_OPERATIONS = {("/healthz", "get"), ("/readyz", "get")}


def _document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = {
        BEARER: {"type": "http", "scheme": "bearer", "description": "An API token, bwk_…"}
    }
    ref = {"$ref": "#/components/schemas/Problem"}
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            if (path, method) in PUBLIC_OPERATIONS:
                continue
            operation["security"] = [{BEARER: []}]
            responses = operation.setdefault("responses", {})
            for status, description in ERRORS.items():
                responses[status] = {
                    "description": description,
                    "content": {"application/problem+json": {"schema": ref}},
                }
    # FastAPI's own validation-error shape is never sent (app.api.problems answers instead).
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    return doc


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.include_router(_router(openapi))


def _router(openapi) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get(OPENAPI_URL)
    def openapi_document(_: Reader):
        return JSONResponse(openapi())

    @router.get("/docs")
    def docs(request: Request):
        with runtime(request).db.session() as session:
            if session_user(request, session) is None:
                return RedirectResponse("/login?next=%2Fdocs", status_code=303)
        from app.web.templating import SECURITY_HEADERS

        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(request.app.title)} API</title>
<link rel="icon" href="/static/img/favicon.svg">
<link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css"></head>
<body data-openapi-url="{OPENAPI_URL}"><div id="swagger-ui"></div>
<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/static/js/api-docs.js"></script></body></html>"""
        return HTMLResponse(page, headers=SECURITY_HEADERS)

    @router.get("/redoc")
    def redoc():
        # One set of docs is kept; ReDoc would be a second vendored bundle for the same page.
        return RedirectResponse("/docs", status_code=308)

    return router
