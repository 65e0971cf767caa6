"""VM image backup: a VMFS snapshot of the whole VM, each frozen disk copied off the host
into the repository (the whitepaper's VCB, with this worker as the proxy).

The snapshot is :class:`VmSnapshot`'s (its quiesce, scripts or cold shutdown, the quiescer's
the consistency table picks: app.strategies.quiesce). The copy
reads each disk the snapshot froze over the datastore's ``/folder`` HTTPS transfer and streams
it through the repository (hash, compress, store once) with bounded memory. Where vCenter
tracks changed blocks, a later backup reads only the areas written since the previous image
and reuses the rest of its block list; CBT is not trusted blindly (see :func:`plan_read`).
After the copy the snapshot stays on primary storage for instant recovery if the policy keeps
snapshots there, and is removed otherwise.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from app.adapters import vsphere
from app.adapters.vsphere.datastore_files import DatastoreFiles, datacenter_path
from app.adapters.vsphere.snapshot_disks import (
    ChangedBlocksUnavailable,
    SnapshotDisk,
    changed_areas,
    snapshot_disks,
)
from app.adapters.vsphere.vm_config import read_config
from app.domain.jobs import EventLevel
from app.domain.protection import CopyLocation, ProtectionMethod
from app.jobs.context import PermanentError
from app.repository.errors import ChunkDamaged
from app.strategies import images, quiesce
from app.strategies.base import BackupRun, CopyMade, StepContext
from app.strategies.declarations import VM_IMAGE
from app.strategies.vm_snapshot import VmSnapshot

SAMPLED_BLOCKS = 8
"""Unchanged blocks re-read on every changed-blocks backup to catch CBT that lies."""

FULL = "full"
CHANGED = "changed-blocks"


class ImageCopyError(vsphere.VSphereError):
    """Something of the copy could not be done (operator-readable)."""


class ImageNotPossible(ImageCopyError, PermanentError):
    """The image cannot be made as things stand; trying again would not help."""


# -- reading plan: trust changed block tracking only as far as it earns ----------------------


@dataclass
class ReadPlan:
    mode: str  # FULL or CHANGED
    previous: Any | None = None  # the previous image's manifest (changed-blocks only)
    changed: list[tuple[int, int]] | None = None
    reason: str = ""
    warning: bool = False
    reset_tracking: bool = False  # CBT was caught lying: reset it once the copy is made


def covered_bytes(areas: list[tuple[int, int]], size: int) -> int:
    """Bytes of ``[0, size)`` inside the union of ``(offset, length)`` areas."""
    total, end = 0, 0
    for start, length in sorted(areas):
        lo, hi = max(start, end), min(size, start + length)
        if hi > lo:
            total += hi - lo
        end = max(end, min(size, start + length))
    return total


def changed_block_indexes(areas: list[tuple[int, int]], block_size: int) -> set[int]:
    found: set[int] = set()
    for start, length in areas:
        if length > 0:
            found.update(range(start // block_size, (start + length - 1) // block_size + 1))
    return found


def sample_unchanged(
    repo: Any,
    previous: Any,
    source: BinaryIO,
    changed: list[tuple[int, int]],
    *,
    samples: int = SAMPLED_BLOCKS,
    rng: random.Random | None = None,
) -> list[int]:
    """Re-read up to ``samples`` blocks CBT calls unchanged; return those whose bytes no
    longer match the previous image (CBT missed a write: it must not be trusted)."""
    bs = previous.block_size
    whole = previous.size // bs  # only blocks the previous image holds whole
    touched = changed_block_indexes(changed, bs)
    candidates = [i for i in range(whole) if i not in touched]
    if not candidates:
        return []
    picked = sorted(
        (rng or random.SystemRandom()).sample(candidates, min(samples, len(candidates)))
    )
    differ = []
    for index in picked:
        source.seek(index * bs)
        data = source.read(bs)
        digest = None if data.count(0) == len(data) else repo.digest(data)
        if len(data) != bs or digest != previous.blocks[index]:
            differ.append(index)
    return differ


def plan_read(
    *,
    size: int,
    earlier: dict[str, Any] | None,
    change_id: str | None,
    query: Callable[[str], list[tuple[int, int]]],
    load_previous: Callable[[str], Any],
    check: Callable[[Any, list[tuple[int, int]]], list[int]],
) -> ReadPlan:
    """Decide how to read one disk: only its changed areas, or everything.

    ``earlier`` is the disk's entry on the previous restore point (manifest, change id);
    ``query(change_id)`` asks vCenter what changed since; ``check(previous, changed)`` is the
    sampled re-read of unchanged blocks. Any doubt means a full read.
    """
    if earlier is None:
        return ReadPlan(FULL, reason="no earlier image of this disk")
    if earlier.get("cbt_reset"):
        return ReadPlan(
            FULL,
            reason="changed block tracking was reset after the previous image, so its change "
            "id means nothing now",
        )
    if not earlier.get("change_id") or not change_id:
        return ReadPlan(FULL, reason="changed block tracking is off for this disk")
    try:
        areas = query(earlier["change_id"])
    except ChangedBlocksUnavailable as exc:
        return ReadPlan(FULL, reason=str(exc))
    if size and covered_bytes(areas, size) >= size:
        return ReadPlan(
            FULL,
            reason="changed block tracking reports the whole disk as changed, which it also "
            "does after a silent reset: not trusted, reading everything",
            warning=True,
        )
    try:
        previous = load_previous(earlier["manifest"])
    except Exception as exc:  # noqa: BLE001 - an unreadable previous image: read it all
        return ReadPlan(FULL, reason=f"the previous image cannot be used ({exc})", warning=True)
    differ = check(previous, areas)
    if differ:
        blocks = ", ".join(map(str, differ[:5]))
        return ReadPlan(
            FULL,
            reason=f"changed block tracking missed writes (blocks {blocks} changed but were "
            "reported unchanged): reading everything, then resetting changed block tracking "
            "on this VM",
            warning=True,
            reset_tracking=True,
        )
    return ReadPlan(CHANGED, previous, areas, reason=f"{covered_bytes(areas, size)} bytes changed")


# -- the strategy ---------------------------------------------------------------------------


class VmImage(VmSnapshot):
    declaration = VM_IMAGE

    def copy(self, run: BackupRun) -> None:
        ctx, target = run.ctx, run.target
        repository_id = self._repository_id(run)
        repo = self.services.open_repository(repository_id)
        client = self._client_for(target.connection_id)
        snapshot = run.details["snapshot"]
        files = DatastoreFiles(client, datacenter_path(client, target.vm_moref))
        disks = self._disks_to_copy(run, client, snapshot)
        run.details["vm_config"] = self._capture_config(run, client, files)
        earlier = self._earlier_disks(run, repository_id)
        sizes = {d.key: files.size(d.data_file) for d in disks}
        total = sum(sizes.values())
        ctx.progress(bytes_done=0, bytes_total=total)
        run.details.update(repository_id=repository_id, disks=[])
        base, started = 0, time.monotonic()
        to_reset: list[str] = []
        for disk in disks:
            size = sizes[disk.key]
            with files.open(disk.data_file, size) as source:
                plan = plan_read(
                    size=size,
                    earlier=earlier.get(disk.key),
                    change_id=disk.change_id,
                    query=lambda change_id, d=disk, s=size: changed_areas(
                        client, target.vm_moref, snapshot, d.key, s, change_id
                    ),
                    load_previous=repo.load_manifest,
                    check=lambda previous, areas, src=source: sample_unchanged(
                        repo, previous, src, areas
                    ),
                )
                level = EventLevel.WARNING if plan.warning else EventLevel.INFO
                ctx.event(f"{disk.label}: {plan.mode} read ({plan.reason})", level, step="copy")
                if plan.reset_tracking:
                    to_reset.append(disk.label)

                def progress(done: int, base: int = base) -> None:
                    ctx.check_cancelled()
                    ctx.progress(
                        percent=5 + 90 * (base + done) / max(1, total), bytes_done=base + done
                    )

                manifest = self._write(run, repo, disk, source, size, plan, progress)
            manifest_id = images.save_image(run, repo, manifest, repository_id)
            base += size
            ctx.progress(bytes_done=base)
            run.copies.append(CopyMade(CopyLocation.REPOSITORY, manifest_id, repository_id, size))
            run.details["disks"].append(
                {
                    "key": disk.key,
                    "label": disk.label,
                    "backing": disk.backing,
                    "file": str(disk.descriptor),
                    "data_file": str(disk.data_file),
                    "capacity_bytes": disk.capacity_bytes,
                    "size": size,
                    "manifest": manifest_id,
                    "image_hash": manifest.image_hash,
                    "read_mode": manifest.read_mode,
                    "change_id": disk.change_id,
                    "stats": manifest.stats,
                }
            )
            elapsed = max(time.monotonic() - started, 1e-6)
            ctx.event(
                f"{disk.label} copied to the repository: {_mib(size)} MiB, "
                f"{_mib(manifest.stats.get('read_bytes', 0))} MiB read, "
                f"{manifest.stats.get('new_chunks', 0)} new block(s) stored; "
                f"{_mib(base) / elapsed:.1f} MiB/s so far",
                step="copy",
            )
        modes = {d["read_mode"] for d in run.details["disks"]}
        run.details["read_mode"] = modes.pop() if len(modes) == 1 else "mixed"
        run.details["copy_seconds"] = round(time.monotonic() - started, 3)
        self._retain_snapshot(run, client)
        if to_reset:
            self._reset_tracking(run, client, to_reset)

    @staticmethod
    def _reset_tracking(run: BackupRun, client: Any, caught_on: list[str]) -> None:
        """Reset CBT on the VM after the full read, and void this image's change ids.

        The reset (tracking off, then on) takes effect at the VM's next stun, so the next
        backup's snapshot starts a fresh, trustworthy set of change ids: that backup reads in
        full (no earlier change id is valid) and the one after it uses changed blocks again.
        The change ids of this image came from the tracking that lied, so they are dropped
        whether or not the reset succeeds.
        """
        ctx = run.ctx
        record: dict[str, Any] = {"caught_on": caught_on, "reset": False}
        try:
            vsphere.reset_change_tracking(client, run.target.vm_moref)
            record["reset"] = True
            ctx.event(
                f"changed block tracking on {run.target.server_name} missed writes on "
                f"{', '.join(caught_on)}; it has been reset (off, then on): the next backup "
                "reads every disk in full",
                EventLevel.WARNING,
                step="copy",
            )
        except vsphere.VSphereError as exc:
            record["error"] = str(exc)
            ctx.event(
                f"changed block tracking on {run.target.server_name} missed writes on "
                f"{', '.join(caught_on)} and could not be reset ({exc}): reset it in vCenter "
                "(turn changeTrackingEnabled off and on); the next backup reads in full",
                EventLevel.WARNING,
                step="copy",
            )
        for disk in run.details["disks"]:
            disk["cbt_reset"] = True
        run.details["cbt_reset"] = record

    def _write(self, run, repo, disk, source, size, plan: ReadPlan, progress) -> Any:
        # Progress counts bytes as they arrive from the datastore: the repository reports a
        # block only once it is stored, many blocks later.
        source.seek(0)
        try:
            return repo.write_image(
                _Counted(source, progress),
                size=size,
                source_info=self._source_info(run, disk),
                previous=plan.previous,
                changed=plan.changed,
            )
        except ChunkDamaged as exc:
            if plan.mode != CHANGED:
                raise
            # A block the previous image shares is gone or damaged: build on nothing.
            run.ctx.warning(f"{disk.label}: {exc}; reading everything instead")
            source.seek(0)
            return repo.write_image(
                _Counted(source, progress), size=size, source_info=self._source_info(run, disk)
            )

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _repository_id(run: BackupRun) -> int:
        repository_id = run.policy.repository_id
        if repository_id is None:
            raise ImageNotPossible(
                f"policy '{run.policy.name}' has no repository to copy the VM image into"
            )
        return repository_id

    def _disks_to_copy(self, run: BackupRun, client: Any, snapshot: str) -> list[SnapshotDisk]:
        chosen = []
        for disk in snapshot_disks(client, snapshot):
            if not disk.in_snapshot:
                run.ctx.event(
                    f"{disk.label} ({disk.backing}, {disk.disk_mode}) is not in a VMFS snapshot: "
                    "not copied (protect physical-mode RDMs on the array)",
                    step="copy",
                )
                continue
            if disk.chained:
                raise ImageNotPossible(
                    f"{disk.label} of the snapshot is a delta of an older snapshot; Bulwark copies "
                    "whole base disks only: remove the VM's older snapshots or set the policy's "
                    "keep_on_primary to 0"
                )
            chosen.append(disk)
        if not chosen:
            raise ImageNotPossible(f"{run.target.server_name} has no disk a VM snapshot captures")
        return chosen

    def _earlier_disks(self, run: BackupRun, repository_id: int) -> dict[int, dict[str, Any]]:
        """The disks of this target's newest earlier image in the same repository."""
        points = self.services.recent_points(
            run.target, ProtectionMethod.VM_IMAGE, whole_server=True
        )
        for point in points:
            details = point.details
            if details.get("repository_id") == repository_id and details.get("disks"):
                return {d["key"]: d for d in details["disks"]}
        return {}

    @staticmethod
    def _capture_config(run: BackupRun, client: Any, files: DatastoreFiles) -> dict[str, Any]:
        """The VM's configuration as it was at the snapshot, for a whole-VM restore: stored
        in every disk's manifest, so any one live image can rebuild the VM."""
        config = read_config(client, run.target.vm_moref, files)
        note = config.get("vmx_note")
        run.ctx.event(
            f"configuration of {run.target.server_name} captured: {config['num_cpus']} CPUs, "
            f"{config['memory_mb']} MiB, {config['version']}, {len(config['disks'])} disk(s), "
            f"{len(config['nics'])} NIC(s)" + (f"; {note}" if note else ""),
            step="copy",
        )
        return config

    @staticmethod
    def _source_info(run: BackupRun, disk: SnapshotDisk) -> dict[str, Any]:
        return {
            "vm_config": run.details.get("vm_config"),
            "kind": "vm-disk",
            "server": run.target.server_name,
            "vm": run.target.vm_moref,
            "snapshot": run.details.get("snapshot"),
            "disk_key": disk.key,
            "label": disk.label,
            "file": str(disk.descriptor),
            "job": run.job_id,
        }

    def _retain_snapshot(self, run: BackupRun, client: Any) -> None:
        """Keep the snapshot for instant recovery if the policy keeps snapshots on primary
        storage; otherwise remove it now: the repository holds the image."""
        if run.policy.keep_on_primary > 0:
            return
        moref, name = run.details["snapshot"], run.details["snapshot_name"]
        run.ctx.step("retain", f"removing snapshot {name}: the image is in the repository")
        vsphere.remove_snapshot(client, moref)
        run.ctx.remove_leftover(quiesce.leftover(run, "vm_snapshot", name=name))
        run.copies = [c for c in run.copies if c.location != CopyLocation.VM_SNAPSHOT]
        run.details["snapshot_removed"] = True

    # -- cleanup ----------------------------------------------------------------------------
    def _clean_one(self, ctx: StepContext, item: dict[str, Any]) -> None:
        if item.get("kind") != images.LEFTOVER:
            super()._clean_one(ctx, item)
            return
        try:
            images.remove_uncataloged(self.services, ctx, item)
        except Exception as exc:  # noqa: BLE001 - reported like a vCenter failure: kept, retried
            raise ImageCopyError(
                f"image {item['manifest_id']} could not be removed: {exc}"
            ) from None

    def cleanup(self, ctx: StepContext, leftovers: list[dict[str, Any]]) -> None:
        # Images first: no vCenter session is needed for them.
        ordered = sorted(leftovers, key=lambda x: x.get("kind") != images.LEFTOVER)
        super().cleanup(ctx, ordered)


class _Counted:
    """A readable, seekable source that reports the bytes read so far."""

    def __init__(self, source: Any, report: Callable[[int], None]) -> None:
        self._source, self._report, self._read = source, report, 0

    def _count(self, n: int) -> int:
        self._read += n
        self._report(self._read)
        return n

    def readinto(self, buffer: Any) -> int:
        return self._count(self._source.readinto(buffer))

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._count(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._source.seek(offset, whence)

    def tell(self) -> int:
        return self._source.tell()


def _mib(n: int) -> float:
    return round(n / (1024 * 1024), 1)
