"""Policies through the dashboard: the form covers the API's fields, the API validates."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app.db.models import (
    AuditEvent,
    Connection,
    ExchangeDatabase,
    ExchangeServer,
    Policy,
)
from app.domain.connections import ConnectionKind
from app.domain.protection import DatabaseLayout
from app.security.roles import Role
from tests.web.conftest import form_token


@pytest.fixture
def estate(app, client) -> dict[str, int]:
    with app.state.runtime.db.session() as session:
        repo = Connection(name="repo-san", kind=ConnectionKind.REPOSITORY)
        server = ExchangeServer(name="EXCH-MBX01")
        server.databases = [
            ExchangeDatabase(name="DB01", layout=DatabaseLayout.VMDK),
            ExchangeDatabase(name="DB02", layout=DatabaseLayout.RDM_PHYSICAL),
        ]
        session.add_all([repo, server])
        session.flush()
        return {
            "repo": repo.id,
            "server": server.id,
            "db01": server.databases[0].id,
            "db02": server.databases[1].id,
        }


def policy_form(token: str, **changes) -> dict:
    return {
        "csrf_token": token,
        "name": "nightly",
        "description": "",
        "enabled": "on",
        "method": "vm_image",
        "consistency": "crash",
        "schedule_mode": "cron",
        "schedule_cron": "0 2 * * *",
        "rpo_minutes": "",
        "pre_script": "",
        "post_script": "",
        "script_timeout_s": "20",
        "repository_id": "",
        "keep_on_primary": "0",
        "keep_last": "7",
        "keep_daily": "0",
        "keep_weekly": "0",
        "keep_monthly": "0",
        "keep_yearly": "0",
        "compliance_retention_days": "",
        **changes,
    }


def field_error(html: str, field: str) -> str:
    match = re.search(rf'id="err-{field}"[^>]*>([^<]*)<', html)
    return match.group(1) if match else ""


def create(client, **changes) -> int:
    token = form_token(client, "/policies/new")
    response = client.post(
        "/policies/new", data=policy_form(token, **changes), follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


def test_new_policy_form_lists_repositories_and_targets(admin_client, estate):
    page = admin_client.get("/policies/new")
    assert page.status_code == 200
    assert "repo-san" in page.text and "EXCH-MBX01" in page.text and "DB02" in page.text
    assert "Physical-mode RDM" in page.text
    assert 'name="schedule_mode" value="rpo"' in page.text


def test_create_with_every_field(app, admin_client, estate):
    pid = create(
        admin_client,
        name="Hourly RPO",
        schedule_mode="rpo",
        schedule_cron="0 2 * * *",  # ignored: the RPO was chosen
        rpo_minutes="60",
        repository_id=str(estate["repo"]),
        keep_on_primary="0",  # a VM image cannot keep snapshots (see below)
        keep_daily="14",
        keep_weekly="8",
        keep_monthly="12",
        keep_yearly="7",
        compliance_retention_days="2555",
        pre_script="quiesce.cmd",
        post_script="resume.cmd",
        script_timeout_s="45",
        targets=[str(estate["server"])],
    )
    with app.state.runtime.db.session() as session:
        policy = session.get(Policy, pid)
        assert (policy.schedule_cron, policy.rpo_minutes) == (None, 60)
        assert policy.repository_id == estate["repo"] and policy.keep_on_primary == 0
        assert (policy.keep_daily, policy.keep_weekly, policy.keep_monthly) == (14, 8, 12)
        assert policy.keep_yearly == 7 and policy.compliance_retention_days == 2555
        assert (policy.pre_script, policy.post_script, policy.script_timeout_s) == (
            "quiesce.cmd",
            "resume.cmd",
            45,
        )
        assert [(t.server_id, t.database_id) for t in policy.targets] == [(estate["server"], None)]
    detail = admin_client.get(f"/policies/{pid}")
    assert "RPO 60 min" in detail.text and "repo-san" in detail.text
    assert "2555 days" in detail.text and "quiesce.cmd" in detail.text


def test_database_targets(app, admin_client, estate):
    pid = create(
        admin_client,
        method="array_snapshot",
        consistency="hot_application",
        targets=[f"{estate['server']}:{estate['db02']}"],
    )
    with app.state.runtime.db.session() as session:
        targets = session.get(Policy, pid).targets
        assert [(t.server_id, t.database_id) for t in targets] == [
            (estate["server"], estate["db02"])
        ]


def test_invalid_cron_is_shown_next_to_the_field(admin_client, estate):
    token = form_token(admin_client, "/policies/new")
    response = admin_client.post(
        "/policies/new", data=policy_form(token, schedule_cron="every night", keep_last="-1")
    )
    assert response.status_code == 422
    assert "not a valid cron expression" in field_error(response.text, "schedule_cron")
    assert "greater than or equal to 0" in field_error(response.text, "keep_last")
    assert 'value="every night"' in response.text


def test_a_schedule_is_required(admin_client, estate):
    token = form_token(admin_client, "/policies/new")
    response = admin_client.post("/policies/new", data=policy_form(token, schedule_cron=""))
    assert response.status_code == 422
    assert "exactly one of schedule_cron or rpo_minutes" in field_error(response.text, "schedule")


def test_the_api_rules_are_applied(app, admin_client, estate):
    # An image backup lands in a repository: the API refuses one without.
    token = form_token(admin_client, "/policies/new")
    response = admin_client.post("/policies/new", data=policy_form(token, repository_id=""))
    assert response.status_code == 422
    assert "needs a repository" in field_error(response.text, "repository_id")
    # A target that does not exist.
    response = admin_client.post(
        "/policies/new",
        data=policy_form(token, repository_id=str(estate["repo"]), targets=["999"]),
    )
    assert response.status_code == 422
    assert "does not exist" in response.text
    response = admin_client.post(
        "/policies/new",
        data=policy_form(token, repository_id=str(estate["repo"]), targets=["x:y"]),
    )
    assert response.status_code == 422
    with app.state.runtime.db.session() as session:
        assert session.scalar(select(Policy.id)) is None


def test_duplicate_name_is_a_conflict(admin_client, estate):
    create(admin_client, repository_id=str(estate["repo"]))
    token = form_token(admin_client, "/policies/new")
    response = admin_client.post(
        "/policies/new", data=policy_form(token, repository_id=str(estate["repo"]))
    )
    assert response.status_code == 409 and "already exists" in response.text


def test_edit_sends_only_what_changed(app, admin_client, estate):
    pid = create(admin_client, repository_id=str(estate["repo"]))
    page = admin_client.get(f"/policies/{pid}/edit")
    assert 'value="nightly"' in page.text and 'value="0 2 * * *"' in page.text
    token = form_token(admin_client, f"/policies/{pid}/edit")
    response = admin_client.post(
        f"/policies/{pid}/edit",
        data=policy_form(
            token,
            repository_id=str(estate["repo"]),
            keep_daily="30",
            targets=[str(estate["server"])],
        ),
        follow_redirects=False,
    )
    assert response.status_code == 303
    with app.state.runtime.db.session() as session:
        policy = session.get(Policy, pid)
        assert policy.keep_daily == 30 and len(policy.targets) == 1
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "policy.update"))
    assert event.detail["fields"] == ["keep_daily", "targets"]


def test_switching_from_cron_to_rpo(app, admin_client, estate):
    pid = create(admin_client, repository_id=str(estate["repo"]))
    token = form_token(admin_client, f"/policies/{pid}/edit")
    admin_client.post(
        f"/policies/{pid}/edit",
        data=policy_form(
            token, repository_id=str(estate["repo"]), schedule_mode="rpo", rpo_minutes="30"
        ),
    )
    with app.state.runtime.db.session() as session:
        policy = session.get(Policy, pid)
        assert (policy.schedule_cron, policy.rpo_minutes) == (None, 30)


def test_a_refused_edit_changes_nothing(app, admin_client, estate):
    pid = create(admin_client, repository_id=str(estate["repo"]))
    token = form_token(admin_client, f"/policies/{pid}/edit")
    response = admin_client.post(
        f"/policies/{pid}/edit", data=policy_form(token, repository_id="", keep_daily="9")
    )
    assert response.status_code == 422 and "needs a repository" in response.text
    with app.state.runtime.db.session() as session:
        policy = session.get(Policy, pid)
        assert policy.repository_id == estate["repo"] and policy.keep_daily == 0


def test_toggle_with_htmx_returns_the_row(app, admin_client, estate):
    pid = create(admin_client, repository_id=str(estate["repo"]))
    token = form_token(admin_client, "/policies")
    response = admin_client.post(
        f"/policies/{pid}/toggle", headers={"HX-Request": "true", "X-CSRF-Token": token}
    )
    assert response.status_code == 200
    assert response.text.lstrip().startswith(f'<tr id="policy-{pid}">')
    assert "Disabled" in response.text and "<html" not in response.text
    with app.state.runtime.db.session() as session:
        assert session.get(Policy, pid).enabled is False
    response = admin_client.post(
        f"/policies/{pid}/toggle", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    assert admin_client.post(f"/policies/{pid}/toggle").status_code == 403  # no token


def test_delete_asks_then_deletes(app, admin_client, estate):
    pid = create(admin_client, repository_id=str(estate["repo"]))
    page = admin_client.get(f"/policies/{pid}/delete")
    assert "Delete policy “nightly”?" in page.text and "This cannot be undone." in page.text
    token = form_token(admin_client, f"/policies/{pid}/delete")
    response = admin_client.post(
        f"/policies/{pid}/delete", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    with app.state.runtime.db.session() as session:
        assert session.get(Policy, pid) is None


def test_operators_manage_policies(app, client_as, estate):
    operator = client_as(Role.OPERATOR)
    assert "New policy" in operator.get("/policies").text
    pid = create(operator, repository_id=str(estate["repo"]))
    with app.state.runtime.db.session() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "policy.create"))
    assert event.actor == "user-operator" and event.object_id == str(pid)


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.RESTORE_OPERATOR])
def test_readers_cannot_change_policies(app, admin_client, client_as, estate, role):
    pid = create(admin_client, repository_id=str(estate["repo"]))
    reader = client_as(role)
    listing = reader.get("/policies")
    assert "nightly" in listing.text
    assert "New policy" not in listing.text and "/toggle" not in listing.text
    assert reader.get("/policies/new").status_code == 403
    assert reader.get(f"/policies/{pid}/edit").status_code == 403
    token = form_token(reader, "/policies")
    for path in ("/policies/new", f"/policies/{pid}/toggle", f"/policies/{pid}/delete"):
        response = reader.post(path, data=policy_form(token, name="other"))
        assert response.status_code == 403, path
    with app.state.runtime.db.session() as session:
        assert session.scalars(select(Policy.name)).all() == ["nightly"]
        assert session.get(Policy, pid).enabled is True


def test_what_a_layout_cannot_give_is_listed(app, admin_client, estate):
    token = form_token(admin_client, "/policies/new")
    response = admin_client.post(
        "/policies/new",
        data=policy_form(
            token,
            method="array_snapshot",
            consistency="hot_application",
            restores_needed=["mailbox"],
            targets=[f"{estate['server']}:{estate['db02']}"],
        ),
    )
    assert response.status_code == 422
    assert '<ul class="problems">' in response.text and "EXCH-MBX01/DB02" in response.text
    # The choices are kept for the next try.
    assert 'value="mailbox" checked' in response.text
    assert f'value="{estate["server"]}:{estate["db02"]}" checked' in response.text
    with app.state.runtime.db.session() as session:
        assert session.scalar(select(Policy.id)) is None


def test_a_vm_image_policy_cannot_keep_snapshots_on_primary(app, admin_client, estate):
    token = form_token(admin_client, "/policies/new")
    response = admin_client.post(
        "/policies/new",
        data=policy_form(
            token,
            repository_id=str(estate["repo"]),
            keep_on_primary="3",
            targets=[str(estate["server"])],
        ),
    )
    assert response.status_code == 422
    assert "cannot keep snapshots on primary storage" in response.text
    assert "set keep_on_primary to 0" in response.text
    with app.state.runtime.db.session() as session:
        assert session.scalar(select(Policy.id)) is None


def test_a_warm_policy_without_scripts_is_refused(app, admin_client, estate):
    token = form_token(admin_client, "/policies/new")
    response = admin_client.post(
        "/policies/new",
        data=policy_form(
            token,
            method="vmfs_snapshot",
            consistency="warm",
            targets=[f"{estate['server']}:{estate['db01']}"],
        ),
    )
    assert response.status_code == 422
    assert "needs pre- and post-snapshot scripts" in response.text
    with app.state.runtime.db.session() as session:
        assert session.scalar(select(Policy.id)) is None
