"""Restore a whole VM from the repository: as a new VM, or over the original.

A VM-image restore point holds every disk a VMFS snapshot froze plus the VM's configuration
(captured at backup time and stored in each disk's manifest), so it can bring the server back
when its VM is gone, whether or not a snapshot is still on primary storage:

- ``target="new"``: ``CreateVM_Task`` from the captured configuration (same hardware,
  controllers, disk keys and units; flat VMDKs in a folder of the new name on the chosen
  datastore; NICs on the chosen network, *disconnected* unless asked, so two copies of an
  Exchange server never meet on the wire), then each disk written from the repository
  through ``/folder`` PUT, powered off unless asked. The half-made VM is this job's leftover
  from before ``CreateVM_Task`` until the last disk is written: a failure, or a worker that
  dies, leaves cleanup to find it by name and the job's mark and remove it.
- ``target="original"``: every disk back over the VM's own files. The operator sees the
  configuration differences first and types the server's name; the job powers the VM off
  and then writes as a disk restore over the original does (every block verified first).

Progress is in bytes over all disks; each disk's rate (MiB/s) is an event when it is written,
and the job's result lists them with the overall rate.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from app.adapters import vsphere
from app.adapters.vsphere import vm_config
from app.adapters.vsphere.datastore_files import DatastoreFiles, datacenter_path, flat_extent
from app.audit import Actor, record
from app.db.models import ExchangeServer, RestorePoint
from app.domain.jobs import EventLevel
from app.domain.protection import CopyLocation, RestorePointStatus, RestoreRefused
from app.jobs.context import JobContext, JobResult, PermanentError
from app.protection.bindings.vcenter import for_job
from app.protection.restores import disk as restore_repository
from app.protection.restores.registry import RestoreMode, register
from app.repository.connection import open_job_repository

MODE = "whole_vm"
TARGETS = ("new", "original")
LEFTOVER = "whole_vm_new"
EXCHANGE_ATTRIBUTE = "bulwark.exchange"
_NAME = re.compile(r"^[^/\\%\x00-\x1f]{1,80}$")
MiB = 1024 * 1024


@dataclass(frozen=True)
class Offer:
    """One restore a restore point's live copies allow, or why it is not offered."""

    key: str
    label: str
    available: bool
    reason: str = ""
    href: str = ""


def live_copies(point: RestorePoint, location: CopyLocation) -> set[str]:
    return {c.reference for c in point.live_copies(location)}


def image_disks(point: RestorePoint) -> list[dict[str, Any]]:
    """The disks of ``point`` whose repository copy is still live."""
    live = live_copies(point, CopyLocation.REPOSITORY)
    return [d for d in (point.details or {}).get("disks") or [] if d.get("manifest") in live]


def offers(point: RestorePoint) -> list[Offer]:
    """What the restore-point page offers: exactly the restores its live copies allow, each
    refused one with its reason."""
    available = point.status != RestorePointStatus.EXPIRED
    snapshot = bool(live_copies(point, CopyLocation.VM_SNAPSHOT)) and (
        point.status == RestorePointStatus.AVAILABLE
    )
    details = point.details or {}
    disks = details.get("disks") or []
    live = image_disks(point)
    base = f"/restore-points/{point.id}"
    out = []
    no_snapshot = "no VM snapshot of this point is left on primary storage"
    out.append(
        Offer(
            "revert",
            "Revert the VM to its snapshot",
            snapshot,
            "" if snapshot else no_snapshot,
            f"{base}/revert",
        )
    )
    out.append(
        Offer(
            "new_vm",
            "Clone the snapshot as a new VM",
            snapshot,
            "" if snapshot else no_snapshot,
            f"{base}/new-vm",
        )
    )
    if not disks:
        why = "this restore point holds no disk images in a repository"
    elif not available:
        why = "this restore point has expired"
    elif len(live) < len(disks):
        why = "some of its disk images were removed from the repository"
    elif not details.get("vm_config"):
        why = "it was taken before Bulwark captured VM configurations: restore its disks instead"
    else:
        why = ""
    whole = not why
    out.append(
        Offer("whole_vm_new", "Restore the whole VM as a new VM", whole, why, f"{base}/whole-vm")
    )
    out.append(
        Offer(
            "whole_vm_original",
            "Restore the whole VM over the original",
            whole,
            why,
            f"{base}/whole-vm?target=original",
        )
    )
    disk_ok = bool(live) and available
    out.append(
        Offer(
            "disk",
            "Restore one disk",
            disk_ok,
            "" if disk_ok else (why or "no disk image is left"),
            f"{base}#disks",
        )
    )
    return out


# -- checking a request (API and dashboard) -------------------------------------------------


def check_request(session: Any, point: RestorePoint, params: dict[str, Any]) -> ExchangeServer:
    """Refuse (:class:`RestoreRefused`) what cannot be done; the server it restores."""
    target = params.get("target", "new")
    if target not in TARGETS:
        raise RestoreRefused(f"params.target must be one of {', '.join(TARGETS)}")
    offer = next(o for o in offers(point) if o.key == f"whole_vm_{target}")
    if not offer.available:
        raise RestoreRefused(
            f"restore point {point.id} cannot restore the whole VM: {offer.reason}"
        )
    server = session.get(ExchangeServer, point.server_id) if point.server_id else None
    if server is None or server.connection_id is None:
        raise RestoreRefused("the restore point's server is no longer linked to a vCenter")
    for flag in ("power_on", "connect_network"):
        if flag in params and not isinstance(params[flag], bool):
            raise RestoreRefused(f"params.{flag} is true or false")
    for field in ("folder", "host", "cluster", "datastore", "network"):
        value = params.get(field)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 200):
            raise RestoreRefused(f"params.{field} is a name or moref of up to 200 characters")
    if params.get("host") and params.get("cluster"):
        raise RestoreRefused("give params.host or params.cluster, not both")
    if target == "new":
        name = str(params.get("new_vm_name") or "").strip()
        if not _NAME.match(name):
            raise RestoreRefused(
                "params.new_vm_name must be 1 to 80 characters without '/', '\\' or '%'"
            )
    else:
        if server.vm_moref is None:
            raise RestoreRefused(f"{server.name} has no VM to restore over; restore as a new VM")
        if params.get("confirm") != server.name:
            raise RestoreRefused(
                f"restoring over {server.name} powers it off and overwrites every disk with its "
                f"state at {point.captured_at:%Y-%m-%d %H:%M} UTC; read the configuration "
                "differences, then confirm by setting params.confirm to the server's name"
            )
    return server


def queue(session: Any, point: RestorePoint, params: dict[str, Any], actor: Actor) -> Any:
    """Check a whole-VM restore request and queue its job (API and dashboard share this)."""
    from app.domain.jobs import JobKind
    from app.jobs.enqueue import enqueue

    server = check_request(session, point, params)
    allowed = (
        "target",
        "new_vm_name",
        "folder",
        "host",
        "cluster",
        "datastore",
        "network",
        "connect_network",
        "power_on",
        "confirm",
    )
    clean = {k: params[k] for k in allowed if params.get(k) is not None}
    clean.update(mode=MODE, restore_point_id=point.id, requested_by=actor.name)
    clean.setdefault("target", "new")
    # What the worker needs is the mode's (WHOLE_VM.capabilities), through enqueue.
    return enqueue(session, JobKind.RESTORE, actor=actor, params=clean, server_id=server.id)


# -- the configuration, from the repository --------------------------------------------------


def captured_config(ctx_or_repo: Any, point: RestorePoint) -> dict[str, Any]:
    """The configuration stored with the point's images (the catalog's copy if none)."""
    for disk in image_disks(point):
        try:
            manifest = ctx_or_repo.load_manifest(disk["manifest"])
        except Exception:  # noqa: BLE001 - another disk's manifest may still be readable
            continue
        config = (manifest.source or {}).get("vm_config")
        if config:
            return config
    config = (point.details or {}).get("vm_config")
    if not config:
        raise PermanentError(f"restore point {point.id} holds no VM configuration")
    return config


def current_differences(client: Any, config: dict[str, Any], vm_moref: str) -> list[dict]:
    now = vm_config.read_config(client, vm_moref)
    return [d.to_json() for d in vm_config.differences(config, now)]


# -- the job ---------------------------------------------------------------------------------


def run(ctx: JobContext) -> JobResult:
    if ctx.params.get("target", "new") == "original":
        return _run_original(ctx)
    return _run_new(ctx)


@dataclass
class _Plan:
    point_id: int
    server_name: str
    connection_id: int
    vm_moref: str | None
    repository_id: int
    images: dict[int, str]  # disk key -> manifest id


def _load(ctx: JobContext) -> tuple[_Plan, RestorePoint]:
    with ctx.db.session() as session:
        point = session.get(RestorePoint, ctx.params.get("restore_point_id"))
        if point is None:
            raise PermanentError("the restore point is gone")
        try:
            server = check_request(session, point, ctx.params)
        except RestoreRefused as exc:
            raise PermanentError(str(exc)) from None
        plan = _Plan(
            point.id,
            server.name,
            server.connection_id,
            server.vm_moref,
            point.details["repository_id"],
            {int(d["key"]): d["manifest"] for d in image_disks(point)},
        )
        session.expunge(point)
    return plan, point


def _placement(client: Any, config: dict[str, Any], params: dict[str, Any]) -> vm_config.Placement:
    """The operator's choices by name or moref, each defaulting to the original's."""
    choices = vm_config.inventory_choices(client)

    def pick(kind: str, given: str | None, default: str | None) -> dict[str, Any] | None:
        items = choices[kind]
        want = given or default
        if want is None:
            return None
        for item in items:
            if want in (item["moref"], item["name"]):
                return item
        if given:
            names = ", ".join(str(i["name"]) for i in items[:20])
            raise PermanentError(
                f"there is no {kind[:-1]} {given!r} in vCenter (there are: {names})"
            )
        return None

    folder = pick("folders", params.get("folder"), config.get("folder"))
    if folder is None:
        folder = next((f for f in choices["folders"] if f["name"] == "vm"), None)
    if folder is None:
        raise PermanentError("no VM folder to put the new VM in; choose params.folder")
    if params.get("cluster"):
        cluster = pick("clusters", params["cluster"], None)
        pool, host = vm_config.compute_placement(client, cluster["moref"])
    else:
        host_item = pick("hosts", params.get("host"), config.get("host"))
        if host_item is None:
            host_item = choices["hosts"][0] if choices["hosts"] else None
        if host_item is None:
            raise PermanentError("no host to run the new VM on; choose params.host")
        pool, host = vm_config.compute_placement(client, host_item["moref"])
    original_ds = None
    if config.get("vm_path"):
        original_ds = config["vm_path"].split("]", 1)[0].lstrip("[")
    datastore = pick("datastores", params.get("datastore"), original_ds)
    if datastore is None:
        raise PermanentError("the original's datastore is gone; choose params.datastore")
    original_net = next((n.get("network") for n in config.get("nics") or []), None)
    network = pick("networks", params.get("network"), original_net)
    if network is None and config.get("nics"):
        network = choices["networks"][0] if choices["networks"] else None
    return vm_config.Placement(
        folder=folder["moref"],
        resource_pool=pool,
        host=host,
        datastore=datastore["name"],
        network=network["name"] if network else None,
        connect_network=ctx_bool(params, "connect_network"),
    )


def ctx_bool(params: dict[str, Any], key: str) -> bool:
    return params.get(key) is True


def _run_new(ctx: JobContext) -> JobResult:
    from app.repository.store import ChunkDamaged

    plan, point = _load(ctx)
    name = str(ctx.params["new_vm_name"]).strip()
    repo = open_job_repository(ctx, plan.repository_id)
    config = captured_config(repo, point)
    wanted = vm_config.restorable_disks(config)
    missing = [d["label"] for d in wanted if int(d["key"]) not in plan.images]
    if missing:
        raise PermanentError(
            f"restore point {plan.point_id} holds no image of {', '.join(missing)}; "
            "the whole VM cannot be rebuilt from it"
        )
    for disk in config.get("disks") or []:
        if disk not in wanted:
            ctx.event(
                f"{disk['label']} ({disk['backing']}) is not in the image (a physical-mode RDM "
                "is restored from the array): the new VM is made without it",
                EventLevel.WARNING,
            )
    manifests = {key: repo.load_manifest(m) for key, m in plan.images.items()}
    total = sum(manifests[int(d["key"])].size for d in wanted)
    ctx.progress(percent=0, bytes_done=0, bytes_total=total)
    access = for_job(ctx)
    rates: list[dict[str, Any]] = []
    power_on = ctx_bool(ctx.params, "power_on")
    partial, note = False, ""
    try:
        client = access.client(plan.connection_id)
        ctx.step("prepare", f"choosing where {name} goes")
        placement = _placement(client, config, ctx.params)
        item = {
            "kind": LEFTOVER,
            "connection_id": plan.connection_id,
            "folder": placement.folder,
            "name": name,
            "mark": f"job-{ctx.job_id}",
        }
        ctx.step(
            "create",
            f"creating {name} from the configuration of {plan.server_name} on "
            f"{placement.datastore} (network {placement.network or 'none'}, "
            f"{'connected' if placement.connect_network else 'disconnected'})",
        )
        ctx.add_leftover(item)  # before CreateVM_Task: a crash leaves a name to remove
        try:
            moref = vm_config.create_vm(
                client, config, name, placement, mark=item["mark"], cancel_check=ctx.cancelled
            )
        except vsphere.NameTaken as exc:
            ctx.remove_leftover(item)  # the VM of that name is not ours: never remove it
            raise PermanentError(str(exc)) from None
        ctx.event(f"created {name} ({moref}), powered off")
        files = DatastoreFiles(client, datacenter_path(client, moref))
        done, started = 0, time.monotonic()
        for new in vm_config.new_disk_paths(config, name, placement.datastore):
            manifest = manifests[new.key]
            extent = flat_extent(new.descriptor)
            ctx.step("restore", f"writing {new.label} of restore point {plan.point_id} to {extent}")
            began = time.monotonic()
            try:
                files.upload(
                    extent,
                    restore_repository._stream(ctx, repo, manifest, done, total),
                    manifest.size,
                )
            except ChunkDamaged as exc:
                raise PermanentError(
                    restore_repository.damaged_message(plan.point_id, new.label, exc)
                ) from None
            text = restore_repository.descriptor_text(extent.name, new.capacity_bytes)
            files.upload(new.descriptor, [text], len(text))
            seconds = max(time.monotonic() - began, 1e-6)
            done += manifest.size
            rate = manifest.size / MiB / seconds
            rates.append(
                {
                    "key": new.key,
                    "label": new.label,
                    "bytes": manifest.size,
                    "seconds": round(seconds, 3),
                    "mib_per_s": round(rate, 1),
                }
            )
            ctx.event(
                f"{new.label}: {manifest.size / MiB:.1f} MiB written at {rate:.1f} MiB/s; "
                f"{done / MiB:.1f} of {total / MiB:.1f} MiB, "
                f"{done / MiB / max(time.monotonic() - started, 1e-6):.1f} MiB/s overall",
                step="restore",
            )
        attributes = dict(config.get("custom_attributes") or {})
        if (
            EXCHANGE_ATTRIBUTE in attributes
            and plan.vm_moref
            and vm_config.vm_exists(client, plan.vm_moref)
        ):
            # The original still runs: a second VM declaring its databases would make the next
            # inventory sync register a second Exchange server.
            attributes.pop(EXCHANGE_ATTRIBUTE)
            ctx.event(f"{EXCHANGE_ATTRIBUTE} not set on {name}: {plan.server_name} still exists")
        not_defined = vm_config.set_custom_attributes(client, moref, attributes)
        if not_defined:
            ctx.warning(
                f"custom attributes not defined in vCenter, not set: {', '.join(not_defined)}"
            )
        after = vm_config.read_config(client, moref)
        differences = [d.to_json() for d in vm_config.differences(config, after)]
        ctx.remove_leftover(item)  # whole: the new VM is what the operator asked for
        overall = total / MiB / max(time.monotonic() - started, 1e-6)
        if power_on:
            ctx.step("power_on", f"powering on {name}")
            try:
                vsphere.power_on(client, moref)
            except vsphere.VSphereError as exc:
                partial, note = True, f"; it could not be powered on: {exc}"
                ctx.event(f"could not power on {name}: {exc}", EventLevel.WARNING)
    finally:
        access.close()
    with ctx.db.session() as session:
        record(
            session,
            Actor(ctx.params.get("requested_by", "system"), "user"),
            "restore.whole_vm",
            "restore_point",
            plan.point_id,
            job=ctx.job_id,
            server=plan.server_name,
            target="new",
            new_vm=name,
            new_vm_moref=moref,
            datastore=placement.datastore,
            network=placement.network,
            network_connected=placement.connect_network,
        )
    ctx.progress(percent=100, bytes_done=total)
    return JobResult(
        partial=partial,
        message=(
            f"{plan.server_name} restored from the repository as new VM {name} "
            f"({len(rates)} disk(s), {overall:.1f} MiB/s){note}"
        ),
        details={
            "vm": moref,
            "name": name,
            "datastore": placement.datastore,
            "network": placement.network,
            "network_connected": placement.connect_network,
            "powered_on": power_on and not partial,
            "disks": rates,
            "bytes": total,
            "mib_per_s": round(overall, 1),
            "differences": differences,
        },
    )


def _run_original(ctx: JobContext) -> JobResult:
    plan, point = _load(ctx)
    repo = open_job_repository(ctx, plan.repository_id)
    config = captured_config(repo, point)
    access = for_job(ctx)
    try:
        client = access.client(plan.connection_id)
        differences = current_differences(client, config, plan.vm_moref)
        for d in differences:
            ctx.event(
                f"configuration differs: {d['field']} was {d['backed_up']!r}, is {d['now']!r}",
                EventLevel.WARNING,
            )
        ctx.step("power_off", f"powering {plan.server_name} off before its disks are overwritten")
        how = vsphere.shut_down(client, plan.vm_moref)
        ctx.event(f"{plan.server_name}: {how.replace('_', ' ')}")
    finally:
        access.close()
    started = time.monotonic()
    result = restore_repository.run_disk_restore(ctx)
    seconds = max(time.monotonic() - started, 1e-6)
    total = int(result.details.get("bytes") or 0)
    result.details.update(
        target="original",
        differences=differences,
        mib_per_s=round(total / MiB / seconds, 1),
    )
    result.message = f"every disk of {plan.server_name} restored over the original " + (
        f"from restore point {plan.point_id} ({total / MiB / seconds:.1f} MiB/s)"
    )
    return result


def cleanup(ctx: JobContext, leftovers: list[dict[str, Any]]) -> None:
    """Remove a VM this job was making and did not finish (found by name and mark)."""
    mine = [item for item in leftovers if item.get("kind") == LEFTOVER]
    if not mine:
        return
    access = for_job(ctx)
    try:
        for item in mine:
            client = access.client(item["connection_id"])
            found = vm_config.vm_made_by(client, item["folder"], item["name"], item["mark"])
            if found is not None:
                vsphere.destroy_vm(client, found)
                ctx.event(f"removed {item['name']} ({found}), a VM left half-made", step="cleanup")
            ctx.remove_leftover(item)
    finally:
        access.close()


def _applies_to(point: RestorePoint | None) -> bool:
    from app.domain.protection import ProtectionMethod

    return point is None or point.method == ProtectionMethod.VM_IMAGE


# Queued by its own endpoint (queue), which checks the request with check_request: it
# needs the database for the server and names a target, placement and confirmation.
WHOLE_VM = register(
    RestoreMode(
        names=(MODE,),
        applies_to=_applies_to,
        capabilities=("vcenter",),
        run=run,
        cleanup=cleanup,
    )
)
