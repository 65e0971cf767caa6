"""A VM's configuration as data: read at backup time, rebuilt as a new VM at restore time.

A whole-VM restore from the repository needs more than the disks' bytes: the hardware the
guest was installed on (hardware version, CPUs, memory, firmware), the controllers and keys
its disks hang off (the ``bulwark.exchange`` attribute names disks by key), the NICs and their
networks, the custom attributes, and the ``.vmx`` where the datastore serves it. All of it is
read in one ``RetrievePropertiesEx`` (the VM and the custom field definitions together) and
kept as a plain JSON document (:data:`SCHEMA`), stored with the disk images.

:func:`create_vm` builds a new VM from such a document with ``CreateVM_Task``: the same
controllers, disk keys and units, flat VMDKs in a folder of the VM's name on the chosen
datastore, NICs on the chosen network, disconnected unless asked (two copies of an Exchange
server must never meet on the wire), powered off. :func:`differences` compares a document with
the VM as it is now, field by field, for the operator to read before restoring over it.

Blocking calls; asyncio callers run them in a thread.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from ._collector import PC, moref_of, props, retrieve_one, translated_faults
from .cloning import MARK_KEY, NameTaken, find_in_folder
from .datastore_files import DatastoreFiles, DatastorePath
from .disks import FLAT, RDM_VIRTUAL
from .errors import ObjectNotFound, VSphereError
from .snapshot_disks import _backing_kind
from .tasks import CancelCheck, wait_for_task

SCHEMA = "bulwark-vm-config/1"
VMX_LIMIT = 1024 * 1024
"""Bytes of ``.vmx`` kept at most (a real one is a few KiB; anything larger is not one)."""
CREATE_TIMEOUT = 600.0

_PATHS = [
    "name",
    "parent",
    "resourcePool",
    "runtime.host",
    "runtime.powerState",
    "config.version",
    "config.guestId",
    "config.firmware",
    "config.annotation",
    "config.hardware.numCPU",
    "config.hardware.numCoresPerSocket",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.files.vmPathName",
    "config.instanceUuid",
    "customValue",
]
# Controllers vCenter gives every VM (PCI, IDE, PS/2, SIO) are not recreated; these are.
_STORAGE_CONTROLLERS = (
    vim.vm.device.VirtualSCSIController,
    vim.vm.device.VirtualSATAController,
    vim.vm.device.VirtualNVMEController,
)


class ConfigUnavailable(VSphereError):
    """The VM's configuration cannot be read (operator-readable)."""


def _device_type(dev: Any) -> str:
    return type(dev).__name__.rsplit(".", 1)[-1]


def _controllers(devices: list[Any]) -> list[dict[str, Any]]:
    out = []
    for dev in devices:
        if isinstance(dev, _STORAGE_CONTROLLERS):
            entry = {
                "key": int(dev.key),
                "type": _device_type(dev),
                "bus": int(dev.busNumber),
                "label": dev.deviceInfo.label if dev.deviceInfo else None,
            }
            if isinstance(dev, vim.vm.device.VirtualSCSIController):
                entry["sharing"] = str(dev.sharedBus or "noSharing")
            out.append(entry)
    return sorted(out, key=lambda c: c["key"])


def _disks(devices: list[Any]) -> list[dict[str, Any]]:
    out = []
    for dev in devices:
        if not isinstance(dev, vim.vm.device.VirtualDisk):
            continue
        backing = dev.backing
        out.append(
            {
                "key": int(dev.key),
                "label": dev.deviceInfo.label if dev.deviceInfo else f"disk {dev.key}",
                "controller_key": int(dev.controllerKey) if dev.controllerKey else None,
                "unit": int(dev.unitNumber) if dev.unitNumber is not None else None,
                "capacity_bytes": int(dev.capacityInBytes or (dev.capacityInKB or 0) * 1024),
                "backing": _backing_kind(backing),
                "file": str(getattr(backing, "fileName", "") or "") or None,
                "disk_mode": str(getattr(backing, "diskMode", "") or "") or None,
                "thin": bool(getattr(backing, "thinProvisioned", False)),
            }
        )
    return sorted(out, key=lambda d: d["key"])


def _nics(devices: list[Any]) -> list[dict[str, Any]]:
    out = []
    for dev in devices:
        if not isinstance(dev, vim.vm.device.VirtualEthernetCard):
            continue
        backing = dev.backing
        network = None
        if isinstance(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo):
            network = backing.deviceName
        elif isinstance(
            backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo
        ):
            network = f"dvportgroup:{backing.port.portgroupKey}"
        conn = dev.connectable
        out.append(
            {
                "key": int(dev.key),
                "label": dev.deviceInfo.label if dev.deviceInfo else f"NIC {dev.key}",
                "type": _device_type(dev),
                "network": network,
                "mac": dev.macAddress,
                "address_type": dev.addressType,
                "start_connected": bool(conn.startConnected) if conn else True,
            }
        )
    return sorted(out, key=lambda n: n["key"])


def read_config(client: Any, vm_moref: str, files: DatastoreFiles | None = None) -> dict[str, Any]:
    """The VM's configuration as a :data:`SCHEMA` document (one property read, plus the
    ``.vmx`` over ``/folder`` when ``files`` is given and the datastore serves it)."""
    vm = client.managed_object(vim.VirtualMachine, vm_moref)
    fields_manager = client.content.customFieldsManager
    objects = [PC.ObjectSpec(obj=vm, skip=False)]
    prop_set = [PC.PropertySpec(type=vim.VirtualMachine, pathSet=_PATHS)]
    if fields_manager is not None:
        objects.append(PC.ObjectSpec(obj=fields_manager, skip=False))
        prop_set.append(PC.PropertySpec(type=vim.CustomFieldsManager, pathSet=["field"]))
    spec = PC.FilterSpec(objectSet=objects, propSet=prop_set)
    with translated_faults(client, f"reading the configuration of {vm_moref}"):
        result = client.content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
    found = {moref_of(o.obj): props(o) for o in (result.objects if result else [])}
    got = found.get(vm_moref)
    if not got or "config.hardware.device" not in got:
        raise ObjectNotFound(vm_moref, "VM configuration")
    names: dict[int, str] = {}
    if fields_manager is not None:
        for field in found.get(moref_of(fields_manager), {}).get("field") or []:
            names[int(field.key)] = str(field.name)
    devices = list(got.get("config.hardware.device") or [])
    attributes = {
        names.get(int(v.key), f"field-{v.key}"): str(getattr(v, "value", "") or "")
        for v in got.get("customValue") or []
    }
    vmx_path = got.get("config.files.vmPathName")
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "name": got.get("name"),
        "moref": vm_moref,
        "instance_uuid": got.get("config.instanceUuid"),
        "version": got.get("config.version"),
        "guest_id": got.get("config.guestId"),
        "firmware": got.get("config.firmware"),
        "annotation": got.get("config.annotation") or "",
        "num_cpus": int(got.get("config.hardware.numCPU") or 0),
        "cores_per_socket": int(got.get("config.hardware.numCoresPerSocket") or 0),
        "memory_mb": int(got.get("config.hardware.memoryMB") or 0),
        "vm_path": vmx_path,
        "folder": moref_of(got.get("parent")),
        "resource_pool": moref_of(got.get("resourcePool")),
        "host": moref_of(got.get("runtime.host")),
        "controllers": _controllers(devices),
        "disks": _disks(devices),
        "nics": _nics(devices),
        "custom_attributes": dict(sorted(attributes.items())),
        "vmx": None,
    }
    if files is not None and vmx_path:
        doc["vmx"], doc["vmx_note"] = _read_vmx(files, vmx_path)
    return doc


def _read_vmx(files: DatastoreFiles, vmx_path: str) -> tuple[str | None, str | None]:
    """The ``.vmx`` text, or why not: missing it never fails a backup (vCenter may refuse
    reading a running VM's ``.vmx``; the properties above are what a restore uses)."""
    try:
        path = DatastorePath.parse(vmx_path)
        size = files.size(path)
        if size > VMX_LIMIT:
            return None, f"{vmx_path} is {size} bytes, too large for a .vmx: not kept"
        data = b"".join(files.iter_bytes(path)) if size else b""
    except (ValueError, VSphereError, OSError, http.client.HTTPException) as exc:
        return None, f"{vmx_path} could not be read ({exc})"
    return data.decode("utf-8", "replace"), None


# -- comparing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    field: str
    backed_up: Any
    now: Any

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "backed_up": self.backed_up, "now": self.now}


_SCALARS = (
    ("version", "hardware version"),
    ("guest_id", "guest OS"),
    ("firmware", "firmware"),
    ("num_cpus", "CPUs"),
    ("cores_per_socket", "cores per socket"),
    ("memory_mb", "memory (MiB)"),
)


def differences(backed_up: dict[str, Any], now: dict[str, Any]) -> list[Difference]:
    """Field-by-field differences between a captured configuration and another (the VM as it
    is now, or a VM restored from it). Identity (name, moref, UUIDs, MACs, files, placement)
    is not compared: a restored VM differs there by design."""
    out: list[Difference] = []
    for key, label in _SCALARS:
        if backed_up.get(key) != now.get(key):
            out.append(Difference(label, backed_up.get(key), now.get(key)))

    def by_key(doc: dict[str, Any], what: str) -> dict[int, dict[str, Any]]:
        return {int(item["key"]): item for item in doc.get(what) or []}

    for what, fields in (
        ("controllers", ("type", "bus")),
        ("disks", ("controller_key", "unit", "capacity_bytes")),
        ("nics", ("type", "network")),
    ):
        old, new = by_key(backed_up, what), by_key(now, what)
        for key in sorted(old.keys() | new.keys()):
            a, b = old.get(key), new.get(key)
            label = (a or b or {}).get("label") or f"{what[:-1]} {key}"
            if a is None or b is None:
                out.append(Difference(f"{label} (key {key})", _brief(a), _brief(b)))
                continue
            for f in fields:
                if a.get(f) != b.get(f):
                    out.append(Difference(f"{label} (key {key}) {f}", a.get(f), b.get(f)))
    old_attrs = backed_up.get("custom_attributes") or {}
    new_attrs = now.get("custom_attributes") or {}
    for name in sorted(old_attrs.keys() | new_attrs.keys()):
        if old_attrs.get(name) != new_attrs.get(name):
            out.append(
                Difference(f"custom attribute {name}", old_attrs.get(name), new_attrs.get(name))
            )
    return out


def _brief(item: dict[str, Any] | None) -> str | None:
    if item is None:
        return None
    size = item.get("capacity_bytes")
    extra = f", {size // (1024 * 1024)} MiB" if size else ""
    return f"{item.get('type') or item.get('backing') or 'present'}{extra}"


# -- creating a VM from a configuration -----------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where the new VM goes: a VM folder, a resource pool (with a host, or a cluster's pool
    and no host for DRS to choose), a datastore (by name) and a network (by name)."""

    folder: str
    resource_pool: str
    host: str | None
    datastore: str
    network: str | None
    connect_network: bool = False


@dataclass(frozen=True)
class NewDisk:
    key: int
    label: str
    descriptor: DatastorePath
    capacity_bytes: int


def restorable_disks(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Disks an image can hold: flat VMDKs and virtual-mode RDMs (which come back as VMDKs).
    Physical-mode RDMs are the array's to restore."""
    return [d for d in config.get("disks") or [] if d.get("backing") in (FLAT, RDM_VIRTUAL)]


def new_disk_paths(config: dict[str, Any], name: str, datastore: str) -> list[NewDisk]:
    """Where each restorable disk of ``config`` goes for a new VM ``name``: ``[ds]
    name/name.vmdk``, ``name_1.vmdk`` …, in key order (vCenter's own naming)."""
    out = []
    for n, disk in enumerate(restorable_disks(config)):
        stem = name if n == 0 else f"{name}_{n}"
        out.append(
            NewDisk(
                int(disk["key"]),
                disk.get("label") or f"disk {disk['key']}",
                DatastorePath(datastore, f"{name}/{stem}.vmdk"),
                int(disk["capacity_bytes"]),
            )
        )
    return out


def config_spec(
    config: dict[str, Any], name: str, placement: Placement, mark: str
) -> vim.vm.ConfigSpec:
    """The ``CreateVM_Task`` spec for a new VM ``name`` built from ``config``."""
    changes = []
    for ctl in config.get("controllers") or []:
        kind = getattr(vim.vm.device, ctl["type"], None)
        if kind is None:
            raise ConfigUnavailable(f"controller type {ctl['type']} is unknown to this client")
        device = kind(key=int(ctl["key"]), busNumber=int(ctl["bus"]))
        if isinstance(device, vim.vm.device.VirtualSCSIController):
            device.sharedBus = ctl.get("sharing") or "noSharing"
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=device))
    disks = {d["key"]: d for d in config.get("disks") or []}
    for new in new_disk_paths(config, name, placement.datastore):
        old = disks[new.key]
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=str(new.descriptor), diskMode="persistent", thinProvisioned=True
        )
        device = vim.vm.device.VirtualDisk(
            key=new.key,
            controllerKey=old.get("controller_key"),
            unitNumber=old.get("unit"),
            capacityInKB=new.capacity_bytes // 1024,
            capacityInBytes=new.capacity_bytes,
            backing=backing,
            deviceInfo=vim.Description(label=new.label, summary=f"{new.capacity_bytes} bytes"),
        )
        changes.append(
            vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=device)
        )
    for nic in config.get("nics") or []:
        kind = getattr(vim.vm.device, nic["type"], None) or vim.vm.device.VirtualVmxnet3
        network = placement.network or nic.get("network")
        device = kind(
            key=int(nic["key"]),
            addressType="generated",  # a new VM gets its own MAC: the original may still run
            backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=network),
            connectable=vim.vm.device.VirtualDevice.ConnectInfo(
                startConnected=placement.connect_network,
                connected=False,
                allowGuestControl=True,
            ),
            deviceInfo=vim.Description(label=nic.get("label") or "Network adapter"),
        )
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=device))
    return vim.vm.ConfigSpec(
        name=name,
        version=config.get("version") or None,
        guestId=config.get("guest_id") or None,
        firmware=config.get("firmware") or None,
        annotation=config.get("annotation") or None,
        numCPUs=config.get("num_cpus") or None,
        numCoresPerSocket=config.get("cores_per_socket") or None,
        memoryMB=config.get("memory_mb") or None,
        files=vim.vm.FileInfo(vmPathName=f"[{placement.datastore}] {name}/{name}.vmx"),
        deviceChange=changes,
        extraConfig=[vim.option.OptionValue(key=MARK_KEY, value=mark)],
    )


def create_vm(
    client: Any,
    config: dict[str, Any],
    name: str,
    placement: Placement,
    *,
    mark: str,
    cancel_check: CancelCheck | None = None,
    timeout: float = CREATE_TIMEOUT,
) -> str:
    """Create VM ``name`` from ``config`` (powered off, marked with ``mark`` so cleanup finds
    only a VM this restore made); its moref. Raises :class:`NameTaken` if the name is used."""
    folder = client.managed_object(vim.Folder, placement.folder)
    if find_in_folder(client, folder, name) is not None:
        raise NameTaken(f"a VM named {name!r} already exists in that folder")
    spec = config_spec(config, name, placement, mark)
    pool = client.managed_object(vim.ResourcePool, placement.resource_pool)
    host = client.managed_object(vim.HostSystem, placement.host) if placement.host else None
    what = f"creating VM {name!r} from the configuration of {config.get('name')}"
    with translated_faults(client, what):
        task = folder.CreateVM_Task(config=spec, pool=pool, host=host)
    result = wait_for_task(client, task, timeout, None, cancel_check, description=what)
    return moref_of(result) or ""


def compute_placement(client: Any, moref: str) -> tuple[str, str | None]:
    """``(resource pool, host)`` for a host moref (its cluster's or own pool, that host) or
    a cluster moref (its root pool, no host: vCenter's placement chooses)."""
    kind = vim.HostSystem if moref.startswith("host-") else vim.ComputeResource
    obj = client.managed_object(kind, moref)
    with translated_faults(client, f"reading where {moref} places VMs"):
        if kind is vim.HostSystem:
            parent = retrieve_one(client, obj, vim.HostSystem, ["parent"]).get("parent")
            if parent is None:
                raise ObjectNotFound(moref, "host's cluster")
            pool = retrieve_one(client, parent, vim.ComputeResource, ["resourcePool"])
            return moref_of(pool.get("resourcePool")) or "", moref
        pool = retrieve_one(client, obj, vim.ComputeResource, ["resourcePool"])
        return moref_of(pool.get("resourcePool")) or "", None


def vm_exists(client: Any, vm_moref: str) -> bool:
    vm = client.managed_object(vim.VirtualMachine, vm_moref)
    try:
        with translated_faults(client, f"looking for {vm_moref}"):
            retrieve_one(client, vm, vim.VirtualMachine, ["name"])
    except ObjectNotFound:
        return False
    return True


def vm_made_by(client: Any, folder_moref: str, name: str, mark: str) -> str | None:
    """The moref of the VM called ``name`` in ``folder_moref`` if it carries ``mark``."""
    folder = client.managed_object(vim.Folder, folder_moref)
    with translated_faults(client, f"looking for {name!r}"):
        found = find_in_folder(client, folder, name)
        if found is None:
            return None
        extra = retrieve_one(
            client,
            client.managed_object(vim.VirtualMachine, found),
            vim.VirtualMachine,
            ["config.extraConfig"],
        ).get("config.extraConfig")
    marks = {o.key: str(o.value) for o in extra or []}
    return found if marks.get(MARK_KEY) == mark else None


def set_custom_attributes(client: Any, vm_moref: str, values: dict[str, str]) -> list[str]:
    """Set the custom attributes ``values`` that vCenter defines on the VM; the names it
    does not define are returned (not created: defining attributes is vCenter admin work)."""
    manager = client.content.customFieldsManager
    vm = client.managed_object(vim.VirtualMachine, vm_moref)
    with translated_faults(client, "reading custom attribute definitions"):
        defined = {
            str(f.name): int(f.key)
            for f in retrieve_one(client, manager, vim.CustomFieldsManager, ["field"]).get(
                "field", []
            )
        }
    missing = []
    for name, value in values.items():
        if name not in defined:
            missing.append(name)
            continue
        with translated_faults(client, f"setting custom attribute {name} on {vm_moref}"):
            manager.SetField(entity=vm, key=defined[name], value=value)
    return missing


def inventory_choices(client: Any) -> dict[str, list[dict[str, Any]]]:
    """VM folders, hosts, clusters, datastores and networks by name, for the restore wizard
    (one container view read)."""
    from ._collector import retrieve_view_pages

    kinds = {
        vim.Folder: ["name", "childType"],
        vim.HostSystem: ["name", "parent"],
        vim.ClusterComputeResource: ["name", "resourcePool"],
        vim.ComputeResource: ["name", "resourcePool"],
        vim.Datastore: ["name", "summary.freeSpace"],
        vim.Network: ["name"],
    }
    out: dict[str, list[dict[str, Any]]] = {
        "folders": [],
        "hosts": [],
        "clusters": [],
        "datastores": [],
        "networks": [],
    }
    with translated_faults(client, "reading the inventory for the restore"):
        for page in retrieve_view_pages(client, kinds, 1000):
            for obj in page:
                p, ref = props(obj), moref_of(obj.obj)
                if isinstance(obj.obj, vim.Folder):
                    if "VirtualMachine" in (p.get("childType") or []):
                        out["folders"].append({"moref": ref, "name": p.get("name")})
                elif isinstance(obj.obj, vim.HostSystem):
                    out["hosts"].append(
                        {"moref": ref, "name": p.get("name"), "parent": moref_of(p.get("parent"))}
                    )
                elif isinstance(obj.obj, vim.ClusterComputeResource | vim.ComputeResource):
                    out["clusters"].append(
                        {
                            "moref": ref,
                            "name": p.get("name"),
                            "resource_pool": moref_of(p.get("resourcePool")),
                        }
                    )
                elif isinstance(obj.obj, vim.Datastore):
                    out["datastores"].append(
                        {"moref": ref, "name": p.get("name"), "free": p.get("summary.freeSpace")}
                    )
                elif isinstance(obj.obj, vim.Network):
                    out["networks"].append({"moref": ref, "name": p.get("name")})
    for items in out.values():
        items.sort(key=lambda i: str(i.get("name")))
    return out


__all__ = [
    "SCHEMA",
    "ConfigUnavailable",
    "Difference",
    "NameTaken",
    "NewDisk",
    "Placement",
    "config_spec",
    "compute_placement",
    "create_vm",
    "differences",
    "inventory_choices",
    "new_disk_paths",
    "read_config",
    "restorable_disks",
    "set_custom_attributes",
    "vm_exists",
    "vm_made_by",
]
