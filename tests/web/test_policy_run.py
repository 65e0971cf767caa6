"""A policy run is one job to watch: its state and progress add up its per-server jobs."""

from __future__ import annotations

import pytest

from app.db.models import ExchangeServer, Job
from app.domain.jobs import JobKind, JobState, run_state

S, F, R, Q, C, P = (
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.RUNNING,
    JobState.QUEUED,
    JobState.CANCELLED,
    JobState.PARTIALLY_SUCCEEDED,
)


@pytest.mark.parametrize(
    "parent, children, expected",
    [
        (R, [], R),
        (S, [], S),
        (S, [S, R], R),
        (S, [Q], R),
        (S, [S, S], S),
        (S, [S, F], P),
        (S, [F, F], F),
        (S, [C, C], C),
        (S, [S, C], P),
        (F, [S], P),
    ],
)
def test_a_run_succeeds_only_when_everything_under_it_did(parent, children, expected):
    assert run_state(parent, children) == expected


def _run(app, child_states: list[JobState], tag: str, progress: float = 40.0) -> int:
    with app.state.runtime.db.session() as s:
        servers = [ExchangeServer(name=f"EXCH-{tag}{i}") for i in range(len(child_states))]
        s.add_all(servers)
        s.flush()
        parent = Job(kind=JobKind.BACKUP, state=JobState.SUCCEEDED, attempts=1, created_by="t")
        s.add(parent)
        s.flush()
        for server, state in zip(servers, child_states, strict=True):
            s.add(
                Job(
                    kind=JobKind.BACKUP,
                    state=state,
                    parent_id=parent.id,
                    server_id=server.id,
                    progress_percent=progress if state == JobState.RUNNING else 0.0,
                    bytes_done=1 << 30,
                    created_by="t",
                )
            )
        return parent.id


def test_the_run_page_shows_the_state_of_all_its_jobs(app, admin_client, admin):
    running = _run(app, [JobState.SUCCEEDED, JobState.RUNNING], "R")
    page = admin_client.get(f"/jobs/{running}").text
    state = page.split('class="run-state"')[1].split("</dd>")[0]
    assert "Running" in state and "1 of 2 server jobs done" in state
    assert "70 %" in page.split('class="run-progress"')[1].split("</dd>")[0]  # (100 + 40) / 2
    assert "2.0 GiB" in page
    assert admin_client.get(f"/api/v1/jobs/{running}", headers=admin).json()["run_state"] == (
        "running"
    )

    mixed = _run(app, [JobState.SUCCEEDED, JobState.FAILED], "M")
    state = admin_client.get(f"/jobs/{mixed}").text.split('class="run-state"')[1].split("</dd>")[0]
    assert "Partly succeeded" in state and "2 of 2" in state


def test_a_policy_page_charts_the_duration_and_throughput_of_its_jobs(app, admin_client):
    from datetime import timedelta

    from app.db.models import Policy
    from app.db.types import utcnow
    from app.domain.protection import Consistency, ProtectionMethod

    now = utcnow()
    with app.state.runtime.db.session() as s:
        policy = Policy(
            name="nightly-image",
            method=ProtectionMethod.VM_IMAGE,
            consistency=Consistency.CRASH,
            rpo_minutes=60,
        )
        s.add(policy)
        s.flush()
        parent = Job(kind=JobKind.BACKUP, policy_id=policy.id, created_by="t")
        s.add(parent)
        s.flush()
        for i, (seconds, state) in enumerate(((100, JobState.SUCCEEDED), (50, JobState.FAILED))):
            s.add(
                Job(
                    kind=JobKind.BACKUP,
                    state=state,
                    policy_id=policy.id,
                    parent_id=parent.id,
                    bytes_done=(100 << 20) * seconds,  # 100 MiB/s
                    started_at=now - timedelta(hours=2 - i, seconds=seconds),
                    finished_at=now - timedelta(hours=2 - i),
                    created_by="t",
                )
            )
        policy_id = policy.id
    page = admin_client.get(f"/policies/{policy_id}").text
    chart = page.split('class="history-chart"')[1].split("</svg>")[0]
    assert chart.count('<rect class="bar bar-ok"') == 1 and chart.count("bar-bad") == 1
    assert "100.0 s · 100.0 MiB/s · succeeded" in chart
    assert "tallest: 100.0 s" in page and "fastest: 100.0 MiB/s" in page
