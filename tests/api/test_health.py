from __future__ import annotations


def test_liveness_and_readiness_need_no_sign_in(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok", "database": "ok"}


def test_readiness_reports_a_dead_database(app, client):
    app.state.runtime.db.engine.dispose()
    # Point the engine at a database that cannot exist to simulate losing it.
    from app.db.session import make_engine

    app.state.runtime.db.engine = make_engine("sqlite:////nonexistent-dir/x.db")
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"


def test_metrics_count_requests(client, admin):
    client.get("/api/v1/connections", headers=admin)
    text = client.get("/metrics", headers=admin).text
    assert (
        'bulwark_http_requests_total{method="GET",route="/api/v1/connections",status="200"}' in text
    )


def test_openapi_documents_every_resource(client, admin):
    spec = client.get("/api/v1/openapi.json", headers=admin).json()
    for path in (
        "/api/v1/connections",
        "/api/v1/servers",
        "/api/v1/policies",
        "/api/v1/jobs",
        "/api/v1/restore-points",
        "/api/v1/legal-holds",
        "/api/v1/audit-events",
        "/api/v1/users",
        "/api/v1/tokens",
    ):
        assert path in spec["paths"], path
    create = spec["components"]["schemas"]["ConnectionCreate"]
    password = create["properties"]["password"]["anyOf"][0]
    assert password["writeOnly"] is True and password["format"] == "password"
    assert "password" not in spec["components"]["schemas"]["ConnectionOut"]["properties"]
    # The docs are for signed-in readers (tests/security/test_api_docs.py).
    assert client.get("/docs", follow_redirects=False).status_code == 303
