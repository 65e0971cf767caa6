"""Clients cannot set a job's internal parameters, and each kind takes only its own."""

from __future__ import annotations

import pytest

from app.db.models import Job
from tests.api.conftest import assert_problem


@pytest.fixture
def policy_id(client, admin) -> int:
    body = {"name": "p", "method": "vmfs_snapshot", "consistency": "cold", "rpo_minutes": 60}
    return client.post("/api/v1/policies", headers=admin, json=body).json()["id"]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"gc_grace_s": 0}, "set by the service"),
        ({"scheduled_for": "2030-01-01T00:00:00+00:00"}, "set by the service"),
        ({"requested_by": "someone-else"}, "set by the service"),
        ({"resources": ["datastore:ds-1"]}, "set by the service"),
        ({"whatever": "x"}, "takes no params whatever"),
    ],
)
def test_internal_and_unknown_params_are_refused(app, client, headers_for, policy_id, params, says):
    from app.security.roles import Role

    operator = headers_for(Role.OPERATOR)
    body = {"kind": "backup", "policy_id": policy_id, "params": params}
    assert_problem(client.post("/api/v1/jobs", headers=operator, json=body), 422, says)
    with app.state.runtime.db.session() as session:
        assert session.query(Job).count() == 0


def test_an_operator_cannot_shorten_gcs_grace(client, headers_for):
    from app.security.roles import Role

    body = {"kind": "expire", "params": {"gc_grace_s": 0}}
    response = client.post("/api/v1/jobs", headers=headers_for(Role.OPERATOR), json=body)
    assert_problem(response, 422, "gc_grace_s")


def test_a_plain_backup_is_still_accepted(client, admin, policy_id):
    response = client.post(
        "/api/v1/jobs", headers=admin, json={"kind": "backup", "policy_id": policy_id}
    )
    assert response.status_code == 202, response.text
