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
    # A VM image covers the server; a database-level method covers its databases.
    r = client.post(
        "/api/v1/policies",
        headers=admin,
        json=_policy(
            repo,
            name="db-level",
            method="vmfs_snapshot",
            consistency="cold",
            targets=[{"server_id": server["id"], "database_id": db["id"]}],
        ),
    )
    assert r.status_code == 201, r.text
    r = client.post(
        "/api/v1/policies", json=_policy(repo, targets=[{"server_id": server["id"]}]), headers=admin
    )
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["compliance_retention_days"] == 2555 and len(p["targets"]) == 1

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
    assert listed["total"] == 2
    assert client.delete(f"/api/v1/policies/{p['id']}", headers=admin).status_code == 204
    assert client.get("/api/v1/policies", headers=admin).json()["total"] == 1


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


def test_policy_the_layout_cannot_give_is_refused(client, admin, repo):
    server = client.post(
        "/api/v1/servers",
        headers=admin,
        json={
            "name": "EXCH-P",
            "databases": [
                {"name": "DBP", "layout": "rdm_physical"},
                {"name": "DBV", "layout": "rdm_virtual"},
            ],
        },
    ).json()
    dbs = {d["name"]: d["id"] for d in server["databases"]}

    def target(name):
        return [{"server_id": server["id"], "database_id": dbs[name]}]

    r = client.post(
        "/api/v1/policies",
        headers=admin,
        json=_policy(repo, method="vmfs_snapshot", consistency="cold", targets=target("DBP")),
    )
    body = assert_problem(r, 422, "VMFS cannot snapshot")
    assert body["type"] == "/problems/protection-not-possible"
    r = client.post(
        "/api/v1/policies",
        headers=admin,
        json=_policy(
            repo, method="vmfs_snapshot", consistency="hot_crash_scripted", targets=target("DBV")
        ),
    )
    assert_problem(r, 422, "needs pre- and post-snapshot scripts")
    r = client.post(
        "/api/v1/policies",
        headers=admin,
        json=_policy(
            repo,
            method="array_snapshot",
            consistency="hot_application",
            targets=target("DBP"),
            restores_needed=["mailbox"],
        ),
    )
    assert_problem(r, 422, "never a single mailbox")
    r = client.post(
        "/api/v1/policies",
        headers=admin,
        json=_policy(
            repo,
            method="vmfs_snapshot",
            consistency="hot_crash_scripted",
            targets=target("DBV"),
            pre_script="quiesce.cmd",
            post_script="resume.cmd",
        ),
    )
    assert r.status_code == 201, r.text
    # A change that breaks the fit is refused too, and nothing of it is kept.
    r = client.patch(
        f"/api/v1/policies/{r.json()['id']}", headers=admin, json={"post_script": None}
    )
    assert_problem(r, 422, "scripts")
    assert client.get("/api/v1/policies", headers=admin).json()["items"][0]["post_script"]


def test_a_warm_policy_without_scripts_is_refused(client, admin, repo, server):
    """Warm means the scripts dismount and mount the database: without them the backups
    would be crash-consistent, so the policy is refused rather than saved."""
    db = server["databases"][0]
    targets = [{"server_id": server["id"], "database_id": db["id"]}]
    body = _policy(repo, method="vmfs_snapshot", consistency="warm", targets=targets)
    r = client.post("/api/v1/policies", headers=admin, json=body)
    problem = assert_problem(r, 422, "needs pre- and post-snapshot scripts")
    assert problem["type"] == "/problems/protection-not-possible" and "warm" in problem["detail"]
    only_pre = {**body, "pre_script": "dismount-db.cmd DB01"}
    assert_problem(client.post("/api/v1/policies", headers=admin, json=only_pre), 422, "scripts")
    scripted = {**only_pre, "post_script": "mount-db.cmd DB01"}
    r = client.post("/api/v1/policies", headers=admin, json=scripted)
    assert r.status_code == 201, r.text
