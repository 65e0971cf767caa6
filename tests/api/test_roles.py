"""Each role can do exactly what it should, on every kind of route."""

from __future__ import annotations

import pytest

from app.security.roles import Role

A, OP, R, U = Role.ADMIN, Role.OPERATOR, Role.RESTORE_OPERATOR, Role.AUDITOR

# (method, path, body, roles allowed). Bodies are valid, so a refusal can only be the role.
CASES = [
    ("GET", "/api/v1/connections", None, {A, OP, R, U}),
    ("POST", "/api/v1/connections", {"name": "c-{role}", "kind": "vcenter"}, {A}),
    ("GET", "/api/v1/servers", None, {A, OP, R, U}),
    ("POST", "/api/v1/servers", {"name": "s-{role}"}, {A, OP}),
    ("GET", "/api/v1/policies", None, {A, OP, R, U}),
    (
        "POST",
        "/api/v1/policies",
        {"name": "p-{role}", "method": "vmfs_snapshot", "consistency": "cold", "rpo_minutes": 60},
        {A, OP},
    ),
    ("GET", "/api/v1/jobs", None, {A, OP, R, U}),
    ("POST", "/api/v1/jobs", {"kind": "backup", "policy_id": "{policy}"}, {A, OP}),
    (
        "POST",
        "/api/v1/jobs",
        {"kind": "restore", "restore_point_id": "{point}", "params": {"confirm": "EXCH-R"}},
        {A, OP, R},
    ),
    ("GET", "/api/v1/restore-points", None, {A, OP, R, U}),
    ("DELETE", "/api/v1/restore-points/{point}", None, {A, OP}),
    ("GET", "/api/v1/legal-holds", None, {A, OP, R, U}),
    (
        "POST",
        "/api/v1/legal-holds",
        {"name": "h-{role}", "reason": "case", "scope": "mailbox", "mailbox": "ceo@example.test"},
        {A},
    ),
    ("GET", "/api/v1/audit-events", None, {A, U}),
    ("GET", "/api/v1/users", None, {A}),
    (
        "POST",
        "/api/v1/users",
        {"username": "u-{role}", "password": "a-long-password", "role": "auditor"},
        {A},
    ),
    ("GET", "/api/v1/me", None, {A, OP, R, U}),
    ("GET", "/api/v1/tokens", None, {A, OP, R, U}),
    ("GET", "/metrics", None, {A, OP, R, U}),
]


@pytest.fixture
def fixtures(app, client, admin):
    from app.db.models import RestorePoint, RestorePointCopy
    from app.domain.protection import Consistency, CopyLocation, ProtectionMethod

    pid = client.post(
        "/api/v1/policies",
        headers=admin,
        json={"name": "base", "method": "vmfs_snapshot", "consistency": "cold", "rpo_minutes": 60},
    ).json()["id"]
    server = client.post("/api/v1/servers", headers=admin, json={"name": "EXCH-R"})
    server_id = server.json()["id"]
    with app.state.runtime.db.session() as session:
        point = RestorePoint(
            method=ProtectionMethod.VMFS_SNAPSHOT, consistency=Consistency.COLD, server_id=server_id
        )
        point.copies = [RestorePointCopy(location=CopyLocation.VM_SNAPSHOT, reference="snap-1")]
        session.add(point)
        session.flush()
        return {"policy": pid, "point": point.id}


def _fill(value, **names):
    if isinstance(value, str):
        if value.startswith("{") and value.endswith("}") and value[1:-1] in names:
            return names[value[1:-1]]
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _fill(v, **names) for k, v in value.items()}
    return value


@pytest.mark.parametrize("role", list(Role))
def test_role_matrix(client, headers_for, fixtures, role):
    headers = headers_for(role)
    for method, path, body, allowed in CASES:
        names = {"role": role.value, **fixtures}
        r = client.request(method, _fill(path, **names), json=_fill(body, **names), headers=headers)
        if role in allowed:
            assert r.status_code < 400, (role, method, path, r.text)
        else:
            assert r.status_code == 403, (role, method, path, r.status_code, r.text)
            assert r.json()["type"] == "/problems/forbidden"


def test_every_api_route_requires_authentication(app, client):
    spec = app.openapi()
    open_paths = {"/healthz", "/readyz"}
    # Like signing in: the one-time enrollment code in the body is the credential, so a
    # request without one is refused (never served).
    enrollment = {"/api/v1/agent/enroll"}
    checked = 0
    for path, ops in spec["paths"].items():
        for method in ops:
            url = path.replace("{", "").replace("}", "")  # ids become words: still routed
            url = "/".join("1" if part.endswith("_id") else part for part in url.split("/"))
            r = client.request(method.upper(), url)
            if path in open_paths:
                assert r.status_code == 200
            elif path in enrollment:
                assert r.status_code in (401, 422), (method, path, r.status_code)
            else:
                assert r.status_code == 401, (method, path, r.status_code)
                checked += 1
    assert checked > 30
