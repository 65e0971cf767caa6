"""A schedule that never runs is refused, and one broken policy never silences the others."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select

from app.db.models import AuditEvent, Job, Policy, ServiceSetting
from app.db.types import utcnow
from app.domain.jobs import JobKind, JobState
from app.domain.protection import Consistency, ProtectionMethod
from app.domain.schedules import schedule_problem
from app.jobs.scheduler import Scheduler
from app.notifications import Notifier
from tests.api.conftest import assert_problem

POLICY = {"name": "p", "method": "vmfs_snapshot", "consistency": "cold"}


def test_impossible_dates_are_not_schedules():
    assert schedule_problem("0 0 30 2 *") and "never runs" in schedule_problem("0 0 30 2 *")
    assert schedule_problem("0 0 31 4 *")
    assert schedule_problem("not cron")
    assert schedule_problem("0 0 29 2 *") is None  # a leap day comes within the horizon
    assert schedule_problem("0 2 * * *") is None


def test_the_api_refuses_a_schedule_with_no_run(client, admin):
    response = client.post(
        "/api/v1/policies", json={**POLICY, "schedule_cron": "0 0 30 2 *"}, headers=admin
    )
    assert_problem(response, 422, "never runs")
    ok = client.post(
        "/api/v1/policies", json={**POLICY, "schedule_cron": "0 0 29 2 *"}, headers=admin
    )
    assert ok.status_code == 201, ok.text
    patched = client.patch(
        f"/api/v1/policies/{ok.json()['id']}", json={"schedule_cron": "0 0 30 2 *"}, headers=admin
    )
    assert_problem(patched, 422, "never runs")


def test_a_stored_impossible_schedule_is_reported_and_the_others_still_notified(
    app, settings, webhook
):
    url, hooks = webhook
    runtime = app.state.runtime
    now = utcnow()
    with runtime.db.session() as session:
        # The receiver is on loopback, which an admin must allow for webhooks.
        session.add(ServiceSetting(key="webhook_allowed_networks", value=["127.0.0.0/8"]))
        # As saved before validation refused it.
        broken = Policy(
            name="broken",
            method=ProtectionMethod.VMFS_SNAPSHOT,
            consistency=Consistency.COLD,
            schedule_cron="0 0 30 2 *",
            notify_webhook_url=url,
            created_at=now - timedelta(hours=1),
        )
        healthy = Policy(
            name="healthy",
            method=ProtectionMethod.VMFS_SNAPSHOT,
            consistency=Consistency.COLD,
            rpo_minutes=60,
            notify_webhook_url=url,
            created_at=now - timedelta(hours=1),
        )
        session.add_all([broken, healthy])
        session.flush()
        session.add(
            Job(
                kind=JobKind.BACKUP,
                policy_id=healthy.id,
                state=JobState.FAILED,
                error="snapshot failed",
                attempts=1,
                finished_at=now,
            )
        )
    scheduler = Scheduler(
        runtime.db, job_template=lambda s, p, t: {}, notifier=Notifier(settings, runtime.secrets)
    )
    scheduler.tick(now)
    events = sorted((json.loads(b)["event"], json.loads(b)["policy"]) for _, b in hooks)
    assert ("job.failed", "healthy") in events
    assert ("policy.failed", "broken") in events
    with runtime.db.session() as session:
        failures = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "policy.failure")
        ).all()
        assert len(failures) == 1 and "never runs" in failures[0].detail["error"]

    # Reported once, not on every tick.
    scheduler.tick(now + timedelta(seconds=30))
    assert sum(1 for _, b in hooks if json.loads(b)["event"] == "policy.failed") == 1
