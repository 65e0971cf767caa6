"""Restore a disk from the repository back to a datastore (``/folder`` PUT).

Two ways, for one disk of a VM image restore point or for all of them (the whole VM's disks):
- ``target="new"``: a new flat VMDK (descriptor + ``-flat.vmdk``) beside the original disk
  (or on another datastore), for the operator to attach or to copy files from; nothing of the
  VM changes. A virtual-mode RDM's database disk comes back this way as a VMDK.
- ``target="original"``: over the disk's own data file (``-flat.vmdk``, or a virtual-mode
  RDM's mapping extent, which writes through to the LUN), only with the VM powered off, no
  snapshot building on the disk, and the operator's confirmation (the server's name). Every
  block is verified before the first byte is written, so a damaged image never half-
  overwrites a disk.

A damaged block is refused with the restore point and block named. Every restore is audited.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from app.adapters import vsphere
from app.adapters.vsphere import snapshot_disks
from app.adapters.vsphere.datastore_files import (
    DatastoreFiles,
    DatastorePath,
    datacenter_path,
    flat_extent,
)
from app.audit import Actor, record
from app.db.models import ExchangeServer, RestorePoint
from app.domain.protection import CopyLocation, RestorePointStatus, RestoreRefused
from app.jobs.context import JobContext, JobResult, PermanentError
from app.protection.bindings.vcenter import for_job
from app.protection.restores.registry import RestoreMode, register, requester, vm_point
from app.repository.connection import open_job_repository

MODE = "disk"
TARGETS = ("new", "original")


@dataclass(frozen=True)
class DiskImage:
    """One disk of a restore point, as the repository holds it."""

    point_id: int
    server_id: int | None
    server_name: str
    connection_id: int | None
    vm_moref: str | None
    repository_id: int
    manifest_id: str
    entry: dict[str, Any]

    @property
    def label(self) -> str:
        return self.entry.get("label") or f"disk {self.entry['key']}"


def find_disk_image(session: Any, point: RestorePoint, disk_key: int) -> DiskImage:
    """The repository copy of one disk of ``point``; :class:`RestoreRefused` if none."""
    # A point found damaged by a verify still restores its sound disks: every block read is
    # checked, and a damaged one refuses the restore naming it.
    if point.status == RestorePointStatus.EXPIRED:
        raise RestoreRefused(f"restore point {point.id} has expired")
    details = point.details or {}
    entry = next((d for d in details.get("disks") or [] if d.get("key") == disk_key), None)
    if entry is None:
        keys = ", ".join(str(d.get("key")) for d in details.get("disks") or []) or "none"
        raise RestoreRefused(
            f"restore point {point.id} holds no image of disk {disk_key} (its disks: {keys})"
        )
    live = {c.reference for c in point.live_copies(CopyLocation.REPOSITORY)}
    if entry.get("manifest") not in live:
        raise RestoreRefused(
            f"the repository copy of disk {disk_key} of restore point {point.id} was removed"
        )
    server = session.get(ExchangeServer, point.server_id) if point.server_id else None
    return DiskImage(
        point_id=point.id,
        server_id=point.server_id,
        server_name=server.name if server else "the server",
        connection_id=server.connection_id if server else None,
        vm_moref=server.vm_moref if server else None,
        repository_id=details["repository_id"],
        manifest_id=entry["manifest"],
        entry=entry,
    )


def check_request(
    session: Any, point: RestorePoint, disk_key: int | None, target: str, confirm: str | None
) -> list[DiskImage]:
    """What the API checks before queuing a restore of one disk, or of every disk
    (``disk_key`` None: the whole VM's disks)."""
    if target not in TARGETS:
        raise RestoreRefused(f"target must be one of {', '.join(TARGETS)}")
    keys = (
        [disk_key]
        if disk_key is not None
        else [d.get("key") for d in (point.details or {}).get("disks") or []]
    )
    if not keys:
        raise RestoreRefused(f"restore point {point.id} holds no disk images")
    images = [find_disk_image(session, point, key) for key in keys]
    first = images[0]
    if first.connection_id is None or first.vm_moref is None:
        raise RestoreRefused(f"{first.server_name} is no longer linked to a VM in a vCenter")
    if target == "original" and confirm != first.server_name:
        what = first.label if disk_key is not None else f"every disk of {first.server_name}"
        raise RestoreRefused(
            f"restoring {what} over the original overwrites it with its state at "
            f"{point.captured_at:%Y-%m-%d %H:%M} UTC; power {first.server_name} off and "
            "confirm by setting confirm to the server's name"
        )
    return images


def damaged_message(point_id: int, label: str, exc: Any) -> str:
    block = f"block {exc.index}" if getattr(exc, "index", None) is not None else "a block"
    return (
        f"restore point {point_id}, {label}: {block} is damaged "
        f"({getattr(exc, 'reason', exc)}); the restore was refused"
    )


def descriptor_text(flat_name: str, size: int) -> bytes:
    """A VMDK descriptor for a flat extent of ``size`` bytes."""
    sectors = -(-size // 512)
    return (
        '# Disk DescriptorFile\nversion=1\nencoding="UTF-8"\nCID=fffffffe\n'
        'parentCID=ffffffff\ncreateType="vmfs"\n\n# Extent description\n'
        f'RW {sectors} VMFS "{flat_name}"\n\n# The Disk Data Base\n#DDB\n\n'
        'ddb.adapterType = "pvscsi"\nddb.virtualHWVersion = "13"\n'
        'ddb.comment = "restored by Bulwark"\n'
    ).encode()


def run_disk_restore(ctx: JobContext) -> JobResult:
    from app.repository.errors import ChunkDamaged

    params = ctx.params
    target = params.get("target", "new")
    key = params.get("disk_key")
    with ctx.db.session() as session:
        point = session.get(RestorePoint, params.get("restore_point_id"))
        if point is None:
            raise PermanentError("the restore point is gone")
        try:
            images = check_request(
                session, point, None if key is None else int(key), target, params.get("confirm")
            )
        except RestoreRefused as exc:
            raise PermanentError(str(exc)) from None
    first = images[0]
    repo = open_job_repository(ctx, first.repository_id)
    manifests = [repo.load_manifest(image.manifest_id) for image in images]
    total = sum(m.size for m in manifests)
    ctx.progress(bytes_done=0, bytes_total=total)
    access = for_job(ctx)
    written: list[DatastorePath] = []
    current = first
    try:
        client = access.client(first.connection_id)
        dc = datacenter_path(client, first.vm_moref)
        files = DatastoreFiles(client, dc)
        if target == "original":
            _check_vm_off(client, first)
            _check_disks_unchanged(client, images)
            ctx.step("verify", "checking every block before anything is overwritten")
            for image, manifest in zip(images, manifests, strict=True):
                current = image
                damaged = repo.verify_image(manifest)
                if damaged:
                    raise PermanentError(damaged_message(image.point_id, image.label, damaged[0]))
        done = 0
        for image, manifest in zip(images, manifests, strict=True):
            current = image
            if target == "original":
                path = DatastorePath.parse(image.entry["data_file"])
                ctx.step("restore", f"overwriting {path} with restore point {image.point_id}")
                files.upload(path, _stream(ctx, repo, manifest, done, total), manifest.size)
            else:
                path = _as_new_disk(ctx, repo, manifest, image, files, dc, done, total)
            done += manifest.size
            written.append(path)
    except ChunkDamaged as exc:
        raise PermanentError(damaged_message(current.point_id, current.label, exc)) from None
    finally:
        access.close()
    with ctx.db.session() as session:
        actor = requester(params)
        for image, path in zip(images, written, strict=True):
            record(
                session,
                actor,
                "restore.disk",
                "restore_point",
                image.point_id,
                job=ctx.job_id,
                server=image.server_name,
                disk=image.entry["key"],
                target=target,
                file=str(path),
            )
    ctx.progress(percent=100)
    what = first.label if len(images) == 1 else f"{len(images)} disks of {first.server_name}"
    return JobResult(
        message=f"{what} of restore point {first.point_id} restored to "
        + ", ".join(map(str, written)),
        details={"files": [str(p) for p in written], "bytes": total, "target": target},
    )


def _check_vm_off(client: Any, image: DiskImage) -> None:
    state = vsphere.power_state(client, image.vm_moref)
    if state != "poweredOff":
        raise PermanentError(
            f"{image.server_name} is {state}: power it off before restoring over its disks"
        )
    if vsphere.list_snapshots(client, image.vm_moref):
        raise PermanentError(
            f"{image.server_name} has snapshots, which build on the disks to be overwritten; "
            "remove them (or restore as new disks) first"
        )


def _check_disks_unchanged(client: Any, images: list[DiskImage]) -> None:
    """Overwrite only the file each disk still lives in, at the size it had: after a Storage
    vMotion, a disk swap or a grown disk, the recorded file is no longer that disk."""
    now = {d.key: d for d in snapshot_disks.vm_disks(client, images[0].vm_moref)}
    for image in images:
        disk = now.get(image.entry["key"])
        if disk is None:
            raise PermanentError(
                f"{image.server_name} no longer has {image.label}; restore it as a new disk"
            )
        if disk.file_name != image.entry.get("file"):
            raise PermanentError(
                f"{image.label} of {image.server_name} now lives in {disk.file_name}, not "
                f"{image.entry.get('file')} as when backed up; restore it as a new disk"
            )
        if disk.capacity_bytes != image.entry.get("capacity_bytes"):
            raise PermanentError(
                f"{image.label} of {image.server_name} is {disk.capacity_bytes} bytes now, "
                f"{image.entry.get('capacity_bytes')} when backed up; restore it as a new disk"
            )


def _stream(ctx: JobContext, repo: Any, manifest: Any, before: int, total: int):
    """The image's verified bytes, with progress over the whole job (``before`` bytes done)."""
    done = before
    for data in repo.read_image(manifest, reuse_buffers=True):  # each sent before the next
        ctx.check_cancelled()
        done += len(data)
        ctx.progress(percent=100 * done / max(1, total), bytes_done=done)
        yield data


def _as_new_disk(
    ctx: JobContext,
    repo: Any,
    manifest: Any,
    image: DiskImage,
    files: DatastoreFiles,
    dc: str,
    before: int,
    total: int,
) -> DatastorePath:
    original = DatastorePath.parse(image.entry["file"])
    stem = original.name.removesuffix(".vmdk")
    descriptor = original.sibling(f"{stem}-restored-rp{image.point_id}-job{ctx.job_id}.vmdk")
    if ctx.params.get("datastore"):
        descriptor = DatastorePath(ctx.params["datastore"], descriptor.path)
    extent = flat_extent(descriptor)
    leftover = {
        "kind": "datastore_files",
        "connection_id": image.connection_id,
        "datacenter": dc,
        "files": [str(extent), str(descriptor)],
    }
    ctx.add_leftover(leftover)  # before the first byte: a crash leaves a name to remove
    ctx.step("restore", f"writing {image.label} of restore point {image.point_id} to {extent}")
    files.upload(extent, _stream(ctx, repo, manifest, before, total), manifest.size)
    text = descriptor_text(extent.name, manifest.size)
    files.upload(descriptor, [text], len(text))
    ctx.remove_leftover(leftover)
    return descriptor


def cleanup_disk_restore(ctx: JobContext, leftovers: list[dict[str, Any]]) -> None:
    """Remove the partial new disk an interrupted restore wrote."""
    mine = [item for item in leftovers if item.get("kind") == "datastore_files"]
    if not mine:
        return
    access = for_job(ctx)
    try:
        for item in mine:
            files = DatastoreFiles(access.client(item["connection_id"]), item["datacenter"])
            for name in item["files"]:
                with contextlib.suppress(ValueError):
                    if files.delete(DatastorePath.parse(name)):
                        ctx.event(f"removed {name} left by an interrupted restore", step="cleanup")
            ctx.remove_leftover(item)
    finally:
        access.close()


def queue_disk_restore(
    session: Any,
    point: RestorePoint,
    disk_key: int | None,
    *,
    target: str,
    confirm: str | None,
    datastore: str | None,
    actor: Actor,
) -> Any:
    """Check a disk restore request and queue its job (API and dashboard share this)."""
    from app.domain.jobs import JobKind
    from app.jobs.enqueue import enqueue

    images = check_request(session, point, disk_key, target, confirm)
    params: dict[str, Any] = {
        "mode": MODE,
        "restore_point_id": point.id,
        "target": target,
        "requested_by": actor.name,
    }
    if disk_key is not None:
        params["disk_key"] = disk_key
    if confirm is not None:
        params["confirm"] = confirm
    if datastore:
        params["datastore"] = datastore
    return enqueue(
        session, JobKind.RESTORE, actor=actor, params=params, server_id=images[0].server_id
    )


# Queued by its own endpoints (queue_disk_restore), which check the request with
# check_request: it names disks and a target, not a confirmation in params.
DISK = register(
    RestoreMode((MODE,), vm_point, ("vcenter",), run_disk_restore, cleanup=cleanup_disk_restore)
)
