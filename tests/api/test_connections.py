from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db.models import AuditEvent, Connection
from tests.api.conftest import assert_problem

VCENTER = {
    "name": "vc-lab",
    "kind": "vcenter",
    "host": "vc.example.test",
    "port": 443,
    "username": "administrator@vsphere.local",
    "password": "S3cret-vc-pass!",
}


def test_create_read_update_delete(client, admin):
    r = client.post("/api/v1/connections", json=VCENTER, headers=admin)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["has_secret"] is True and body["verify_tls"] is True
    assert body["status"] == "untested"
    cid = body["id"]

    r = client.patch(f"/api/v1/connections/{cid}", json={"host": "vc2.example.test"}, headers=admin)
    assert r.status_code == 200 and r.json()["host"] == "vc2.example.test"
    assert r.json()["has_secret"] is True  # omitted password is kept

    assert client.get(f"/api/v1/connections/{cid}", headers=admin).json()["name"] == "vc-lab"
    assert client.delete(f"/api/v1/connections/{cid}", headers=admin).status_code == 204
    assert_problem(client.get(f"/api/v1/connections/{cid}", headers=admin), 404, "does not exist")


def test_secret_is_encrypted_at_rest(app, client, admin):
    cid = client.post("/api/v1/connections", json=VCENTER, headers=admin).json()["id"]
    runtime = app.state.runtime
    with runtime.db.session() as session:
        sealed = session.get(Connection, cid).secret_ciphertext
    assert VCENTER["password"].encode() not in sealed
    assert runtime.secrets.open(sealed, "connection") == VCENTER["password"]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"port": "not-a-number"}, "port"),
        ({"port": 70000}, "port"),
        ({"kind": "ftp"}, "kind"),
        ({"name": "x" * 65}, "name"),
        ({"name": ""}, "name"),
        ({"colour": "blue"}, "colour"),
        ({"trusted_thumbprint": "zz:11"}, "trusted_thumbprint"),
        ({"options": {"api_key": "x"}}, "options"),
        ({"password": "p" * 2000}, "password"),
    ],
)
def test_bad_input_gives_problem_details(client, admin, change, fragment):
    r = client.post("/api/v1/connections", json={**VCENTER, **change}, headers=admin)
    body = assert_problem(r, 422)
    assert any(fragment in ".".join(map(str, e["loc"])) for e in body["errors"]), body


def test_duplicate_name_is_a_conflict(client, admin):
    assert client.post("/api/v1/connections", json=VCENTER, headers=admin).status_code == 201
    assert_problem(
        client.post("/api/v1/connections", json=VCENTER, headers=admin), 409, "already exists"
    )
    other = client.post(
        "/api/v1/connections", json={**VCENTER, "name": "vc-other"}, headers=admin
    ).json()
    r = client.patch(f"/api/v1/connections/{other['id']}", json={"name": "vc-lab"}, headers=admin)
    assert_problem(r, 409, "already exists")


def test_list_filters_sorts_and_paginates(client, admin):
    for i in range(7):
        kind = "vcenter" if i % 2 else "repository"
        client.post(
            "/api/v1/connections",
            json={"name": f"conn-{i}", "kind": kind, "host": f"h{i}"},
            headers=admin,
        )
    page = client.get("/api/v1/connections?limit=3&offset=0&sort=-name", headers=admin).json()
    assert page["total"] == 7 and page["limit"] == 3
    assert [c["name"] for c in page["items"]] == ["conn-6", "conn-5", "conn-4"]
    page2 = client.get("/api/v1/connections?limit=3&offset=6&sort=-name", headers=admin).json()
    assert [c["name"] for c in page2["items"]] == ["conn-0"]
    vcs = client.get("/api/v1/connections?kind=vcenter", headers=admin).json()
    assert vcs["total"] == 3 and {c["kind"] for c in vcs["items"]} == {"vcenter"}
    assert client.get("/api/v1/connections?q=conn-3", headers=admin).json()["total"] == 1
    assert_problem(
        client.get("/api/v1/connections?sort=password", headers=admin), 422, "cannot sort"
    )
    assert_problem(client.get("/api/v1/connections?limit=0", headers=admin), 422)


def test_trusting_a_thumbprint_is_normalised_and_audited(app, client, admin):
    thumb = "ab" * 32
    r = client.post(
        "/api/v1/connections", json={**VCENTER, "trusted_thumbprint": thumb}, headers=admin
    )
    assert r.json()["trusted_thumbprint"] == ":".join(["AB"] * 32)
    with app.state.runtime.db.session() as session:
        actions = session.scalars(select(AuditEvent.action)).all()
    assert "connection.trust_certificate" in actions


def test_connection_in_use_cannot_be_deleted(client, admin):
    repo = client.post(
        "/api/v1/connections", json={"name": "repo", "kind": "repository"}, headers=admin
    ).json()
    policy = {
        "name": "p1",
        "method": "vm_image",
        "consistency": "crash",
        "rpo_minutes": 60,
        "repository_id": repo["id"],
    }
    assert client.post("/api/v1/policies", json=policy, headers=admin).status_code == 201
    assert_problem(client.delete(f"/api/v1/connections/{repo['id']}", headers=admin), 409, "p1")
