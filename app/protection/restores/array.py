"""Restores of array-snapshot restore points (a database on physical-mode RDM LUNs).

Three ways back, each saying what it needs:

- ``revert`` — instant recovery: the database and log volumes are reverted to the array
  snapshot, in seconds whatever their size. Everything written since is discarded, so the
  operator confirms by typing the server's name; the VM is shut down first (Exchange must not
  have the LUNs open) and powered on again afterwards if it was running.
- ``clone`` — the snapshot is cloned into new volumes (NAA ids of their own) to present to a
  host for inspection or a recovery database; nothing existing changes.
- ``volume`` — full restore from the repository: the off-host copy is written back onto new
  volumes on the array (``target=new``, the default) or over the original ones
  (``target=original``: confirmation and the VM shut down, as for a revert).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from app.adapters import arrays, vsphere
from app.db.models import Connection, ExchangeServer, RestorePoint
from app.domain.protection import CopyLocation, ProtectionMethod, RestorePointStatus, RestoreRefused
from app.jobs.context import JobContext, JobResult, PermanentError
from app.protection.bindings.arrays import open_driver, store_volumes
from app.protection.bindings.vcenter import for_job
from app.protection.restores.registry import RestoreMode, audit, register
from app.repository.connection import open_job_repository

MODES = ("revert", "clone", "volume")
TARGETS = ("new", "original")
CAPABILITY = "array"
SHUTDOWN_TIMEOUT_S = 600


def is_array_point(point: RestorePoint) -> bool:
    return point.method == ProtectionMethod.ARRAY_SNAPSHOT


def _live(point: RestorePoint, location: CopyLocation):
    return point.live_copy(location)


def destroys_data(params: dict[str, Any]) -> bool:
    mode = params.get("mode", "revert")
    return mode == "revert" or (mode == "volume" and params.get("target") == "original")


def confirm(point: RestorePoint, server_name: str, params: dict[str, Any]) -> None:
    """Refuse what this restore point cannot do, and a destructive restore unconfirmed."""
    mode = params.get("mode", "revert")
    if mode not in MODES:
        raise RestoreRefused(
            f"restore mode '{mode}' does not apply to an array snapshot; use one of "
            + ", ".join(MODES)
        )
    if mode in ("revert", "clone") and _live(point, CopyLocation.ARRAY_SNAPSHOT) is None:
        raise RestoreRefused(
            f"restore point {point.id} has no array snapshot left; restore it from the "
            "repository (mode 'volume')"
        )
    if mode == "volume":
        if params.get("target", "new") not in TARGETS:
            raise RestoreRefused("target must be 'new' or 'original'")
        if _live(point, CopyLocation.REPOSITORY) is None:
            raise RestoreRefused(f"restore point {point.id} has no copy in a repository")
    if destroys_data(params) and params.get("confirm") != server_name:
        when = f"{point.captured_at:%Y-%m-%d %H:%M} UTC"
        raise RestoreRefused(
            f"this overwrites the database and log LUNs of {server_name} with their state at "
            f"{when} and shuts the server down meanwhile; confirm by setting params.confirm "
            "to the server's name"
        )


@dataclass(frozen=True)
class _Point:
    id: int
    server: str
    vcenter_id: int | None
    vm: str | None
    array_id: int
    snapshot: str | None
    volumes: dict[str, str]  # role -> NAA id
    manifests: dict[str, str]  # NAA id -> manifest id
    repository_id: int | None


def _load(ctx: JobContext) -> _Point:
    with ctx.db.session() as session:
        point = session.get(RestorePoint, ctx.params.get("restore_point_id"))
        if point is None or point.status != RestorePointStatus.AVAILABLE:
            raise PermanentError("the restore point is gone or expired")
        server = session.get(ExchangeServer, point.server_id) if point.server_id else None
        try:
            confirm(point, server.name if server else "", ctx.params)
        except RestoreRefused as exc:
            raise PermanentError(str(exc)) from exc
        snap = _live(point, CopyLocation.ARRAY_SNAPSHOT)
        image = _live(point, CopyLocation.REPOSITORY)
        details = point.details or {}
        return _Point(
            point.id,
            server.name if server else "the server",
            server.connection_id if server else None,
            server.vm_moref if server else None,
            int(details.get("array_connection_id") or (snap.connection_id if snap else 0)),
            snap.reference if snap else None,
            dict(details.get("volumes", {})),
            dict(details.get("manifests", {})),
            image.connection_id if image else None,
        )


def _driver(ctx: JobContext, connection_id: int) -> arrays.ArrayDriver:
    with ctx.db.session() as session:
        conn = session.get(Connection, connection_id)
        if conn is None:
            raise PermanentError(f"array connection {connection_id} was removed")
        return open_driver(conn)


def _refresh_volumes(ctx: JobContext, connection_id: int, driver: arrays.ArrayDriver) -> None:
    volumes = driver.list_volumes()
    with ctx.db.session() as session:
        store_volumes(session, connection_id, volumes)


class _PoweredOff:
    """Shut the server down for a destructive restore and power it on again afterwards."""

    def __init__(self, ctx: JobContext, p: _Point):
        self.ctx, self.p = ctx, p
        self.access = for_job(ctx)
        self.leftover: dict[str, Any] | None = None

    def __enter__(self) -> _PoweredOff:
        p = self.p
        if p.vcenter_id is None or p.vm is None:
            raise PermanentError(f"{p.server} is not linked to a VM; cannot make sure it is off")
        client = self.access.client(p.vcenter_id)
        if vsphere.power_state(client, p.vm) != "poweredOff":
            self.leftover = {
                "kind": "array_restore_powered_off",
                "connection_id": p.vcenter_id,
                "vm": p.vm,
            }
            self.ctx.add_leftover(self.leftover)
            self.ctx.step("power off", f"shutting {p.server} down: the LUNs must not be in use")
            how = vsphere.shut_down(client, p.vm, timeout=SHUTDOWN_TIMEOUT_S)
            self.ctx.event(f"{p.server} is off ({how.replace('_', ' ')})")
        else:
            self.ctx.event(f"{p.server} is already powered off")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.leftover is not None:
                self.ctx.step("power on", f"powering {self.p.server} on again")
                vsphere.power_on(self.access.client(self.p.vcenter_id), self.p.vm)
                self.ctx.remove_leftover(self.leftover)
        finally:
            self.access.close()


def run_array_restore(ctx: JobContext) -> JobResult:
    p = _load(ctx)
    mode = ctx.params.get("mode", "revert")
    driver = _driver(ctx, p.array_id)
    if mode == "revert":
        result = _revert(ctx, p, driver)
    elif mode == "clone":
        result = _clone(ctx, p, driver)
    else:
        result = _from_repository(ctx, p, driver)
    plain = {k: v for k, v in result.details.items() if isinstance(v, str | int | float)}
    audit(ctx, f"restore.array_{mode}", "restore_point", p.id, server=p.server, **plain)
    ctx.progress(percent=100)
    return result


def _revert(ctx: JobContext, p: _Point, driver: arrays.ArrayDriver) -> JobResult:
    volumes = sorted(set(p.volumes.values()))
    snap = driver.snapshot(p.snapshot)
    with _PoweredOff(ctx, p):
        ctx.step("revert", f"reverting {', '.join(volumes)} to array snapshot {p.snapshot}")
        started = time.monotonic()
        # The whole group when the snapshot holds exactly these volumes (one subvolume swap).
        whole = set(snap.volumes) == set(volumes)
        driver.revert_to_snapshot(p.snapshot, None if whole else volumes)
        took = time.monotonic() - started
        ctx.event(f"reverted in {took * 1000:.0f} ms")
    return JobResult(
        message=f"{p.server}: database and logs reverted to restore point {p.id}",
        details={"array_snapshot": p.snapshot, "revert_s": round(took, 3)},
    )


def _clone(ctx: JobContext, p: _Point, driver: arrays.ArrayDriver) -> JobResult:
    name = f"restore-job-{ctx.job_id}"
    leftover = {"kind": "array_clone", "connection_id": p.array_id, "name": name}
    ctx.add_leftover(leftover)
    ctx.step("clone", f"cloning array snapshot {p.snapshot} as {name}")
    clones = driver.clone_snapshot(p.snapshot, name)
    _refresh_volumes(ctx, p.array_id, driver)
    ctx.remove_leftover(leftover)  # the clone is the result, the operator's to keep
    made = {c.source_naa_id or "": c.naa_id for c in clones}
    for source, new in made.items():
        ctx.event(f"clone volume {new} holds {source} as in restore point {p.id}")
    return JobResult(
        message=f"restore point {p.id} cloned to new volumes {', '.join(made.values())}",
        details={"clone": name, "volumes": made},
    )


def _from_repository(ctx: JobContext, p: _Point, driver: arrays.ArrayDriver) -> JobResult:
    if p.repository_id is None or not p.manifests:
        raise PermanentError(f"restore point {p.id} has no image in a repository")
    repo = open_job_repository(ctx, p.repository_id)
    manifests = {naa: repo.load_manifest(mid) for naa, mid in p.manifests.items()}
    original = ctx.params.get("target", "new") == "original"
    total = sum(m.size for m in manifests.values())
    ctx.progress(bytes_done=0, bytes_total=total)
    if original:
        with _PoweredOff(ctx, p):
            targets = {naa: naa for naa in manifests}
            _write_images(ctx, repo, driver, manifests, targets, fresh=False)
        return JobResult(
            message=f"{p.server}: database and logs restored from the repository",
            details={"target": "original", "volumes": targets},
        )
    group = f"restore-job-{ctx.job_id}"
    targets = {naa: arrays.derived_naa(f"restore/{ctx.job_id}/{naa}") for naa in manifests}
    leftover = {
        "kind": "array_restore_volumes",
        "connection_id": p.array_id,
        "naa_ids": sorted(targets.values()),
    }
    ctx.add_leftover(leftover)
    for naa, manifest in manifests.items():
        driver.create_volume(group, targets[naa], manifest.size)
    _write_images(ctx, repo, driver, manifests, targets, fresh=True)
    _refresh_volumes(ctx, p.array_id, driver)
    ctx.remove_leftover(leftover)
    return JobResult(
        message=f"restore point {p.id} restored from the repository to new volumes "
        + ", ".join(targets.values()),
        details={"target": "new", "group": group, "volumes": targets},
    )


def _write_images(ctx, repo, driver, manifests, targets, *, fresh: bool) -> None:
    done = 0
    for naa, manifest in manifests.items():
        ctx.step("write", f"writing image {manifest.id} onto volume {targets[naa]}")
        with driver.open_volume(targets[naa], write=True) as f:
            # Every block checked against its hash; each written before the next is read.
            for chunk in repo.read_image(manifest, reuse_buffers=True):
                ctx.check_cancelled()
                if fresh and not any(chunk):
                    f.seek(len(chunk), 1)  # a new volume is thin: leave zeros unwritten
                else:
                    f.write(chunk)
                done += len(chunk)
                ctx.progress(bytes_done=done)
            f.truncate(manifest.size)
            f.flush()

            os.fsync(f.fileno())


def cleanup_array_restore(ctx: JobContext, leftovers: list[dict[str, Any]]) -> None:
    """Power on a server an interrupted restore shut down; remove half-made volumes."""
    for item in leftovers:
        kind = item.get("kind")
        if kind == "array_restore_powered_off":
            access = for_job(ctx)
            try:
                if vsphere.power_on(access.client(item["connection_id"]), item["vm"]):
                    ctx.event("powered the server on again after an interrupted restore")
            finally:
                access.close()
        elif kind == "array_clone":
            _driver(ctx, item["connection_id"]).delete_clone(item["name"])
            ctx.event(f"removed clone {item['name']} an interrupted restore left")
        elif kind == "array_restore_volumes":
            driver = _driver(ctx, item["connection_id"])
            for naa in item["naa_ids"]:
                driver.delete_volume(naa)
            ctx.event("removed the volumes an interrupted restore left half-written")
        else:
            continue
        ctx.remove_leftover(item)


# Every array restore needs vCenter (power) and a proxy that reaches the array.
ARRAY = register(
    RestoreMode(
        names=MODES,
        applies_to=lambda point: point is not None and is_array_point(point),
        capabilities=("vcenter", CAPABILITY),
        run=run_array_restore,
        confirm=confirm,
        cleanup=cleanup_array_restore,
    )
)
