"""The overview: each server's newest restore point against its policies' objectives, and the
jobs of the last 24 hours."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from app.db.models import ExchangeServer, Job, Policy, PolicyTarget, RestorePoint
from app.db.types import utcnow
from app.domain.jobs import JobKind, JobState
from app.domain.protection import Consistency, ProtectionMethod, RestorePointStatus
from app.domain.rpo import schedule_interval_s
from app.web.queries import rpo_status


def _server_with_policy(
    session,
    name: str,
    *,
    rpo: int | None = 60,
    cron: str | None = None,
    ages_min: tuple[float, ...] = (),
    policy_age_min: float = 10_000,
    enabled: bool = True,
    expired: bool = False,
) -> None:
    now = utcnow()
    server = ExchangeServer(name=name)
    session.add(server)
    session.flush()
    policy = Policy(
        name=f"p-{name}",
        method=ProtectionMethod.VMFS_SNAPSHOT,
        consistency=Consistency.COLD,
        rpo_minutes=rpo,
        schedule_cron=cron,
        enabled=enabled,
        created_at=now - timedelta(minutes=policy_age_min),
    )
    policy.targets = [PolicyTarget(server_id=server.id)]
    session.add(policy)
    session.flush()
    for age in ages_min:
        session.add(
            RestorePoint(
                server_id=server.id,
                policy_id=policy.id,
                captured_at=now - timedelta(minutes=age),
                method=ProtectionMethod.VMFS_SNAPSHOT,
                consistency=Consistency.COLD,
                status=RestorePointStatus.EXPIRED if expired else RestorePointStatus.AVAILABLE,
            )
        )


def _row(html: str, name: str) -> str:
    match = re.search(rf'<tr class="rpo-(\w+)">\s*<td[^>]*><a[^>]*>{name}</a>.*?</tr>', html, re.S)
    assert match, name
    return match.group(0)


def test_rpo_per_server_is_colour_coded(app, admin_client):
    with app.state.runtime.db.session() as session:
        _server_with_policy(session, "MBX-OK", ages_min=(10, 200))
        _server_with_policy(session, "MBX-NEAR", ages_min=(55,))
        _server_with_policy(session, "MBX-LATE", ages_min=(180,))
        _server_with_policy(session, "MBX-EXPIRED", ages_min=(5,), expired=True)
        _server_with_policy(session, "MBX-NEW", ages_min=(), policy_age_min=5)
        _server_with_policy(session, "MBX-HOURLY", rpo=None, cron="0 * * * *", ages_min=(20,))
        _server_with_policy(session, "MBX-OFF", ages_min=(600,), enabled=False)
        session.add(ExchangeServer(name="MBX-NONE"))
    html = admin_client.get("/").text
    assert "Recovery point objectives" in html
    expected = {
        "MBX-OK": "ok",
        "MBX-NEAR": "warning",
        "MBX-LATE": "breached",
        "MBX-EXPIRED": "breached",  # only available restore points count
        "MBX-NEW": "pending",
        "MBX-HOURLY": "ok",
        "MBX-OFF": "unprotected",  # a disabled policy protects nothing
        "MBX-NONE": "unprotected",
    }
    for name, status in expected.items():
        row = _row(html, name)
        assert f'class="rpo-{status}"' in row, (name, row)
    assert "10 min old" in _row(html, "MBX-OK")
    assert "objective 1 h" in _row(html, "MBX-OK")
    assert "objective 1 h (its schedule)" in _row(html, "MBX-HOURLY")
    assert "3 h old" in _row(html, "MBX-LATE") and "Objective breached" in _row(html, "MBX-LATE")
    assert "Near the objective" in _row(html, "MBX-NEAR")
    assert "No policy covers it." in _row(html, "MBX-NONE")
    assert "disabled" in _row(html, "MBX-OFF")
    # Worst first.
    order = re.findall(r'<tr class="rpo-(\w+)">', html)
    assert order[:2] == ["breached", "breached"] and order[-1] == "ok"


def test_overview_lists_the_jobs_of_the_last_day(app, admin_client):
    now = utcnow()
    with app.state.runtime.db.session() as session:
        old = Job(
            kind=JobKind.VERIFY, state=JobState.SUCCEEDED, created_at=now - timedelta(hours=30)
        )
        new = Job(kind=JobKind.BACKUP, state=JobState.FAILED, created_at=now - timedelta(hours=2))
        session.add_all([old, new])
        session.flush()
        old_id, new_id = old.id, new.id
    html = admin_client.get("/").text
    assert "Jobs in the last 24 hours" in html
    assert f'href="/jobs/{new_id}"' in html and f'href="/jobs/{old_id}"' not in html
    partial = admin_client.get("/partials/recent-jobs", headers={"HX-Request": "true"}).text
    assert f'href="/jobs/{new_id}"' in partial and f'href="/jobs/{old_id}"' not in partial


NOW = datetime(2024, 3, 6, 12, 0, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("expr", "seconds"),
    [
        ("0 2 * * *", 86400),
        ("*/15 * * * *", 900),
        ("0 2 * * 1-5", 3 * 86400),  # Friday night to Monday night
        ("not cron", None),
        (None, None),
    ],
)
def test_a_cron_schedule_implies_its_longest_gap(expr, seconds):
    assert schedule_interval_s(expr, NOW) == seconds


@pytest.mark.parametrize(
    ("age", "objective", "status"),
    [
        (100, 3600, "ok"),
        (2880, 3600, "warning"),
        (3600, 3600, "warning"),
        (3601, 3600, "breached"),
        (None, 3600, "pending"),
        (100, None, "pending"),
    ],
)
def test_rpo_status(age, objective, status):
    assert rpo_status(age, objective) == status


def test_overview_charts_rpo_compliance_per_day(app, admin_client):
    # Hourly restore points for three days, against a 60-minute objective: compliant days.
    with app.state.runtime.db.session() as session:
        _server_with_policy(
            session,
            "MBX-STEADY",
            ages_min=tuple(range(0, 3 * 24 * 60, 55)),
            policy_age_min=4290,  # created with its first restore point
        )
    html = admin_client.get("/").text
    bars = re.findall(r'<rect class="bar (bar-\w+)"[^>]*><title>([^<]*)</title>', html)
    assert bars, html
    # Days before the policy existed are not drawn at all (the chart starts at installation);
    # the steady days are fully within objective.
    assert len(bars) in (3, 4) and all(kind == "bar-ok" for kind, _ in bars)
    assert f"RPO compliance, last {len(bars)} days" in html
    assert "100.0 % within objective" in bars[0][1]
    assert 'class="bar-none"' not in html.split('<ul class="legend">')[0]
    assert "100 %</text>" in html and "nothing was due" in html  # the axis and the legend


def test_before_the_first_sample_the_chart_says_when_it_comes(app, admin_client):
    with app.state.runtime.db.session() as session:
        _server_with_policy(session, "MBX-NEW", policy_age_min=5)
    html = admin_client.get("/").text
    assert "No samples yet." in html and "the first sample is taken at" in html
    assert '<svg class="rpo-chart"' not in html


def test_overview_counts_protected_and_unprotected_servers_and_caps_the_jobs(app, admin_client):
    with app.state.runtime.db.session() as session:
        _server_with_policy(session, "MBX-OK", ages_min=(5,))
        _server_with_policy(session, "MBX-OLD", ages_min=(500,))
        session.add(ExchangeServer(name="MBX-BARE"))
        for _ in range(30):
            session.add(Job(kind=JobKind.VERIFY, state=JobState.SUCCEEDED, created_by="t"))
    html = admin_client.get("/").text
    counts = html.split('class="breakdown protection-counts"')[1].split("</ul>")[0]
    assert 'Protected <span class="n">2</span>' in counts  # breached is protected, but late
    assert 'Unprotected <span class="n">1</span>' in counts
    assert "The 25 newest of 30 jobs in the last 24 hours." in html
