"""Array snapshot of an Exchange database on physical-mode RDM LUNs (the seed's Option 2).

VMFS cannot snapshot a physical-mode RDM: everything happens inside the array. The steps:

- quiesce: find the database's LUNs on the array by NAA id first (nothing slow once the
  database is frozen), then run the policy's pre-snapshot command in the guest through
  VMware Tools guest operations — for Exchange a VSS-aware freeze (docs/arrays.md), which is
  what makes the copy hot and application-consistent; the guest-script code is VmSnapshot's;
- snapshot: one snapshot of the consistency group holding the database and log LUNs, so both
  are captured at one instant (well under a second on the array);
- resume: the post-snapshot command, always, even when the snapshot failed; the quiesce window
  is measured and recorded;
- copy: when the policy names a repository, each volume of the snapshot goes off-host through
  the repository's block path, reading only what changed since the previous array snapshot
  where the array can tell (btrfs: shared extents);
- retain: the newest ``keep_on_primary`` snapshots stay on the array for instant recovery.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import select

from app.adapters import arrays
from app.db.models import (
    Connection,
    ExchangeDatabase,
    ExchangeServer,
    Policy,
    RestorePoint,
    RestorePointCopy,
)
from app.db.types import utcnow
from app.domain.jobs import EventLevel
from app.domain.protection import (
    Consistency,
    CopyLocation,
    ProtectionMethod,
    RestorePointStatus,
)
from app.domain.retention import removal_blocker
from app.repository.connection import open_job_repository
from app.strategies.base import BackupRun, CopyMade, StepContext, TargetSpec
from app.strategies.declarations import ARRAY_SNAPSHOT
from app.strategies.vm_snapshot import VmSnapshot, is_bulwark_snapshot, snapshot_name


class ArrayBackupError(arrays.ArrayError):
    pass


def _permanent(message: str) -> Exception:
    from app.jobs.context import PermanentError

    return PermanentError(message)


def open_job_array(ctx: Any, connection_id: int) -> arrays.ArrayDriver:
    from app.protection.bindings.arrays import open_driver

    with ctx.db.session() as session:
        conn = session.get(Connection, connection_id)
        if conn is None:
            raise arrays.ArrayUnavailable(f"array connection {connection_id} was removed")
        return open_driver(conn)


class ArraySnapshot(VmSnapshot):
    declaration = ARRAY_SNAPSHOT
    # On an array the pre-snapshot command is the application's own freeze (VSS for Exchange).
    script_quiesce_for = (
        Consistency.HOT_APPLICATION,
        Consistency.HOT_CRASH_SCRIPTED,
        Consistency.WARM,
    )

    def __init__(self, access: Any):
        super().__init__(access)
        self._driver: arrays.ArrayDriver | None = None

    # -- quiesce: locate first, then freeze ---------------------------------------------
    def quiesce(self, run: BackupRun) -> None:
        self._locate(run)
        super().quiesce(run)

    def _locate(self, run: BackupRun) -> None:
        from app.protection.bindings.arrays import VolumesNotFound, database_volumes, open_driver

        target = run.target
        if target.database_id is None:
            raise _permanent(
                f"{target.server_name}: array snapshots protect a database on RDM LUNs; "
                "pick a database as the target"
            )
        with run.ctx.db.session() as session:  # type: ignore[attr-defined]
            server = session.get(ExchangeServer, target.server_id)
            database = session.get(ExchangeDatabase, target.database_id)
            if server is None or database is None:
                raise _permanent("the server or database was removed before the backup ran")
            try:
                found = database_volumes(session, server, database)
            except VolumesNotFound as exc:
                raise _permanent(str(exc)) from exc
            driver = open_driver(session.get(Connection, found.array_connection_id))
        for naa in found.all:
            driver.volume(naa)  # still there, as last listed
        self._driver = driver
        run.details.update(
            array_connection_id=found.array_connection_id,
            array_name=found.array_name,
            consistency_group=found.consistency_group,
            volumes=found.naa_ids,
        )
        run.ctx.event(
            f"{target.label}: database and logs are in consistency group "
            f"{found.consistency_group} on array {found.array_name} "
            f"({', '.join(f'{r} {n}' for r, n in found.naa_ids.items())})",
            step="quiesce",
        )

    # -- snapshot -----------------------------------------------------------------------
    def snapshot(self, run: BackupRun) -> None:
        assert self._driver is not None, "quiesce locates the volumes first"
        name = snapshot_name(run.job_id)
        group = run.details["consistency_group"]
        conn_id = run.details["array_connection_id"]
        snapshot_id = f"{group}@{name}"
        # Recorded first: a crash during the snapshot still leaves its name to clean up.
        run.ctx.add_leftover(
            {"kind": "array_snapshot", "connection_id": conn_id, "snapshot": snapshot_id}
        )
        started = time.monotonic()
        snap = self._driver.create_snapshot(sorted(set(run.details["volumes"].values())), name)
        took = time.monotonic() - started
        run.copies.append(CopyMade(CopyLocation.ARRAY_SNAPSHOT, snap.id, conn_id, snap.size_bytes))
        run.details.update(
            array_snapshot=snap.id, snapshot_name=name, array_snapshot_s=round(took, 3)
        )
        run.consistency_reached = self._reached(run, False)
        if run.consistency_reached != run.policy.consistency:
            run.ctx.warning(
                f"asked for {run.policy.consistency.value} but reached "
                f"{run.consistency_reached.value}: "
                + (
                    "the policy has no pre-snapshot (freeze) command"
                    if not run.policy.pre_script
                    else "the freeze command did not run"
                )
            )
        run.ctx.event(
            f"array snapshot {snap.id} taken in {took * 1000:.0f} ms, "
            f"{run.consistency_reached.value}",
            step="snapshot",
        )

    def _reached(self, run: BackupRun, quiesced_by_tools: bool) -> Consistency:
        asked = run.policy.consistency
        if asked == Consistency.HOT_APPLICATION and run.details.get("quiesced_by_script"):
            return Consistency.HOT_APPLICATION  # the VSS-aware freeze ran and succeeded
        return super()._reached(run, False)

    # -- copy off-host --------------------------------------------------------------------
    def copy(self, run: BackupRun) -> None:
        ctx = run.ctx
        with ctx.db.session() as session:  # type: ignore[attr-defined]
            policy = session.get(Policy, run.policy.id)
            repository_id = policy.repository_id if policy else None
        if repository_id is None:
            ctx.event("no repository in the policy: the snapshot stays on the array only")
            return
        assert self._driver is not None
        repo = open_job_repository(ctx, repository_id)
        snapshot_id = run.details["array_snapshot"]
        previous_id, previous_manifests = self._previous(run, repository_id)
        manifests: dict[str, str] = {}
        modes: dict[str, str] = {}
        read_bytes = 0
        volumes = sorted(set(run.details["volumes"].values()))
        sizes = {}
        for naa in volumes:
            with self._driver.open_snapshot_volume(snapshot_id, naa) as f:
                sizes[naa] = os.fstat(f.fileno()).st_size
        total, done_before = sum(sizes.values()), 0
        ctx.progress(bytes_done=0, bytes_total=total)  # type: ignore[attr-defined]
        for naa in volumes:
            previous, changed = self._changes(
                repo, previous_id, previous_manifests.get(naa), snapshot_id, naa
            )

            def progress(done: int, base: int = done_before) -> None:
                ctx.progress(  # type: ignore[attr-defined]
                    percent=100.0 * (base + done) / max(1, total), bytes_done=base + done
                )

            with self._driver.open_snapshot_volume(snapshot_id, naa) as f:
                manifest = repo.write_image(
                    f,
                    size=sizes[naa],
                    source_info={
                        "kind": "array_volume",
                        "array_connection_id": run.details["array_connection_id"],
                        "naa_id": naa,
                        "array_snapshot": snapshot_id,
                        "server": run.target.server_name,
                        "database": run.target.database_name,
                        "job": run.job_id,
                    },
                    previous=previous if changed is not None else None,
                    changed=changed,
                    progress=progress,
                )
            manifest_id = self._save(run, repo, manifest, repository_id)
            manifests[naa] = manifest_id
            modes[naa] = manifest.read_mode
            read_bytes += int((manifest.stats or {}).get("read_bytes", 0))
            done_before += sizes[naa]
            run.copies.append(
                CopyMade(CopyLocation.REPOSITORY, manifest_id, repository_id, sizes[naa])
            )
            ctx.event(
                f"copied {naa} off-host as image {manifest_id} ({manifest.read_mode}, "
                f"{(manifest.stats or {}).get('read_bytes', 0) / 2**20:.1f} MiB read)",
                step="copy",
            )
        run.details.update(
            manifests=manifests,
            copy_modes=modes,
            copy_read_bytes=read_bytes,
            copied_from=previous_id,
        )

    def _previous(self, run: BackupRun, repository_id: int) -> tuple[str | None, dict[str, str]]:
        """The newest earlier array snapshot of this database still on the array whose
        volumes are in this repository: the base of a changed-block copy."""
        t = run.target
        with run.ctx.db.session() as session:  # type: ignore[attr-defined]
            points = session.scalars(
                select(RestorePoint)
                .where(
                    RestorePoint.policy_id == run.policy.id,
                    RestorePoint.server_id == t.server_id,
                    RestorePoint.database_id == t.database_id,
                    RestorePoint.method == ProtectionMethod.ARRAY_SNAPSHOT,
                    RestorePoint.status == RestorePointStatus.AVAILABLE,
                )
                .order_by(RestorePoint.captured_at.desc(), RestorePoint.id.desc())
                .limit(5)
            ).all()
            for p in points:
                snap = _live_copy(p, CopyLocation.ARRAY_SNAPSHOT)
                live_images = {
                    c.reference
                    for c in p.copies
                    if c.location == CopyLocation.REPOSITORY
                    and c.removed_at is None
                    and c.connection_id == repository_id
                }
                manifests = {
                    n: m
                    for n, m in (p.details or {}).get("manifests", {}).items()
                    if m in live_images
                }
                if snap is not None and manifests:
                    return snap.reference, manifests
        return None, {}

    def _changes(
        self,
        repo: Any,
        previous_id: str | None,
        manifest_id: str | None,
        snapshot_id: str,
        naa: str,
    ) -> tuple[Any, list[tuple[int, int]] | None]:
        if previous_id is None or manifest_id is None:
            return None, None
        try:
            previous = repo.load_manifest(manifest_id)
            return previous, self._driver.changed_areas(previous_id, snapshot_id, naa)
        except (arrays.NotSupported, arrays.SnapshotNotFound, arrays.VolumeNotFound):
            return None, None
        except Exception:  # noqa: BLE001 - an unreadable base means a full copy, not a failure
            return None, None

    @staticmethod
    def _save(run: BackupRun, repo: Any, manifest: Any, repository_id: int) -> str:
        """Durable; until the catalog names it, the image is this job's leftover."""
        from app.repository.manifest import new_manifest_id

        manifest.id = manifest.id or new_manifest_id(manifest.created_at)
        try:
            run.ctx.add_leftover(
                {
                    "kind": "repository_image",
                    "repository_id": repository_id,
                    "manifest_id": manifest.id,
                }
            )
            return repo.save_manifest(manifest)
        except BaseException:
            repo.abandon(manifest)
            raise

    # -- retention on the array -----------------------------------------------------------
    def retain_on_primary(
        self, db: Any, policy_id: int, target: TargetSpec, keep: int | None = None
    ) -> list[int]:
        """Keep the newest ``keep_on_primary`` array snapshots (at least one: the next copy
        reads only what changed since it) of this policy and database; delete the rest on the
        array. Only Bulwark's own snapshots are deleted; a hold or compliance retention keeps
        a snapshot that is the restore point's last copy."""
        with db.session() as session:
            if keep is None:
                policy = session.get(Policy, policy_id)
                keep = policy.keep_on_primary if policy else 1
            keep = max(1, keep)
            points = session.scalars(
                select(RestorePoint)
                .where(
                    RestorePoint.policy_id == policy_id,
                    RestorePoint.server_id == target.server_id,
                    RestorePoint.database_id == target.database_id,
                    RestorePoint.method == ProtectionMethod.ARRAY_SNAPSHOT,
                    RestorePoint.status == RestorePointStatus.AVAILABLE,
                )
                .order_by(RestorePoint.captured_at.desc(), RestorePoint.id.desc())
            ).all()
            live = [p for p in points if _live_copy(p, CopyLocation.ARRAY_SNAPSHOT)]
            candidates = live[keep:]
            if not candidates:
                return []
            from app.protection.catalog.copies import retire_copies
            from app.protection.catalog.holds import holds_by_point

            holds = holds_by_point(session, candidates)
            now, expired, drivers = utcnow(), [], {}
            for point in candidates:
                copy = _live_copy(point, CopyLocation.ARRAY_SNAPSHOT)
                others = [c for c in point.copies if c is not copy and c.removed_at is None]
                if not others and removal_blocker(now, point.retain_until, holds[point.id]):
                    continue
                name = copy.reference.partition("@")[2]
                if not is_bulwark_snapshot(name):
                    continue  # never delete a snapshot Bulwark did not take
                if copy.connection_id not in drivers:
                    from app.protection.bindings.arrays import open_driver

                    drivers[copy.connection_id] = open_driver(
                        session.get(Connection, copy.connection_id)
                    )
                drivers[copy.connection_id].delete_snapshot(copy.reference)
                # Without other copies the point expires; with a repository copy it stays
                # restorable from there, no longer instantly.
                retire_copies(
                    session,
                    point,
                    [copy],
                    now=now,
                    reason=f"keep {keep} on the array",
                    array_snapshot=copy.reference,
                )
                # The snapshot is gone: say so now, not after the rest (a later failure must
                # not roll the catalog back to offering it).
                session.commit()
                expired.append(point.id)
            return expired

    # -- cleanup ----------------------------------------------------------------------------
    def cleanup(self, ctx: StepContext, leftovers: list[dict[str, Any]]) -> None:
        mine = [i for i in leftovers if i.get("kind") in ("array_snapshot", "repository_image")]
        failures = []
        for item in mine:
            try:
                self._clean_array_item(ctx, item)
            except Exception as exc:  # noqa: BLE001 - kept as a leftover, retried next time
                failures.append(f"{item['kind']}: {exc}")
                ctx.event(f"could not clean up {item['kind']}: {exc}", EventLevel.ERROR, "cleanup")
                continue
            ctx.remove_leftover(item)
        rest = [i for i in leftovers if i not in mine]
        if rest:
            super().cleanup(ctx, rest)  # resume the guest, power the VM on
        if failures:
            raise ArrayBackupError("; ".join(failures))

    def _clean_array_item(self, ctx: StepContext, item: dict[str, Any]) -> None:
        if item["kind"] == "repository_image":
            repo = open_job_repository(ctx, item["repository_id"])
            repo.delete_manifest(item["manifest_id"])
            ctx.event(f"removed uncataloged image {item['manifest_id']}", step="cleanup")
            return
        with ctx.db.session() as session:  # type: ignore[attr-defined]
            kept = session.scalar(
                select(RestorePointCopy.id).where(
                    RestorePointCopy.location == CopyLocation.ARRAY_SNAPSHOT,
                    RestorePointCopy.reference == item["snapshot"],
                    RestorePointCopy.connection_id == item["connection_id"],
                    RestorePointCopy.removed_at.is_(None),
                )
            )
        if kept is not None:
            return  # cataloged: a restore point, not a leftover
        open_job_array(ctx, item["connection_id"]).delete_snapshot(item["snapshot"])
        ctx.event(
            f"removed array snapshot {item['snapshot']} left by an interrupted run",
            step="cleanup",
        )


def _live_copy(point: RestorePoint, location: CopyLocation) -> RestorePointCopy | None:
    return next((c for c in point.copies if c.location == location and c.removed_at is None), None)
