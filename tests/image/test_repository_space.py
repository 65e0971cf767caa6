"""Room in the repository, against the lab: a backup the repository cannot hold does not
start (no snapshot, no quiesce), and every backup measures the repository's free space,
which alerts at a threshold."""

from __future__ import annotations

import json
import os

import pytest

from app.db.models import RepositoryUsage
from app.db.types import utcnow
from app.notifications import Notifier
from app.repository import open_repository_at
from tests.protection.conftest import (
    backup_now,
    bulwark_snapshots,
    children,
    job,
    make_policy,
    restore_points,
    run_jobs,
    start_backup,
)
from tests.repository.test_disk_full import small_disk
from tests.test_notifications import allow_loopback_webhooks, webhook  # noqa: F401

pytestmark = pytest.mark.lab


def test_a_backup_the_repository_cannot_hold_does_not_start(
    client, admin, estate, runtime, worker, vc, settings
):
    with small_disk("64m") as disk:
        path = disk / "lib"
        open_repository_at(path, key=settings.root_key(), create=True)
        body = {"name": "small-lib", "kind": "repository", "options": {"path": str(path)}}
        r = client.post("/api/v1/connections", json=body, headers=admin)
        assert r.status_code == 201, r.text
        policy = make_policy(
            client,
            admin,
            "image",
            [{"server_id": estate.server("EXCH-MBX03")["id"]}],
            method="vm_image",
            consistency="hot_application",
            repository_id=r.json()["id"],
            keep_on_primary=0,
        )
        (first,) = backup_now(client, admin, runtime, worker, policy["id"])
        assert first["state"] == "succeeded", first["error"]
        (point,) = restore_points(client, admin)
        stored = sum(d["stats"]["stored_bytes"] for d in point["details"]["disks"])
        assert stored > 0
        # Something else fills the disk: less room than the last backup stored is left.
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        with open(disk / "filler", "wb") as fh:
            fh.write(bytes(max(0, free - stored // 2)))
        parent = start_backup(client, admin, policy["id"])
        run_jobs(worker)
        (child,) = (job(client, admin, j) for j in children(runtime, parent))
    assert child["state"] == "failed"
    assert f"repository 'small-lib' at {path} is full: " in child["error"]
    assert "so it was not started" in child["error"]
    assert not any(e["step"] == "snapshot" for e in child["events"])
    assert bulwark_snapshots(vc, estate.vm("EXCH-MBX03")) == []


def test_every_backup_measures_the_repository_and_alerts_when_full(
    client,
    admin,
    estate,
    runtime,
    worker,
    repository,
    settings,
    webhook,  # noqa: F811
):
    url, hooks = webhook
    allow_loopback_webhooks(client, admin)
    policy = make_policy(
        client,
        admin,
        "image",
        [{"server_id": estate.server("EXCH-MBX03")["id"]}],
        method="vm_image",
        consistency="hot_application",
        repository_id=repository["id"],
        keep_on_primary=0,
        notify_webhook_url=url,
    )
    (done,) = backup_now(client, admin, runtime, worker, policy["id"])
    assert done["state"] == "succeeded", done["error"]
    assert any("% full" in e["message"] and "GiB free" in e["message"] for e in done["events"])
    with runtime.db.session() as session:
        usage = session.get(RepositoryUsage, repository["id"])
        assert usage.capacity_bytes > 0 and 0 <= usage.free_bytes <= usage.capacity_bytes
    # The machine's disk is surely fuller than 1 %: the alert fires, once.
    notifier = Notifier(settings.model_copy(update={"repository_full_percent": 1}), runtime.secrets)
    with runtime.db.session() as session:
        assert notifier.sweep(session, utcnow()) == 1
        assert notifier.sweep(session, utcnow()) == 0
    (body,) = [json.loads(b) for _, b in hooks]
    assert body["event"] == "repository.full" and "disk-library" in body["text"]
    assert str(repository["path"]) in body["text"]
    # At the default threshold (90 %) nothing is owed on an ordinary test machine's disk
    # unless it really is that full.
