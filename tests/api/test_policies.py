from __future__ import annotations

import pytest

from tests.api.conftest import assert_problem


@pytest.fixture
def repo(client, admin) -> int:
    return client.post(
        "/api/v1/connections", json={"name": "disk-library", "kind": "repository"}, headers=admin
    ).json()["id"]


@pytest.fixture
def server(client, admin) -> dict:
    return client.post(
        "/api/v1/servers",
        headers=admin,
        json={"name": "EXCH-MBX02", "databases": [{"name": "DB01", "layout": "rdm_virtual"}]},
    ).json()


def _policy(repo: int, **over) -> dict:
    return {
        "name": "nightly",
        "method": "vm_image",
        "consistency": "crash",
        "schedule_cron": "0 2 * * *",
        "repository_id": repo,
        "keep_last": 14,
        "keep_daily": 7,
        "compliance_retention_days": 2555,
        **over,
    }


def test_policy_lifecycle(client, admin, repo, server):
    db = server["databases"][0]
    body = _policy(
        repo,
        targets=[{"server_id": server["id"]}, {"server_id": server["id"], "database_id": db["id"]}],
    )
    r = client.post("/api/v1/policies", json=body, headers=admin)
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["compliance_retention_days"] == 2555 and len(p["targets"]) == 2

    r = client.patch(
        f"/api/v1/policies/{p['id']}",
        headers=admin,
        json={"schedule_cron": None, "rpo_minutes": 30, "targets": [{"server_id": server["id"]}]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["rpo_minutes"] == 30 and r.json()["targets"] == [
        {"server_id": server["id"], "database_id": None}
    ]
    # Replacing targets with the same set must not trip the unique constraint.
    r = client.patch(
        f"/api/v1/policies/{p['id']}",
        headers=admin,
        json={"targets": [{"server_id": server["id"]}]},
    )
    assert r.status_code == 200, r.text
    listed = client.get(f"/api/v1/policies?server_id={server['id']}", headers=admin).json()
    assert listed["total"] == 1
    assert client.delete(f"/api/v1/policies/{p['id']}", headers=admin).status_code == 204
    assert client.get("/api/v1/policies", headers=admin).json()["total"] == 0


@pytest.mark.parametrize(
    ("over", "status", "fragment"),
    [
        ({"schedule_cron": "every night"}, 422, "cron"),
        ({"rpo_minutes": 60}, 422, "exactly one"),
        ({"schedule_cron": None}, 422, "exactly one"),
        ({"rpo_minutes": 1, "schedule_cron": None}, 422, "rpo_minutes"),
        ({"method": "tape"}, 422, "method"),
        ({"keep_last": -1}, 422, "keep_last"),
        ({"repository_id": None}, 422, "needs a repository"),
        ({"repository_id": 4242}, 422, "not a repository"),
        ({"targets": [{"server_id": 4242}]}, 422, "does not exist"),
        ({"pre_script": "x" * 5000}, 422, "pre_script"),
        ({"unknown": 1}, 422, "unknown"),
    ],
)
def test_policy_validation(client, admin, repo, over, status, fragment):
    r = client.post("/api/v1/policies", json=_policy(repo, **over), headers=admin)
    body = assert_problem(r, status)
    assert fragment in body["detail"] or any(
        fragment in ".".join(map(str, e["loc"])) for e in body.get("errors", [])
    ), body


def test_target_database_must_belong_to_server(client, admin, repo, server):
    other = client.post("/api/v1/servers", headers=admin, json={"name": "EXCH-OTHER"}).json()
    db = server["databases"][0]
    r = client.post(
        "/api/v1/policies",
        headers=admin,
        json=_policy(repo, targets=[{"server_id": other["id"], "database_id": db["id"]}]),
    )
    assert_problem(r, 422, "is not on server")


def test_duplicate_policy_name(client, admin, repo):
    assert client.post("/api/v1/policies", json=_policy(repo), headers=admin).status_code == 201
    assert_problem(client.post("/api/v1/policies", json=_policy(repo), headers=admin), 409)
