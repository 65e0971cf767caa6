"""Backups that go wrong leave nothing behind: no Bulwark snapshot without a restore point, no
database left quiesced, no VM left off. Failures are injected at every step, a vCenter session
is killed mid-backup, and a worker process is killed with SIGKILL in the middle of a job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

import app.protection.catalog.retention as retention_module
import app.protection.handlers.backup as backup_module
from app.adapters import vsphere
from app.db.models import Job, RestorePoint
from app.domain.protection import ProtectionMethod
from app.strategies.vm_snapshot import VmSnapshot
from tests.lab_fixture import ROOT
from tests.protection.conftest import (
    bulwark_snapshots,
    children,
    events,
    guest_log,
    job,
    make_policy,
    restore_points,
    run_jobs,
    start_backup,
    utc,
    wait_for_guest_log,
)
from tests.protection.test_backup_flow import QUIESCE, RESUME, target

pytestmark = pytest.mark.lab


class InjectedFailure(Exception):
    """What the test's strategy raises at the chosen step."""


def failing_strategy(step: str, attempts: set[int] | None = None):
    """VmSnapshot that fails right after ``step`` did its work (on the given attempts)."""

    class Failing(VmSnapshot):
        def _maybe_fail(self, run) -> None:
            if attempts is None or run.ctx.attempt in attempts:
                raise InjectedFailure(f"injected failure after {step}")

        def quiesce(self, run):
            super().quiesce(run)
            if step == "quiesce":
                self._maybe_fail(run)

        def snapshot(self, run):
            super().snapshot(run)
            if step == "snapshot":
                self._maybe_fail(run)

        def resume(self, run):
            super().resume(run)
            if step == "resume":
                self._maybe_fail(run)

        def copy(self, run):
            super().copy(run)
            if step == "copy":
                self._maybe_fail(run)

    return Failing


def no_orphans(vc, runtime, vm: str) -> list[str]:
    """Every Bulwark snapshot of ``vm`` belongs to an available restore point."""
    with runtime.db.session() as session:
        points = session.scalars(select(RestorePoint)).all()
        referenced = {c.reference for p in points for c in p.copies if c.removed_at is None}
    names = []
    for snap in bulwark_snapshots(vc, vm):
        assert snap.moref in referenced, f"orphan snapshot {snap.name} ({snap.moref})"
        names.append(snap.name)
    return names


def balanced(lab, vm: str) -> list[dict]:
    """Every quiesce in the guest was followed by a resume; the last script was a resume."""
    lines = guest_log(lab, vm)
    depth = 0
    for line in lines:
        if "quiesce-db" in line["arguments"]:
            depth += 1
        elif "resume-db" in line["arguments"]:
            depth = 0
    assert depth == 0, [line["arguments"] for line in lines]
    return lines


def leftovers(runtime, job_id: int) -> list:
    with runtime.db.session() as session:
        return list(session.get(Job, job_id).leftovers or [])


def scripted_policy(client, admin, estate, name: str = "DB03 scripted", **over) -> dict:
    fields = {
        "consistency": "hot_crash_scripted",
        "pre_script": QUIESCE,
        "post_script": RESUME,
        **over,
    }
    return make_policy(client, admin, name, target(estate, "EXCH-MBX03", "DB03"), **fields)


STEPS = ["quiesce", "snapshot", "resume", "copy"]


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_any_step_cleans_up(
    step, client, admin, estate, runtime, worker, vc, monkeypatch
):
    monkeypatch.setitem(
        backup_module.STRATEGIES, ProtectionMethod.VMFS_SNAPSHOT, failing_strategy(step)
    )
    policy = scripted_policy(client, admin, estate)
    parent = start_backup(client, admin, policy["id"])
    run_jobs(worker)
    (child,) = children(runtime, parent)
    done = job(client, admin, child)
    assert done["state"] == "failed"
    assert f"injected failure after {step}" in done["error"]
    assert done["attempts"] == 3

    vm = estate.vm("EXCH-MBX03")
    assert bulwark_snapshots(vc, vm) == []
    assert restore_points(client, admin) == []
    assert leftovers(runtime, child) == []
    lines = balanced(estate.lab, vm)
    assert sum("quiesce-db" in x["arguments"] for x in lines) == 3  # once per attempt
    if step in ("snapshot", "resume", "copy"):
        assert "removed snapshot bulwark-job-" in " ".join(events(done))


def test_a_failure_while_cataloging_removes_the_snapshot(
    client, admin, estate, runtime, worker, vc, monkeypatch
):
    real = backup_module._catalog
    calls = []

    def flaky_catalog(ctx, run, method, **kwargs):
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise InjectedFailure("the catalog write failed")
        return real(ctx, run, method, **kwargs)

    monkeypatch.setattr(backup_module, "_catalog", flaky_catalog)
    policy = scripted_policy(client, admin, estate)
    parent = start_backup(client, admin, policy["id"])
    run_jobs(worker)
    (child,) = children(runtime, parent)
    done = job(client, admin, child)
    assert done["state"] == "succeeded" and done["attempts"] == 2
    assert calls == [1, 2]
    vm = estate.vm("EXCH-MBX03")
    assert no_orphans(vc, runtime, vm) == [f"bulwark-job-{child}"]
    assert len(restore_points(client, admin)) == 1
    assert "removed snapshot bulwark-job-" in " ".join(events(done))
    balanced(estate.lab, vm)


def test_a_failure_of_retention_keeps_the_new_restore_point(
    client, admin, estate, runtime, worker, vc, monkeypatch
):
    def broken(*args, **kwargs):
        raise vsphere.VSphereError("vCenter went away during retention")

    monkeypatch.setattr(retention_module, "retain_on_primary", broken)
    policy = scripted_policy(client, admin, estate)
    parent = start_backup(client, admin, policy["id"])
    run_jobs(worker)
    (child,) = children(runtime, parent)
    done = job(client, admin, child)
    # The backup itself worked: no second snapshot from a retry, a warning instead.
    assert done["state"] == "partially_succeeded" and done["attempts"] == 1
    assert any("retention on primary storage did not finish" in m for m in events(done))
    vm = estate.vm("EXCH-MBX03")
    assert no_orphans(vc, runtime, vm) == [f"bulwark-job-{child}"]


def test_a_cold_backup_that_fails_powers_the_vm_on_again(
    client, admin, estate, runtime, worker, vc, monkeypatch
):
    monkeypatch.setitem(
        backup_module.STRATEGIES, ProtectionMethod.VMFS_SNAPSHOT, failing_strategy("snapshot")
    )
    policy = make_policy(
        client, admin, "DB01 cold", target(estate, "EXCH-MBX01", "DB01"), consistency="cold"
    )
    parent = start_backup(client, admin, policy["id"])
    run_jobs(worker)
    (child,) = children(runtime, parent)
    assert job(client, admin, child)["state"] == "failed"
    vm = estate.vm("EXCH-MBX01")
    assert vsphere.power_state(vc, vm) == "poweredOn"
    assert bulwark_snapshots(vc, vm) == []


def test_a_vcenter_session_killed_mid_backup(
    client, admin, estate, runtime, worker, vc, monkeypatch
):
    """vCenter ends the job's session right after the snapshot (an administrator, a restart):
    resume cannot run in that session; cleanup logs in again, resumes and removes the
    snapshot; the retry succeeds."""

    class SessionKilled(VmSnapshot):
        def snapshot(self, run):
            super().snapshot(run)
            if run.ctx.attempt == 1:
                job_session = self._client_for(run.target.connection_id)
                key = job_session.content.sessionManager.currentSession.key
                vc.content.sessionManager.TerminateSession(sessionId=[key])

    monkeypatch.setitem(backup_module.STRATEGIES, ProtectionMethod.VMFS_SNAPSHOT, SessionKilled)
    policy = scripted_policy(client, admin, estate)
    parent = start_backup(client, admin, policy["id"])
    run_jobs(worker)
    (child,) = children(runtime, parent)
    done = job(client, admin, child)
    assert done["state"] == "succeeded" and done["attempts"] == 2
    text = " ".join(events(done))
    assert "session may have ended" in text or "session has ended" in text
    assert "ran the post-snapshot script an interrupted run owed" in text
    assert "removed snapshot bulwark-job-" in text
    vm = estate.vm("EXCH-MBX03")
    assert no_orphans(vc, runtime, vm) == [f"bulwark-job-{child}"]
    balanced(estate.lab, vm)


def test_wrong_guest_credentials_fail_before_anything_is_quiesced(
    client, admin, estate, runtime, worker, vc
):
    r = client.patch(
        f"/api/v1/connections/{estate.connection_id}",
        headers=admin,
        json={"guest_password": "not-the-guest-password"},
    )
    assert r.status_code == 200, r.text
    policy = scripted_policy(client, admin, estate)
    parent = start_backup(client, admin, policy["id"])
    run_jobs(worker)
    (child,) = children(runtime, parent)
    done = job(client, admin, child)
    assert done["state"] == "failed"
    assert "the guest rejected the user name or password" in done["error"]
    assert "not-the-guest-password" not in str(done)
    assert bulwark_snapshots(vc, estate.vm("EXCH-MBX03")) == []
    assert guest_log(estate.lab) == []  # the guest never ran anything


# -- a worker killed with SIGKILL ----------------------------------------------------------


def start_worker_process(settings, name: str, **extra_env: str) -> subprocess.Popen:
    env = {
        **os.environ,
        **extra_env,
        "BULWARK_DATABASE_URL": settings.database_url,
        "BULWARK_SECRET_KEY": settings.secret_key.get_secret_value(),
        "BULWARK_DATA_DIR": str(settings.data_dir),
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.protection.lab_worker", name],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.05)


def row(runtime, job_id: int) -> Job:
    with runtime.db.session() as session:
        found = session.get(Job, job_id)
        session.expunge(found)
        return found


@pytest.mark.parametrize(
    ("killed_in", "pre", "post"),
    [
        ("quiesce", "quiesce-db.cmd DB03 & sleep 5", RESUME),
        ("resume", QUIESCE, "resume-db.cmd DB03 & sleep 5"),
    ],
    ids=["while-quiesced", "after-the-snapshot"],
)
def test_a_worker_killed_mid_job_is_taken_over_and_cleaned_up(
    killed_in, pre, post, client, admin, estate, runtime, make_worker, settings, vc
):
    policy = scripted_policy(client, admin, estate, pre_script=pre, post_script=post)
    parent = start_backup(client, admin, policy["id"])
    dispatcher = make_worker("dispatcher")
    assert dispatcher.run_once() == parent  # queues the per-target job
    (child,) = children(runtime, parent)
    vm = estate.vm("EXCH-MBX03")

    proc = start_worker_process(settings, "doomed")
    try:
        kinds = {"quiesce": {"quiesced"}, "resume": {"quiesced", "vm_snapshot"}}[killed_in]

        def in_the_middle():
            current = row(runtime, child)
            return (
                current.worker_name == "doomed"
                and current.current_step == killed_in
                and {x["kind"] for x in current.leftovers or []} == kinds
            )

        wait_until(in_the_middle, what=f"the worker reaching {killed_in}")
        time.sleep(0.3)  # the script is running in the guest now
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()

    if killed_in == "resume":
        (orphan,) = bulwark_snapshots(vc, vm)  # what the dead worker left
        assert orphan.name == f"bulwark-job-{child}"

    # Another worker takes the job over once the dead one's lease has run out.
    survivor = make_worker("survivor")
    wait_until(lambda: survivor.run_once() == child, what="the takeover")
    done = job(client, admin, child)
    assert done["state"] == "succeeded", done["error"]
    assert done["worker_name"] == "survivor" and done["attempts"] == 2
    text = " ".join(events(done))
    assert "taken over from worker doomed by survivor" in text
    assert "ran the post-snapshot script an interrupted run owed" in text
    if killed_in == "resume":
        assert "removed snapshot bulwark-job-" in text
    assert leftovers(runtime, child) == []

    # One snapshot, the retry's, and it is a restore point; the dead worker's is gone.
    assert no_orphans(vc, runtime, vm) == [f"bulwark-job-{child}"]
    (point,) = restore_points(client, admin)
    assert point["job_id"] == child
    # The guest: the killed attempt's scripts still finish there; the owed resume ran after
    # the dead worker's quiesce, and the retry quiesced and resumed again.
    lines = wait_for_guest_log(estate.lab, vm, 4)
    assert sum("quiesce-db" in x["arguments"] for x in lines) == 2
    assert sum("resume-db" in x["arguments"] for x in lines) >= 2
    balanced(estate.lab, vm)
    if killed_in == "quiesce":
        # The owed resume waited for the dead worker's quiesce to end in the guest.
        by_start = sorted(lines, key=lambda x: utc(x["started"]))
        first_quiesce = by_start[0]
        owed_resume = next(x for x in by_start if "resume-db" in x["arguments"])
        assert "quiesce-db" in first_quiesce["arguments"]
        assert utc(owed_resume["started"]) >= utc(first_quiesce["ended"])
        assert "the interrupted pre-snapshot script" in text
