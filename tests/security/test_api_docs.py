"""The API docs: for signed-in readers, from this origin, with the bearer scheme and every
error response documented."""

from __future__ import annotations

from pathlib import Path

from tests.web.conftest import csrf_from

STATIC = Path(__file__).resolve().parents[2] / "static"


def test_docs_and_the_openapi_document_need_a_reader(client, admin):
    assert client.get("/api/v1/openapi.json").status_code == 401
    response = client.get("/docs", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    assert client.get("/redoc", follow_redirects=False).headers["location"] == "/docs"
    assert client.get("/api/v1/openapi.json", headers=admin).status_code == 200


def test_docs_load_nothing_from_elsewhere(admin_client):
    page = admin_client.get("/docs")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/static/vendor/swagger-ui/{asset}" in page.text
        assert (STATIC / "vendor" / "swagger-ui" / asset).stat().st_size > 100_000
        assert admin_client.get(f"/static/vendor/swagger-ui/{asset}").status_code == 200
    assert "<script>" not in page.text  # no inline script: the CSP would refuse it
    # A signed-in browser reads the document with its cookie (as Swagger UI does).
    assert admin_client.get("/api/v1/openapi.json").status_code == 200
    assert csrf_from(admin_client.get("/").text)


def test_bearer_scheme_and_error_responses_are_declared(app):
    spec = app.openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes == {
        "bearerToken": {"type": "http", "scheme": "bearer", "description": "An API token, bwk_…"}
    }
    operations = [
        (path, method, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if path not in ("/healthz", "/readyz")
    ]
    assert len(operations) > 60
    for path, method, op in operations:
        assert op["security"] == [{"bearerToken": []}], (method, path)
        for status in ("400", "401", "403", "404", "409", "422", "502"):
            content = op["responses"][status]["content"]["application/problem+json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Problem"}, (path, status)


def test_api_answers_are_not_sniffed_or_cached(client, admin):
    for response in (
        client.get("/api/v1/me", headers=admin),
        client.get("/api/v1/me"),  # a 401 problem too
        client.post("/api/v1/policies", json={}),  # refused by the guard, unread
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
