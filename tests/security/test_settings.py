"""The security settings: where webhooks may go, and how long tokens may live."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.db.types import utcnow
from app.security.roles import Role
from app.security.settings import webhook_refusal
from tests.api.conftest import assert_problem

POLICY = {"name": "p", "method": "vmfs_snapshot", "consistency": "cold", "rpo_minutes": 60}
DEFAULT = ["0.0.0.0/0", "::/0"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_loopback_and_link_local_are_refused_by_default(url):
    assert "loopback or link-local" in webhook_refusal(url, DEFAULT)


def test_other_addresses_follow_the_allow_list():
    assert webhook_refusal("https://192.0.2.10/hook", DEFAULT) is None
    assert "outside" in webhook_refusal("https://192.0.2.10/hook", ["198.51.100.0/24"])
    assert webhook_refusal("http://127.0.0.1/hook", ["127.0.0.1/32"]) is None
    assert webhook_refusal("http://unknown.invalid/hook", DEFAULT) is None  # sends nowhere


def test_an_operator_cannot_point_a_webhook_inside(client, admin, headers_for):
    operator = headers_for(Role.OPERATOR)
    body = {**POLICY, "notify_webhook_url": "http://169.254.169.254/latest"}
    assert_problem(client.post("/api/v1/policies", json=body, headers=operator), 422, "link-local")
    ok = client.post("/api/v1/policies", json=POLICY, headers=operator)
    assert ok.status_code == 201
    patched = client.patch(
        f"/api/v1/policies/{ok.json()['id']}",
        json={"notify_webhook_url": "http://127.0.0.1:22/"},
        headers=operator,
    )
    assert_problem(patched, 422, "loopback")

    # Only admins change the allow-list; once they name loopback, it is allowed.
    change = {"webhook_allowed_networks": ["127.0.0.1/32"]}
    assert (
        client.patch("/api/v1/security-settings", json=change, headers=operator).status_code == 403
    )
    response = client.patch("/api/v1/security-settings", json=change, headers=admin)
    assert response.status_code == 200 and response.json()["webhook_allowed_networks"] == [
        "127.0.0.1/32"
    ]
    patched = client.patch(
        f"/api/v1/policies/{ok.json()['id']}",
        json={"notify_webhook_url": "http://127.0.0.1:9/hook"},
        headers=operator,
    )
    assert patched.status_code == 200, patched.text
    bad = client.patch(
        "/api/v1/security-settings", json={"webhook_allowed_networks": ["nope"]}, headers=admin
    )
    assert_problem(bad, 422, "not a network")


def test_token_lifetime_is_capped_by_the_admin(client, admin, headers_for):
    auditor = headers_for(Role.AUDITOR)
    unlimited = client.post(
        "/api/v1/tokens", json={"name": "forever", "expires_in_days": None}, headers=auditor
    )
    assert unlimited.status_code == 201 and unlimited.json()["expires_at"] is None

    assert (
        client.patch(
            "/api/v1/security-settings", json={"max_token_days": 30}, headers=admin
        ).status_code
        == 200
    )
    too_long = client.post(
        "/api/v1/tokens", json={"name": "long", "expires_in_days": 365}, headers=auditor
    )
    assert_problem(too_long, 422, "at most 30 days")
    capped = client.post(
        "/api/v1/tokens", json={"name": "forever", "expires_in_days": None}, headers=auditor
    )
    assert capped.status_code == 201
    from datetime import datetime

    expires = datetime.fromisoformat(capped.json()["expires_at"])
    assert expires <= utcnow() + timedelta(days=30, minutes=1)
