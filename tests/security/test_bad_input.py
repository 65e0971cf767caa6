"""Input the fuzz pass found answered with a 500: each is now a 404 or a 422 problem."""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_problem
from tests.conftest import TEST_DB
from tests.web.conftest import sign_in

HUGE = 2**63
POLICY = {"name": "p", "method": "vmfs_snapshot", "consistency": "cold", "rpo_minutes": 60}


def _not_a_server_error(response, allowed=(404, 422)):
    assert response.status_code in allowed, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("offset", [HUGE, 2**31])
def test_offsets_past_any_list(client, admin, offset):
    _not_a_server_error(client.get(f"/api/v1/jobs?offset={offset}", headers=admin))


@pytest.mark.parametrize("ident", [HUGE, 2**31, 2**62])
def test_ids_past_any_row(client, admin, ident):
    for path in (
        f"/api/v1/policies/{ident}",
        f"/api/v1/jobs/{ident}",
        f"/api/v1/users/{ident}",
        f"/api/v1/restore-points/{ident}",
    ):
        _not_a_server_error(client.get(path, headers=admin))
    body = {"kind": "backup", "policy_id": ident}
    _not_a_server_error(client.post("/api/v1/jobs", json=body, headers=admin))
    # A filter by an id no row can have: nothing found, or refused.
    response = client.get(f"/api/v1/tokens?user_id={ident}", headers=admin)
    assert response.status_code in (200, 422), response.text


def test_dashboard_pages_past_any_offset(client):
    assert sign_in(client, "admin", "admin-password-123").status_code == 303
    for page in (HUGE, 2**40):
        response = client.get(f"/connections?page={page}")
        assert response.status_code == 200, response.text
    assert client.get(f"/jobs/{HUGE}").status_code == 404


def test_explicit_null_for_a_field_that_needs_a_value(client, admin):
    policy = client.post("/api/v1/policies", json=POLICY, headers=admin).json()
    for field in ("name", "enabled", "keep_last", "method"):
        response = client.patch(
            f"/api/v1/policies/{policy['id']}", json={field: None}, headers=admin
        )
        assert_problem(response, 422, "cannot be null")
    # Null where empty is allowed still means empty.
    response = client.patch(
        f"/api/v1/policies/{policy['id']}",
        json={"rpo_minutes": None, "schedule_cron": "0 2 * * *"},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    server = client.post("/api/v1/servers", json={"name": "EXCH1"}, headers=admin).json()
    response = client.patch(
        f"/api/v1/servers/{server['id']}", json={"description": None}, headers=admin
    )
    assert_problem(response, 422, "cannot be null")


@pytest.mark.parametrize(
    "host",
    [
        "a" * 64 + ".example.test",  # a label IDNA cannot encode
        "mail.example.test\r\nRCPT TO:<x@y>",
        "https://mail.example.test/",
        "mail.example.test:993",
        "mail example",
    ],
)
def test_connection_hosts_are_host_names(client, admin, host):
    body = {"name": "mx", "kind": "mail", "host": host}
    _not_a_server_error(client.post("/api/v1/connections", json=body, headers=admin), (422,))
    ok = client.post(
        "/api/v1/connections", json={**body, "host": "mail.example.test"}, headers=admin
    )
    assert ok.status_code == 201, ok.text
    patched = client.patch(
        f"/api/v1/connections/{ok.json()['id']}", json={"host": host}, headers=admin
    )
    _not_a_server_error(patched, (422,))


def test_nul_characters_are_refused_on_every_database(client, admin):
    body = {**POLICY, "description": "before\x00after"}
    assert_problem(client.post("/api/v1/policies", json=body, headers=admin), 422, "NUL")
    response = client.get("/api/v1/policies?q=a%00b", headers=admin)
    if TEST_DB == "postgresql":
        _not_a_server_error(response, (200, 422))
    else:
        assert response.status_code == 200
