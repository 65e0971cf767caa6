"""Array snapshot of an Exchange database on physical-mode RDM LUNs (the seed's Option 2).

VMFS cannot snapshot a physical-mode RDM: everything happens inside the array. The steps:

- quiesce: find the database's LUNs on the array by NAA id first (nothing slow once the
  database is frozen), then run the policy's pre-snapshot command in the guest through
  VMware Tools guest operations — for Exchange a VSS-aware freeze (docs/arrays.md), which is
  what makes the copy hot and application-consistent; the quiescer is the one the
  consistency table picks (app.strategies.quiesce);
- snapshot: one snapshot of the consistency group holding the database and log LUNs, so both
  are captured at one instant (well under a second on the array);
- resume: the post-snapshot command, always, even when the snapshot failed; the quiesce window
  is measured and recorded;
- copy: when the policy names a repository, each volume of the snapshot goes off-host through
  the repository's block path, reading only what changed since the previous array snapshot
  where the array can tell (btrfs: shared extents);
- retain: the newest ``keep_on_primary`` snapshots stay on the array for instant recovery
  (the catalog's one primary-retention rule; this strategy removes the older snapshots).
"""

from __future__ import annotations

import os
import time
from typing import Any

from app.adapters import arrays
from app.domain.protection import CopyLocation, ProtectionMethod
from app.jobs.context import PermanentError
from app.strategies import images, quiesce
from app.strategies.base import BackupRun, BackupStrategy, CopyMade, PrimaryCopy, StepContext
from app.strategies.declarations import ARRAY_SNAPSHOT
from app.strategies.vm_snapshot import is_bulwark_snapshot, snapshot_name


class ArrayBackupError(arrays.ArrayError):
    pass


class ArraySnapshot(BackupStrategy):
    declaration = ARRAY_SNAPSHOT
    primary = CopyLocation.ARRAY_SNAPSHOT

    def __init__(self, services: Any):
        super().__init__(services)
        self._driver: arrays.ArrayDriver | None = None

    # -- quiesce: locate first, then freeze ---------------------------------------------
    def quiesce(self, run: BackupRun) -> None:
        self._locate(run)
        super().quiesce(run)

    def _locate(self, run: BackupRun) -> None:
        target = run.target
        if target.database_id is None:
            raise PermanentError(
                f"{target.server_name}: array snapshots protect a database on RDM LUNs; "
                "pick a database as the target"
            )
        found = self.services.database_volumes(target)
        driver = self.services.open_array(found.array_connection_id)
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
        run.consistency_reached = run.quiescer.reached(run)
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

    # -- copy off-host --------------------------------------------------------------------
    def copy(self, run: BackupRun) -> None:
        ctx = run.ctx
        repository_id = run.policy.repository_id
        if repository_id is None:
            ctx.event("no repository in the policy: the snapshot stays on the array only")
            return
        assert self._driver is not None
        repo = self.services.open_repository(repository_id)
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
        ctx.progress(bytes_done=0, bytes_total=total)
        for naa in volumes:
            previous, changed = self._changes(
                repo, previous_id, previous_manifests.get(naa), snapshot_id, naa
            )

            def progress(done: int, base: int = done_before) -> None:
                ctx.progress(percent=100.0 * (base + done) / max(1, total), bytes_done=base + done)

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
            manifest_id = images.save_image(run, repo, manifest, repository_id)
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
        points = self.services.recent_points(
            run.target, ProtectionMethod.ARRAY_SNAPSHOT, policy_id=run.policy.id
        )
        for p in points:
            snap = p.live(CopyLocation.ARRAY_SNAPSHOT)
            live_images = {c.reference for c in p.live(CopyLocation.REPOSITORY, repository_id)}
            manifests = {
                n: m for n, m in p.details.get("manifests", {}).items() if m in live_images
            }
            if snap and manifests:
                return snap[0].reference, manifests
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

    # -- retention on the array -----------------------------------------------------------
    def remove_from_primary(self, copy: PrimaryCopy) -> bool:
        if not is_bulwark_snapshot(copy.reference.partition("@")[2]):
            return False  # never delete a snapshot Bulwark did not take
        self.services.open_array(copy.connection_id).delete_snapshot(copy.reference)
        return True

    # -- cleanup ----------------------------------------------------------------------------
    def cleanup(self, ctx: StepContext, leftovers: list[dict[str, Any]]) -> None:
        # Any failure is kept as a leftover and retried next time.
        self.clean_each(ctx, leftovers, self._clean_one, catch=Exception, error=ArrayBackupError)

    def _clean_one(self, ctx: StepContext, item: dict[str, Any]) -> None:
        kind = item.get("kind")
        if kind == images.LEFTOVER:
            images.remove_uncataloged(self.services, ctx, item)
        elif kind == "array_snapshot":
            if self.services.cataloged(
                CopyLocation.ARRAY_SNAPSHOT, item["snapshot"], item["connection_id"]
            ):
                return  # cataloged: a restore point, not a leftover
            self.services.open_array(item["connection_id"]).delete_snapshot(item["snapshot"])
            ctx.event(
                f"removed array snapshot {item['snapshot']} left by an interrupted run",
                step="cleanup",
            )
        else:
            quiesce.clean_leftover(self.services.vcenter, ctx, item)  # resume, power on
