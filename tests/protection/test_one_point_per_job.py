"""One backup job, one restore point: a worker killed (SIGKILL) after the catalog write, after
retention on primary storage, or just before its success is recorded leaves a finished
restore point; the takeover completes the job from there instead of backing up again (which
left two points for one job, and keep-N keeping fewer moments than configured)."""

from __future__ import annotations

import os
import signal

import pytest

from tests.protection.conftest import (
    backup_now,
    bulwark_snapshots,
    children,
    events,
    job,
    make_policy,
    restore_points,
    start_backup,
)
from tests.protection.test_backup_flow import target
from tests.protection.test_cleanup import leftovers, start_worker_process, wait_until

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("killed_after", ["catalog", "retention", "success"])
def test_a_takeover_completes_the_job_from_its_restore_point(
    killed_after, client, admin, estate, runtime, worker, make_worker, settings, vc
):
    policy = make_policy(
        client, admin, "keep 2", target(estate, "EXCH-MBX01", "DB01"), keep_on_primary=2
    )
    before = [backup_now(client, admin, runtime, worker, policy["id"])[0] for _ in "ab"]
    parent = start_backup(client, admin, policy["id"])
    assert make_worker("dispatcher").run_once() == parent
    (child,) = children(runtime, parent)

    proc = start_worker_process(settings, "doomed", TEST_DIE_AFTER=killed_after)
    try:
        assert proc.wait(timeout=60) == -signal.SIGKILL, proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        proc.stderr.close()
    assert job(client, admin, child)["state"] == "running"  # as the dead worker left it

    survivor = make_worker("survivor")
    wait_until(lambda: survivor.run_once() == child, what="the takeover")
    done = job(client, admin, child)
    assert done["state"] == "succeeded", done["error"]
    assert done["attempts"] == 2 and done["worker_name"] == "survivor"
    (point,) = [p for p in restore_points(client, admin) if p["job_id"] == child]
    assert done["result"]["details"]["restore_point_id"] == point["id"]
    assert (
        f"restore point {point['id']} was cataloged by an earlier attempt: completing the job "
        "from there"
    ) in events(done)
    assert leftovers(runtime, child) == []

    # One snapshot per job, and keep 2 kept exactly the newest two moments.
    points = restore_points(client, admin, policy_id=policy["id"])
    assert len(points) == 3
    names = [s.name for s in bulwark_snapshots(vc, estate.vm("EXCH-MBX01"))]
    assert names == [f"bulwark-job-{before[1]['id']}", f"bulwark-job-{child}"]
