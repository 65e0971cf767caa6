"""Reading the vSphere inventory: datacenters, clusters, hosts, datastores and VMs with disks.

:func:`read_inventory` reads everything through two container views (one over the
infrastructure types, one over VMs) and the PropertyCollector, page by page: a few round trips
for the whole estate, whatever its size. VM pages are parsed by the lean reader in ``_lean``
rather than by pyVmomi (which spends most of a bulk read building objects for devices nobody
asked about), and only two pages are in memory at a time (:func:`iter_vms` streams VMs for
callers that store them as they come).

:func:`read_vms_naive` reads VMs the way a first script would, through pyVmomi attribute access,
one round trip per property per VM. It exists only so that the benchmark can show the
difference; nothing in Bulwark should call it.

All calls block; asyncio callers run them in a thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyVmomi import vim

from ._collector import moref_of, props, retrieve_view_pages, translated_faults
from ._lean import retrieve_view_pages_lean
from .disks import VirtualDisk, disks_of
from .snapshots import flatten_tree

DEFAULT_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Datacenter:
    moref: str
    name: str


@dataclass(frozen=True, slots=True)
class Cluster:
    moref: str
    name: str
    datacenter: str | None
    hosts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Host:
    moref: str
    name: str
    datacenter: str | None
    cluster: str | None  # None for a standalone host
    connection_state: str | None
    power_state: str | None
    in_maintenance_mode: bool
    product: str | None  # e.g. "VMware ESXi 8.0.2 build-..."
    datastores: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Datastore:
    moref: str
    name: str
    datacenter: str | None
    type: str | None  # VMFS, NFS, NFS41, vsan, VVOL
    capacity_bytes: int
    free_bytes: int
    accessible: bool
    shared: bool  # mounted by more than one host
    hosts: tuple[str, ...]
    extents: tuple[str, ...]  # canonical names (naa...) of the LUNs under a VMFS volume


@dataclass(frozen=True, slots=True)
class VirtualMachine:
    moref: str
    name: str
    instance_uuid: str | None  # vCenter's id for the VM
    bios_uuid: str | None  # the id the guest sees (SMBIOS)
    power_state: str | None  # poweredOn, poweredOff, suspended
    connection_state: str | None
    tools_status: str | None  # toolsOk, toolsOld, toolsNotRunning, toolsNotInstalled
    tools_running_status: str | None  # guestToolsRunning, guestToolsNotRunning ...
    guest_os: str | None  # "Microsoft Windows Server 2016 or later (64-bit)"
    guest_id: str | None
    guest_hostname: str | None
    guest_ip: str | None
    host: str | None  # moref of the ESXi host running it
    datacenter: str | None
    folder_path: str | None  # VM folder below the datacenter, e.g. "Workloads/SQL"
    cbt_enabled: bool | None  # changed block tracking (config.changeTrackingEnabled)
    is_template: bool
    num_cpu: int | None
    memory_mb: int | None
    notes: str | None
    datastores: tuple[str, ...]
    snapshot_names: tuple[str, ...]  # parents before children
    current_snapshot: str | None  # moref
    snapshot_morefs: tuple[str, ...]  # in the order of snapshot_names
    custom_attributes: Mapping[str, str] = field(hash=False)  # by attribute NAME
    disks: tuple[VirtualDisk, ...] = field(hash=False)

    @property
    def has_snapshots(self) -> bool:
        return bool(self.snapshot_names)

    def disk(self, key: int) -> VirtualDisk | None:
        return next((d for d in self.disks if d.key == key), None)


@dataclass(slots=True)
class Inventory:
    about: str  # product and version of the server read
    datacenters: list[Datacenter]
    clusters: list[Cluster]
    hosts: list[Host]
    datastores: list[Datastore]
    vms: list[VirtualMachine]
    # When the read began: what was created after it may be missing from it, not gone.
    read_started: datetime | None = field(default=None, compare=False)

    def vm_named(self, name: str) -> VirtualMachine | None:
        return next((vm for vm in self.vms if vm.name == name), None)

    def vm(self, moref: str) -> VirtualMachine | None:
        return next((vm for vm in self.vms if vm.moref == moref), None)


# What is read of each type. Only these paths travel: never whole ``config`` objects.
INFRASTRUCTURE_PROPERTIES: dict[type, tuple[str, ...]] = {
    vim.Folder: ("name", "parent"),
    vim.Datacenter: ("name", "parent"),
    vim.ComputeResource: ("name", "parent", "host"),  # clusters too (a subtype)
    vim.HostSystem: (
        "name",
        "parent",
        "runtime.connectionState",
        "runtime.powerState",
        "runtime.inMaintenanceMode",
        "summary.config.product.fullName",
        "datastore",
    ),
    vim.Datastore: ("name", "parent", "summary", "host", "info"),
}

VM_PROPERTIES: tuple[str, ...] = (
    "name",
    "parent",
    "config.instanceUuid",
    "config.uuid",
    "config.guestFullName",
    "config.guestId",
    "config.template",
    "config.changeTrackingEnabled",
    "config.annotation",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "runtime.powerState",
    "runtime.connectionState",
    "runtime.host",
    "guest.toolsStatus",
    "guest.toolsRunningStatus",
    "guest.hostName",
    "guest.ipAddress",
    "snapshot",
    "customValue",
    "datastore",
)


class _Tree:
    """Names and parents of folders, datacenters and compute resources, to place objects."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[type, str, str | None]] = {}  # moref -> (type, name, parent)
        self._datacenter: dict[str, str | None] = {}

    def add(self, obj: Any, name: str, parent: str | None) -> None:
        self.nodes[obj._moId] = (type(obj), name, parent)

    def datacenter_of(self, parent: str | None) -> str | None:
        chain: list[str] = []
        found = None
        node = parent
        while node is not None and node in self.nodes:
            if node in self._datacenter:
                found = self._datacenter[node]
                break
            kind, _, up = self.nodes[node]
            chain.append(node)
            if issubclass(kind, vim.Datacenter):
                found = node
                break
            node = up
        for n in chain:
            self._datacenter[n] = found
        return found

    def folder_path(self, parent: str | None) -> str | None:
        """Folder names from below the datacenter's VM folder down to ``parent``."""
        names: list[str] = []
        node = parent
        while node is not None and node in self.nodes:
            kind, name, up = self.nodes[node]
            if not issubclass(kind, vim.Folder):
                return None
            if up in self.nodes and issubclass(self.nodes[up][0], vim.Datacenter):
                return "/".join(reversed(names))
            names.append(name)
            node = up
        return None


def custom_field_names(client: Any) -> dict[int, str]:
    """Custom attribute keys to names, from the CustomFieldsManager (empty on a bare ESXi)."""
    manager = client.content.customFieldsManager
    if manager is None:
        return {}
    return {int(f.key): str(f.name) for f in manager.field or []}


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _vm_from(
    moref: str, p: Mapping[str, Any], tree: _Tree, fields: Mapping[int, str]
) -> VirtualMachine:
    """A :class:`VirtualMachine` from normalised properties: morefs as strings, the device list
    as disks, the snapshot tree as (names, current snapshot), custom values as (key, value)."""
    parent = p.get("parent")
    names, current, snapshot_morefs = p.get("snapshot") or ((), None, ())
    return VirtualMachine(
        moref=moref,
        name=str(p.get("name")),
        instance_uuid=_str(p.get("config.instanceUuid")),
        bios_uuid=_str(p.get("config.uuid")),
        power_state=_str(p.get("runtime.powerState")),
        connection_state=_str(p.get("runtime.connectionState")),
        tools_status=_str(p.get("guest.toolsStatus")),
        tools_running_status=_str(p.get("guest.toolsRunningStatus")),
        guest_os=_str(p.get("config.guestFullName")),
        guest_id=_str(p.get("config.guestId")),
        guest_hostname=_str(p.get("guest.hostName")) or None,
        guest_ip=_str(p.get("guest.ipAddress")) or None,
        host=_str(p.get("runtime.host")),
        datacenter=tree.datacenter_of(parent),
        folder_path=tree.folder_path(parent),
        cbt_enabled=p.get("config.changeTrackingEnabled"),
        is_template=bool(p.get("config.template")),
        num_cpu=p.get("config.hardware.numCPU"),
        memory_mb=p.get("config.hardware.memoryMB"),
        notes=_str(p.get("config.annotation")) or None,
        datastores=tuple(p.get("datastore") or ()),
        snapshot_names=tuple(names),
        current_snapshot=current,
        snapshot_morefs=tuple(snapshot_morefs),
        custom_attributes={
            fields.get(key, str(key)): value for key, value in p.get("customValue") or ()
        },
        disks=tuple(p.get("config.hardware.device") or ()),
    )


def _normalised(p: Mapping[str, Any]) -> dict[str, Any]:
    """pyVmomi property values in the form :func:`_vm_from` takes (see ``_lean``)."""
    out = dict(p)
    for path in ("parent", "runtime.host"):
        out[path] = moref_of(p.get(path))
    out["datastore"] = [moref_of(d) for d in p.get("datastore") or []]
    out["customValue"] = [
        (int(v.key), str(v.value)) for v in p.get("customValue") or [] if hasattr(v, "value")
    ]
    snapshot = p.get("snapshot")
    if snapshot is not None:
        tree = flatten_tree(snapshot.rootSnapshotList, moref_of(snapshot.currentSnapshot))
        out["snapshot"] = (
            tuple(s.name for s in tree),
            moref_of(snapshot.currentSnapshot),
            tuple(s.moref for s in tree),
        )
    out["config.hardware.device"] = disks_of(p.get("config.hardware.device"))
    return out


def _read_infrastructure(client: Any, page_size: int) -> tuple[_Tree, list[Any]]:
    tree = _Tree()
    contents: list[Any] = []
    for page in retrieve_view_pages(client, INFRASTRUCTURE_PROPERTIES, page_size):
        for content in page:
            p = props(content)
            tree.add(content.obj, str(p.get("name", "")), moref_of(p.get("parent")))
            if not isinstance(content.obj, vim.Folder):
                contents.append(content)
    return tree, contents


def iter_vms(
    client: Any,
    page_size: int = DEFAULT_PAGE_SIZE,
    *,
    _tree: _Tree | None = None,
) -> Iterator[VirtualMachine]:
    """Every VM (and template) with its disks, streamed page by page."""
    with translated_faults(client, "reading VMs"):
        tree = _tree if _tree is not None else _read_infrastructure(client, page_size)[0]
        fields = custom_field_names(client)
        for page in retrieve_view_pages_lean(client, vim.VirtualMachine, VM_PROPERTIES, page_size):
            for moref, found in page:
                yield _vm_from(moref, found, tree, fields)


def read_inventory(client: Any, page_size: int = DEFAULT_PAGE_SIZE) -> Inventory:
    """The whole inventory, in a handful of round trips (see the module docstring)."""
    started = datetime.now(UTC)
    with translated_faults(client, "reading the inventory"):
        tree, contents = _read_infrastructure(client, page_size)
        inventory = Inventory(
            about=client.about,
            datacenters=[],
            clusters=[],
            hosts=[],
            datastores=[],
            vms=[],
            read_started=started,
        )
        for content in contents:
            obj, p = content.obj, props(content)
            moref, name = obj._moId, str(p.get("name", ""))
            parent = moref_of(p.get("parent"))
            if isinstance(obj, vim.Datacenter):
                inventory.datacenters.append(Datacenter(moref, name))
            elif isinstance(obj, vim.ClusterComputeResource):
                hosts = tuple(moref_of(h) for h in p.get("host") or [])
                inventory.clusters.append(Cluster(moref, name, tree.datacenter_of(parent), hosts))
            elif isinstance(obj, vim.HostSystem):
                inventory.hosts.append(_host_from(moref, name, parent, p, tree))
            elif isinstance(obj, vim.Datastore):
                inventory.datastores.append(_datastore_from(moref, name, parent, p, tree))
        inventory.vms.extend(iter_vms(client, page_size, _tree=tree))
    return inventory


def _host_from(
    moref: str, name: str, parent: str | None, p: Mapping[str, Any], tree: _Tree
) -> Host:
    parent_kind = tree.nodes.get(parent or "", (None,))[0]
    is_cluster = parent_kind is not None and issubclass(parent_kind, vim.ClusterComputeResource)
    return Host(
        moref=moref,
        name=name,
        datacenter=tree.datacenter_of(parent),
        cluster=parent if is_cluster else None,
        connection_state=_str(p.get("runtime.connectionState")),
        power_state=_str(p.get("runtime.powerState")),
        in_maintenance_mode=bool(p.get("runtime.inMaintenanceMode")),
        product=_str(p.get("summary.config.product.fullName")),
        datastores=tuple(moref_of(d) for d in p.get("datastore") or []),
    )


def _datastore_from(
    moref: str, name: str, parent: str | None, p: Mapping[str, Any], tree: _Tree
) -> Datastore:
    summary = p.get("summary")
    info = p.get("info")
    extents: tuple[str, ...] = ()
    if isinstance(info, vim.host.VmfsDatastoreInfo) and info.vmfs is not None:
        extents = tuple(str(e.diskName) for e in info.vmfs.extent or [])
    hosts = tuple(moref_of(m.key) for m in p.get("host") or [])
    return Datastore(
        moref=moref,
        name=name,
        datacenter=tree.datacenter_of(parent),
        type=_str(summary.type) if summary else None,
        capacity_bytes=int(summary.capacity or 0) if summary else 0,
        free_bytes=int(summary.freeSpace or 0) if summary else 0,
        accessible=bool(summary.accessible) if summary else False,
        shared=bool(summary.multipleHostAccess) if summary else len(hosts) > 1,
        hosts=hosts,
        extents=extents,
    )


def read_vms_naive(client: Any, limit: int | None = None) -> list[VirtualMachine]:
    """VMs read one property at a time through pyVmomi attributes (benchmark reference only).

    Produces the same :class:`VirtualMachine` records as :func:`iter_vms`, including the
    datacenter and folder, which the naive way finds by walking up the parents.
    """
    with translated_faults(client, "reading VMs one by one"):
        view = client.content.viewManager.CreateContainerView(
            client.content.rootFolder, [vim.VirtualMachine], True
        )
        try:
            vms = list(view.view)
        finally:
            view.DestroyView()
        if limit is not None:
            vms = vms[:limit]
        fields = custom_field_names(client)
        return [_read_vm_naively(vm, fields) for vm in vms]


def _read_vm_naively(vm: Any, fields: Mapping[int, str]) -> VirtualMachine:
    tree = _Tree()
    parent = vm.parent
    node = parent
    while node is not None:  # up to the datacenter, one object at a time
        up = node.parent
        tree.add(node, str(node.name), moref_of(up))
        if isinstance(node, vim.Datacenter):
            break
        node = up
    config = vm.config
    runtime = vm.runtime
    guest = vm.guest
    p: dict[str, Any] = {
        "name": vm.name,
        "parent": parent,
        "runtime.powerState": runtime.powerState,
        "runtime.connectionState": runtime.connectionState,
        "runtime.host": runtime.host,
        "guest.toolsStatus": guest.toolsStatus if guest else None,
        "guest.toolsRunningStatus": guest.toolsRunningStatus if guest else None,
        "guest.hostName": guest.hostName if guest else None,
        "guest.ipAddress": guest.ipAddress if guest else None,
        "snapshot": vm.snapshot,
        "customValue": vm.customValue,
        "datastore": vm.datastore,
    }
    if config is not None:
        p.update(
            {
                "config.instanceUuid": config.instanceUuid,
                "config.uuid": config.uuid,
                "config.guestFullName": config.guestFullName,
                "config.guestId": config.guestId,
                "config.template": config.template,
                "config.changeTrackingEnabled": config.changeTrackingEnabled,
                "config.annotation": config.annotation,
                "config.hardware.numCPU": config.hardware.numCPU,
                "config.hardware.memoryMB": config.hardware.memoryMB,
                "config.hardware.device": config.hardware.device,
            }
        )
    return _vm_from(vm._moId, _normalised(p), tree, fields)
