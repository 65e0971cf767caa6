"""Secrets are write-only: never in a response, never in a log line."""

from __future__ import annotations

import logging

SECRET = "Do-Not-Leak-7f3a9c"


def test_secrets_never_returned_or_logged(client, admin, caplog):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    for kind in ("vcenter", "array", "repository", "mail"):
        r = client.post(
            "/api/v1/connections",
            headers=admin,
            json={
                "name": f"c-{kind}",
                "kind": kind,
                "host": "h",
                "password": SECRET,
                "guest_username": "CORP\\backup",
                "guest_password": SECRET + "-guest",
            },
        )
        seen.append(r.text)
        assert r.json()["has_guest_secret"] is True
        cid = r.json()["id"]
        seen.append(
            client.patch(
                f"/api/v1/connections/{cid}", headers=admin, json={"password": SECRET + "2"}
            ).text
        )
        seen.append(client.get(f"/api/v1/connections/{cid}", headers=admin).text)
    # A rejected request must not echo the secret back either.
    r = client.post(
        "/api/v1/connections",
        headers=admin,
        json={"name": "bad", "kind": "vcenter", "port": "x", "password": SECRET},
    )
    assert r.status_code == 422
    seen.append(r.text)
    r = client.post(
        "/api/v1/connections",
        headers=admin,
        json={"name": "bad", "kind": "vcenter", "password": SECRET + "x" * 2000},
    )
    assert r.status_code == 422
    seen.append(r.text)
    for path in (
        "/api/v1/connections",
        "/api/v1/audit-events?limit=500",
        "/metrics",
        "/api/v1/openapi.json",
    ):
        seen.append(client.get(path, headers=admin).text)

    assert all(SECRET not in text for text in seen)
    assert all(SECRET not in record.getMessage() for record in caplog.records)
    assert all(SECRET not in str(record.args) for record in caplog.records)
