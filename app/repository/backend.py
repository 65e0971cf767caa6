"""Where repository objects live: immutable, named objects behind one small interface.

The filesystem store is the disk library (a local or mounted directory). The interface is
object-shaped (put/get/exists/list/delete of whole objects) so an S3-compatible store can
stand in later without the repository changing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from app.repository.errors import RepositoryFull

_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")
_TMP_PREFIX = ".tmp-"


class ObjectMissing(KeyError):  # noqa: N818 - reads as what happened
    """No object under this key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # seconds since the epoch; ``touch`` moves it forward


class ObjectStore(Protocol):
    # ``data``: bytes, or a sequence of bytes-like parts written one after the other.
    def put(self, key: str, data, *, durable: bool = True) -> None: ...
    def get(self, key: str) -> bytes: ...
    def get_range(self, key: str, offset: int, length: int) -> bytes: ...
    def size(self, key: str) -> int | None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> Iterator[str]: ...
    def delete(self, key: str) -> None: ...
    # Beyond plain objects: what garbage collection needs to be safe against a running backup.
    def touch(self, key: str) -> bool: ...
    def stat_all(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def flush(self) -> None: ...
    def lock(self, name: str, *, exclusive: bool) -> contextlib.AbstractContextManager: ...


def check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key:
        raise ValueError(f"invalid object key {key!r}")
    return key


class FilesystemStore:
    """Objects as files under ``root``; a key's ``/`` separates directories.

    ``put`` is atomic: the bytes go to a temporary file in the same directory, which is
    fsynced and renamed over the name, then the directory is fsynced. With
    ``durable=False`` both fsyncs wait for :meth:`flush` (many chunks, one flush before the
    manifest or database row that names them); the object is still whole or absent.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.name: str | None = None  # the connection's name, for operators' messages
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FilesystemStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def space(self) -> tuple[int, int]:
        """(capacity, free) bytes of the file system the repository lives on."""
        st = os.statvfs(self.root)
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    def full_error(self) -> RepositoryFull:
        """Disk full, said so an operator knows which disk and how full it is."""
        try:
            capacity, free = self.space()
            how = (
                f"{100 * (capacity - free) / max(1, capacity):.0f}% of {capacity / 2**30:.1f} "
                f"GiB used, {free / 2**20:.0f} MiB free"
            )
        except OSError as exc:
            how = f"its size cannot be read ({exc})"
        name = f"repository '{self.name}'" if self.name else "the repository"
        return RepositoryFull(f"{name} at {self.root} is full: {how}")

    def put(self, key: str, data, *, durable: bool = True) -> None:
        try:
            self._put(key, data, durable=durable)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self.full_error() from exc
            raise

    def _put(self, key: str, data, *, durable: bool) -> None:
        path = self._path(key)
        directory = path.parent
        if not directory.is_dir():
            self._make_dirs(directory, durable=durable)
        tmp = directory / f"{_TMP_PREFIX}{path.name}-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # ``data`` may be parts (a sealed chunk's header, nonce, ciphertext, tag).
            for part in [data] if isinstance(data, bytes | bytearray | memoryview) else data:
                view = memoryview(part).cast("B")
                while view:
                    view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)
        if durable:
            _fsync_dir(directory)
        else:
            with self._dirty_lock:
                self._dirty.add(str(directory))

    def flush(self) -> None:
        """Make every earlier ``put(durable=False)`` durable: one ``syncfs`` of the store's
        filesystem instead of an fsync per object (thousands of small chunks per mail backup).
        """
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        if not dirty:
            return
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _syncfs(fd)
        finally:
            os.close(fd)

    def _make_dirs(self, directory: Path, *, durable: bool = True) -> None:
        missing = []
        d = directory
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):
                d.mkdir(mode=0o700)
            if durable:
                _fsync_dir(d.parent)
        if not durable:
            # The new entries are made durable by the same flush (syncfs) as the object.
            with self._dirty_lock:
                self._dirty.update(str(d.parent) for d in missing)

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def get_into(self, key: str, buf: bytearray) -> int:
        """Read the object into ``buf``; its size, or -1 when it does not fit (``buf`` then
        holds only its start). Restores read blocks into reused buffers, not fresh ones."""
        try:
            fh = open(self._path(key), "rb", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        with fh:
            view, got = memoryview(buf), 0
            while got < len(view):
                n = fh.readinto(view[got:])
                if not n:
                    return got
                got += n
            return -1 if fh.read(1) else got

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer only if the object is shorter)."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def size(self, key: str) -> int | None:
        try:
            return os.stat(self._path(key)).st_size
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def touch(self, key: str) -> bool:
        """Mark the object as just used (garbage collection spares it); False if absent.

        The next :meth:`flush` syncs even if nothing else was written: the object may be
        another writer's, not yet durable, and the caller is about to name it.
        """
        path = self._path(key)
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        with self._dirty_lock:
            self._dirty.add(str(path.parent))
        return True

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def list(self, prefix: str = "") -> Iterator[str]:
        for info in self.stat_all(prefix):
            yield info.key

    def stat_all(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        if not start.is_dir():
            return
        stack = [start]
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                continue
            for entry in sorted(entries, key=lambda e: e.name, reverse=True):
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                key = os.path.relpath(entry.path, self.root).replace(os.sep, "/")
                if not key.startswith(prefix):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    def remove_stale_temporaries(self, older_than: float) -> int:
        """Delete temporary files a crashed writer left (they are never objects)."""
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.startswith(_TMP_PREFIX):
                    continue
                path = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_mtime < older_than:
                        os.unlink(path)
                        removed += 1
        return removed

    @contextlib.contextmanager
    def lock(self, name: str, *, exclusive: bool) -> Iterator[None]:
        """A cross-process lock (flock) on ``.locks/<name>``."""
        directory = self.root / ".locks"
        directory.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(directory / check_key(name), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the flock


def _syncfs(fd: int) -> None:
    """syncfs(2) on Linux; elsewhere sync(2), which flushes at least as much."""
    syncfs = getattr(_libc(), "syncfs", None)
    if syncfs is None or syncfs(fd) != 0:
        os.sync()


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
