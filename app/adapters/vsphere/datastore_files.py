"""Datastore file transfer over HTTPS: ``/folder/<path>?dcPath=…&dsName=…`` on vCenter.

This is how a proxy reads the disks of a VM snapshot off the host and writes a disk back
during a restore, without VDDK: GET (with HTTP ``Range`` for parts of a file) and PUT of
whole files, authenticated by the SOAP session's cookie and protected by the same TLS trust
as the session itself (system CAs, or exactly the pinned certificate: the connection's
context is reused, so a pinned thumbprint is checked on every transfer connection too).

Everything streams: a reader holds at most one read's worth of bytes, an upload sends the
chunks it is given as they come. Blocking, like the rest of the adapter.
"""

from __future__ import annotations

import http.client
import io
import logging
import re
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from pyVmomi import vim

from ._collector import retrieve_one, translated_faults
from .client import DEFAULT_TIMEOUT
from .errors import (
    CertificateUntrusted,
    ObjectNotFound,
    TaskFailed,
    Unreachable,
    VSphereError,
)
from .tasks import wait_for_task

log = logging.getLogger(__name__)

READ_SIZE = 1024 * 1024
"""Bytes asked of the socket per read when streaming a whole file."""

_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<path>.*)$")


class DatastoreFileError(VSphereError):
    """A datastore file could not be read or written; the message names file and reason."""


@dataclass(frozen=True)
class DatastorePath:
    """``[datastore] folder/file.vmdk``, the way vSphere names a file on a datastore."""

    datastore: str
    path: str

    @classmethod
    def parse(cls, text: str) -> DatastorePath:
        m = _PATH.match(text.strip())
        if not m or not m.group("path"):
            raise ValueError(f"not a datastore path: {text!r} (expected '[datastore] file')")
        return cls(m.group("ds"), m.group("path").lstrip("/"))

    def sibling(self, name: str) -> DatastorePath:
        folder = self.path.rsplit("/", 1)[0] if "/" in self.path else ""
        return DatastorePath(self.datastore, f"{folder}/{name}" if folder else name)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return f"[{self.datastore}] {self.path}"


def flat_extent(descriptor: DatastorePath) -> DatastorePath:
    """The data file of a flat VMDK: ``disk.vmdk`` keeps its bytes in ``disk-flat.vmdk``."""
    stem = descriptor.name.removesuffix(".vmdk")
    return descriptor.sibling(f"{stem}-flat.vmdk")


def rdm_extent(descriptor: DatastorePath, physical: bool = False) -> DatastorePath:
    """The mapping extent of an RDM: ``disk-rdm.vmdk`` (virtual) or ``disk-rdmp.vmdk``; read
    through the datastore, it gives the mapped LUN's blocks."""
    stem = descriptor.name.removesuffix(".vmdk")
    return descriptor.sibling(f"{stem}-rdmp.vmdk" if physical else f"{stem}-rdm.vmdk")


def datacenter_path(client: Any, entity: Any) -> str:
    """The inventory path of the datacenter holding ``entity`` (a VM moref or object), which
    ``/folder`` wants as ``dcPath`` (e.g. ``LAB-DC1``, or ``Europe/DC2`` in a folder)."""
    obj = client.managed_object(vim.VirtualMachine, entity)
    with translated_faults(client, f"finding the datacenter of {obj._moId}"):
        while not isinstance(obj, vim.Datacenter):
            parent = retrieve_one(client, obj, type(obj), ["parent"]).get("parent")
            if parent is None:
                raise ObjectNotFound(obj._moId, "datacenter above")
            obj = parent
        names = [retrieve_one(client, obj, vim.Datacenter, ["name"])["name"]]
        folder = retrieve_one(client, obj, vim.Datacenter, ["parent"]).get("parent")
        root = client.content.rootFolder
        while folder is not None and folder._moId != root._moId:
            got = retrieve_one(client, folder, vim.Folder, ["name", "parent"])
            names.append(got["name"])
            folder = got.get("parent")
    return "/".join(reversed(names))


class DatastoreFiles:
    """Datastore files of one datacenter, reached through one logged-in vCenter session."""

    def __init__(
        self,
        client: Any,
        datacenter: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.client = client
        self.datacenter = datacenter
        self.timeout = timeout
        stub = client.stub
        # The session's own TLS context: a pinned thumbprint is enforced here as well.
        self._context: ssl.SSLContext | None = stub.schemeArgs.get("context")
        self._cookie: str = stub.cookie

    # -- plumbing ---------------------------------------------------------------------------
    def url(self, path: DatastorePath) -> str:
        query = urlencode({"dcPath": self.datacenter, "dsName": path.datastore})
        return f"/folder/{quote(path.path)}?{query}"

    def _connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self.client.host, self.client.port, context=self._context, timeout=self.timeout
        )

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Cookie": self._cookie, "User-Agent": "Bulwark"}
        headers.update(extra or {})
        return headers

    def _fail(self, path: DatastorePath, action: str, exc: BaseException) -> VSphereError:
        host, port = self.client.host, self.client.port
        if isinstance(exc, ssl.SSLCertVerificationError):
            presented = getattr(exc, "presented", None)
            reason = getattr(exc, "verify_message", None) or str(exc)
            return CertificateUntrusted(host, port, presented, reason)
        if isinstance(exc, (OSError, http.client.HTTPException)):
            return Unreachable(host, port, f"connection lost {action} {path} ({exc!r})")
        return DatastoreFileError(f"{action} {path} failed: {exc}")

    def _check(self, path: DatastorePath, action: str, response: http.client.HTTPResponse):
        status = response.status
        if status in (200, 201, 204, 206):
            return
        body = response.read(512).decode("utf-8", "replace").strip()
        if status == 404:
            raise DatastoreFileError(f"{action} {path}: no such file on the datastore")
        if status in (401, 403):
            raise DatastoreFileError(
                f"{action} {path}: vCenter refused the session (HTTP {status})"
            )
        raise DatastoreFileError(f"{action} {path}: HTTP {status} {body[:200]}".rstrip())

    # -- reading ----------------------------------------------------------------------------
    def size(self, path: DatastorePath) -> int:
        """The file's size in bytes (a HEAD request)."""
        conn = self._connect()
        try:
            conn.request("HEAD", self.url(path), headers=self._headers())
            response = conn.getresponse()
            response.read()
            self._check(path, "reading the size of", response)
            length = response.getheader("Content-Length")
        except VSphereError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise self._fail(path, "reading the size of", exc) from None
        finally:
            conn.close()
        if length is None:
            raise DatastoreFileError(f"vCenter gave no size for {path}")
        return int(length)

    def open(self, path: DatastorePath, size: int | None = None) -> RemoteFile:
        """A seekable, read-only file over ranged GETs (one open response at a time)."""
        return RemoteFile(self, path, self.size(path) if size is None else size)

    def iter_bytes(
        self, path: DatastorePath, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        """Stream ``length`` bytes (to the end by default) of the file from ``offset``."""
        with self.open(path) as f:
            f.seek(offset)
            left = f.size - offset if length is None else length
            while left > 0:
                data = f.read(min(READ_SIZE, left))
                if not data:
                    break
                left -= len(data)
                yield data

    # -- writing ----------------------------------------------------------------------------
    def upload(self, path: DatastorePath, chunks: Iterable[bytes], size: int) -> None:
        """PUT ``size`` bytes, given as chunks, as the file at ``path`` (created or replaced).

        The chunks are sent as they come (bounded memory); a source that yields more or fewer
        bytes than ``size`` is an error, never a short file left silently.
        """
        sent = 0

        def counted() -> Iterator[bytes]:
            nonlocal sent
            for chunk in chunks:
                sent += len(chunk)
                if sent > size:
                    raise DatastoreFileError(f"more than {size} bytes given for {path}")
                yield chunk

        conn = self._connect()
        try:
            conn.request(
                "PUT",
                self.url(path),
                body=counted(),
                headers=self._headers(
                    {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
                ),
            )
            response = conn.getresponse()
            response.read()
            self._check(path, "writing", response)
        except VSphereError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise self._fail(path, "writing", exc) from None
        finally:
            conn.close()
        if sent != size:
            raise DatastoreFileError(f"only {sent} of {size} bytes were given for {path}")

    def delete(self, path: DatastorePath) -> bool:
        """Remove a file through the FileManager; False when it was not there."""
        content = self.client.content
        dc = content.searchIndex.FindByInventoryPath(self.datacenter)
        try:
            with translated_faults(self.client, f"deleting {path}"):
                task = content.fileManager.DeleteDatastoreFile_Task(name=str(path), datacenter=dc)
            wait_for_task(self.client, task, self.timeout, description=f"deleting {path}")
        except TaskFailed as exc:
            if exc.fault and "FileNotFound" in exc.fault:
                return False
            raise
        return True


class RemoteFile(io.RawIOBase):
    """A datastore file read through ranged GETs: sequential reads share one response;
    a seek elsewhere opens a new one. ``read(n)`` returns ``n`` bytes unless the file ends."""

    def __init__(self, files: DatastoreFiles, path: DatastorePath, size: int) -> None:
        super().__init__()
        self.files = files
        self.path = path
        self.size = size
        self._pos = 0
        self._conn: http.client.HTTPSConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        self._response_pos = -1

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._response = None
        self._response_pos = -1

    def _open_at(self, pos: int) -> None:
        self._drop()
        files = self.files
        conn = files._connect()
        try:
            extra = {"Range": f"bytes={pos}-"} if pos else {}
            conn.request("GET", files.url(self.path), headers=files._headers(extra))
            response = conn.getresponse()
            files._check(self.path, "reading", response)
            if pos and response.status != 206:
                raise DatastoreFileError(
                    f"reading {self.path} from byte {pos}: the server ignored the range request"
                )
        except VSphereError:
            conn.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise files._fail(self.path, "reading", exc) from None
        self._conn, self._response, self._response_pos = conn, response, pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), max(0, self.size - self._pos))
        if want == 0:
            return 0
        if self._response is None or self._response_pos != self._pos:
            self._open_at(self._pos)
        got = 0
        try:
            while got < want:
                n = self._response.readinto(view[got:want])
                if not n:
                    break
                got += n
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise self.files._fail(self.path, "reading", exc) from None
        if got < want:
            self._drop()
            raise DatastoreFileError(
                f"{self.path} ended at byte {self._pos + got}, expected {self.size} bytes"
            )
        self._pos += got
        self._response_pos = self._pos
        return got

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self._pos
        buf = bytearray(min(size, max(0, self.size - self._pos)))
        n = self.readinto(buf)
        return bytes(buf[:n])

    def close(self) -> None:
        self._drop()
        super().close()
