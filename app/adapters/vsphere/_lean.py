"""A lean reader for pages of VM properties from the PropertyCollector.

pyVmomi turns every XML element of a response into a Python object: about 190 of them per VM
for the properties the inventory reads, most for devices Bulwark ignores (keyboard, video card,
PCI bus ...). At 5,000 VMs that is close to a million objects and half a minute of CPU, which is
why a bulk read would be barely faster than reading VM by VM.

This module sends the very same SOAP request through pyVmomi's own stub (its serializer,
session cookie and connection pool), parses the answer with ElementTree's C parser one
ObjectContent at a time, and converts only what the inventory uses. Faults still go through
pyVmomi's deserializer, so errors are the usual pyVmomi exceptions. Types are resolved through
pyVmomi's type registry, so subtypes (ParaVirtualSCSIController is a SCSI controller) are
recognised as pyVmomi would.

This relies on pyVmomi's stub methods (SerializeRequest, GetConnection, ReturnConnection),
which pyproject pins with pyVmomi itself.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from http.client import HTTPException
from typing import Any
from xml.etree import ElementTree

from pyVmomi import vim, vmodl
from pyVmomi.SoapAdapter import SoapResponseDeserializer
from pyVmomi.VmomiSupport import GetWsdlType

from ._collector import release, view_filter
from .disks import DiskFacts, controller_kind, make_disk

NS = "{urn:vim25}"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
PARSE_CHUNK = 64 * 1024


@functools.lru_cache(maxsize=512)
def wsdl_class(xsi_type: str | None) -> type | None:
    """The pyVmomi class for an xsi:type such as "VirtualDisk" or "vim25:VirtualDisk"."""
    if not xsi_type:
        return None
    try:
        return GetWsdlType("urn:vim25", xsi_type.rsplit(":", 1)[-1])
    except KeyError:
        return None


def _text(e: ElementTree.Element | None) -> str | None:
    if e is None:
        return None
    return e.text or ""


def _child_text(e: ElementTree.Element, name: str) -> str | None:
    return _text(e.find(NS + name))


def _int(text: str | None) -> int | None:
    return int(text) if text not in (None, "") else None


def _bool(text: str | None) -> bool | None:
    return None if text in (None, "") else text in ("true", "1")


def _morefs(val: ElementTree.Element) -> list[str]:
    return [c.text or "" for c in val]


def _custom_values(val: ElementTree.Element) -> list[tuple[int, str]]:
    out = []
    for c in val:
        value = c.find(NS + "value")
        if value is not None:  # a plain CustomFieldValue carries no value
            out.append((int(_child_text(c, "key") or 0), value.text or ""))
    return out


def _snapshot(
    val: ElementTree.Element,
) -> tuple[tuple[str, ...], str | None, tuple[str, ...]]:
    names: list[str] = []
    morefs: list[str] = []

    def walk(nodes: Iterator[ElementTree.Element]) -> None:
        for node in nodes:
            names.append(_child_text(node, "name") or "")
            morefs.append(_child_text(node, "snapshot") or "")
            walk(node.iterfind(NS + "childSnapshotList"))

    walk(val.iterfind(NS + "rootSnapshotList"))
    return tuple(names), _child_text(val, "currentSnapshot"), tuple(morefs)


def _disks(val: ElementTree.Element) -> tuple[Any, ...]:
    controllers: dict[int, tuple[str, int]] = {}
    disk_elements = []
    for device in val:
        cls = wsdl_class(device.get(XSI_TYPE))
        if cls is None:
            continue
        if issubclass(cls, vim.vm.device.VirtualDisk):
            disk_elements.append(device)
            continue
        kind = controller_kind(cls)
        bus = _int(_child_text(device, "busNumber"))
        if kind is not None and bus is not None:
            controllers[int(_child_text(device, "key") or 0)] = (kind, bus)
    disks = []
    for d in disk_elements:
        backing = d.find(NS + "backing")
        info = d.find(NS + "deviceInfo")

        def field(name: str, backing: ElementTree.Element | None = backing) -> str | None:
            return _child_text(backing, name) if backing is not None else None

        disks.append(
            make_disk(
                DiskFacts(
                    key=int(_child_text(d, "key") or 0),
                    label=_child_text(info, "label") if info is not None else None,
                    capacity_bytes=_int(_child_text(d, "capacityInBytes")),
                    capacity_kb=_int(_child_text(d, "capacityInKB")),
                    controller_key=_int(_child_text(d, "controllerKey")),
                    unit_number=_int(_child_text(d, "unitNumber")),
                    backing_class=wsdl_class(backing.get(XSI_TYPE))
                    if backing is not None
                    else None,
                    disk_mode=field("diskMode"),
                    datastore=field("datastore"),
                    file_name=field("fileName"),
                    disk_uuid=field("uuid"),
                    lun_uuid=field("lunUuid"),
                    device_name=field("deviceName"),
                    compatibility_mode=field("compatibilityMode"),
                ),
                controllers,
            )
        )
    return tuple(disks)


# How each property the inventory reads is converted; anything else stays text.
CONVERTERS: dict[str, Callable[[ElementTree.Element], Any]] = {
    "config.template": lambda v: _bool(v.text),
    "config.changeTrackingEnabled": lambda v: _bool(v.text),
    "config.hardware.numCPU": lambda v: _int(v.text),
    "config.hardware.memoryMB": lambda v: _int(v.text),
    "config.hardware.device": _disks,
    "datastore": _morefs,
    "customValue": _custom_values,
    "snapshot": _snapshot,
}


def _convert(name: str, val: ElementTree.Element) -> Any:
    convert = CONVERTERS.get(name)
    return convert(val) if convert is not None else (val.text or "")


def parse_page(body: bytes) -> tuple[str | None, list[tuple[str, dict[str, Any]]]]:
    """(token, [(moref, {property path: value})]) of a RetrievePropertiesEx answer.

    The whole page is parsed in C first (feeding every element to Python, as iterparse does,
    costs more than the rest of the read); the tree lives only as long as this call, so memory
    stays bounded by the page size. It is fed in chunks so that the thread fetching the next
    page gets the interpreter between them: one call over megabytes would hold it throughout.
    """
    parser = ElementTree.XMLParser()
    view = memoryview(body)
    for start in range(0, len(body), PARSE_CHUNK):
        parser.feed(view[start : start + PARSE_CHUNK])
    root = parser.close()
    returnval = root.find(f".//{NS}returnval")
    if returnval is None:  # an empty result
        return None, []
    objects = []
    for elem in returnval.iterfind(NS + "objects"):
        found = {}
        for prop in elem.iterfind(NS + "propSet"):
            val = prop.find(NS + "val")
            if val is not None:
                name = _child_text(prop, "name") or ""
                found[name] = _convert(name, val)
        objects.append((_child_text(elem, "obj") or "", found))
    return _child_text(returnval, "token") or None, objects


def invoke_raw(client: Any, method: str, args: Sequence[Any]) -> bytes:
    """Call a PropertyCollector method through pyVmomi's stub; return the raw SOAP answer."""
    stub = client.stub
    collector = client.content.propertyCollector
    info = vmodl.query.PropertyCollector._GetMethodInfo(method)
    request = stub.SerializeRequest(collector, info, list(args))
    headers = {
        "Cookie": stub.cookie,
        "SOAPAction": stub.versionId,
        "Content-Type": "text/xml; charset=UTF-8",
    }
    conn = stub.GetConnection()
    try:
        conn.request("POST", stub.path, request, headers)
        response = conn.getresponse()
        body = response.read()
    except (OSError, HTTPException):
        conn.close()
        stub.DropConnections()
        raise
    if response.status == 200:
        stub.ReturnConnection(conn)
        return body
    if response.status == 500:  # a SOAP fault: let pyVmomi build and raise it
        stub.ReturnConnection(conn)
        fault = SoapResponseDeserializer(stub).Deserialize(io.BytesIO(body), info.result)
        raise fault
    conn.close()
    raise HTTPException(f"{response.status} {response.reason}")


def peek_token(body: bytes) -> str | None:
    """The paging token of an answer, found without parsing it (RetrieveResult puts the token
    before the objects). XML escapes "<" in values, so the tag cannot occur inside one."""
    start = body.find(b"<token>")
    end = body.find(b"</token>", start) if start >= 0 else -1
    if end < 0:
        return None
    return body[start + len(b"<token>") : end].decode() or None


def retrieve_view_pages_lean(
    client: Any, kind: type, paths: Sequence[str], page_size: int, root: Any = None
) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Like ``retrieve_view_pages`` for one type, with each page parsed by :func:`parse_page`.

    The next page is fetched on a second thread while this one is parsed: vCenter encodes and
    sends it while the CPU-bound parse runs here. At most two pages are held at a time.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    view, spec = view_filter(client, {kind: paths}, root)
    token = None
    pending: Future[bytes] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vsphere-page") as fetcher:
        try:
            options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=page_size)
            body: bytes | None = invoke_raw(client, "RetrievePropertiesEx", [[spec], options])
            while body is not None:
                token = peek_token(body)
                if token:
                    pending = fetcher.submit(
                        invoke_raw, client, "ContinueRetrievePropertiesEx", [token]
                    )
                parsed_token, objects = parse_page(body)
                if parsed_token and not token:  # a server that puts the token last
                    token = parsed_token
                    pending = fetcher.submit(
                        invoke_raw, client, "ContinueRetrievePropertiesEx", [token]
                    )
                yield objects
                body, pending = (pending.result() if pending else None), None
                token = None
        finally:
            if pending is not None:  # stopped early with a page on its way: drop its rest
                try:
                    token = peek_token(pending.result())
                except Exception:  # noqa: BLE001 - nothing left to release then
                    token = None
            release(client, view, token)
