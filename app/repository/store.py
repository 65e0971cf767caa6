"""The repository: a content-addressed store of disk images and other chunks.

A disk image is a manifest of fixed-size blocks; each block is hashed (blake3, keyed with a
repository key when encrypted), compressed (zstd), optionally encrypted, and stored once
under its digest. All-zero blocks are not stored. Layout of the objects::

    config                      what the repository is (format, block size, wrapped key)
    chunks/<4 hex>/<digest>     one block (or a large object) as its own file (chunks.py)
    packs/<2 hex>/<pack id>     many small chunks (mail messages) in one file (packs.py)
    index/<pack id>             which chunks a pack holds and where
    manifests/<id>              an image: size, block list, source, image hash, read mode
                                (manifest.py; written by image_writer.py, read and verified
                                by image_reader.py)
    writers/<id>                a backup in progress (garbage collection spares its chunks;
                                writers.py)

``Repository`` is one opened repository: it holds the chunk store and the writer records
and hands them to the image writer and reader; its methods are the one face the rest of
Bulwark uses. It knows no database: opening the repository a ``repository`` connection
names is connection.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from app.repository.backend import FilesystemStore, ObjectMissing, ObjectStore
from app.repository.chunks import ChunkStore
from app.repository.codec import SealBroken, unwrap_key, wrap_key
from app.repository.errors import ChunkDamaged, ManifestInUse, RepositoryError, RepositoryLocked
from app.repository.image_reader import ImageReader
from app.repository.image_writer import ImageWriter
from app.repository.manifest import BLOCK_SIZE, FORMAT, Manifest, manifest_key
from app.repository.writers import WriterRecords, gc_lock


class Repository:
    def __init__(
        self,
        store: ObjectStore,
        config: dict[str, Any],
        repository_key: bytes | None,
        *,
        id: int | None = None,
    ):
        self.store = store
        self.config = config
        self.id = id
        self.uuid: str = config["uuid"]
        self.block_size: int = config["block_size"]
        self.encrypted: bool = config["encrypted"]
        self.chunks = ChunkStore(store, repository_key)
        self.packs = self.chunks.packs
        self.writers = WriterRecords(store, self.packs)
        self._writer = ImageWriter(self.chunks, self.writers, self.block_size)
        self._reader = ImageReader(self.chunks)

    def __repr__(self) -> str:
        return f"Repository({self.store!r}, encrypted={self.encrypted})"

    # -- chunks (chunks.py) ---------------------------------------------------------------

    def digest(self, data: bytes) -> str:
        return self.chunks.digest(data)

    def put_chunk(self, data: bytes, *, durable: bool = True, packed: bool = False) -> str:
        """Store ``data`` once (see :meth:`ChunkStore.put_chunk`)."""
        return self.chunks.put_chunk(data, durable=durable, packed=packed)

    def flush(self) -> None:
        """Make every chunk stored with ``durable=False`` (or ``packed``) durable."""
        self.chunks.flush()

    def get_chunk(self, digest: str) -> bytes:
        return self.chunks.get_chunk(digest)

    def has_chunk(self, digest: str) -> bool:
        return self.chunks.has_chunk(digest)

    def missing_chunks(self, digests: Iterable[str]) -> set[str]:
        return self.chunks.missing_chunks(digests)

    def stored_totals(self) -> tuple[int, int]:
        return self.chunks.stored_totals()

    # -- images (image_writer.py, image_reader.py) -------------------------------------------

    def write_image(
        self,
        source: BinaryIO | Iterable[bytes],
        *,
        size: int,
        source_info: dict[str, Any],
        previous: Manifest | None = None,
        changed: list[tuple[int, int]] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Manifest:
        """Store an image; durable only once saved (see :meth:`ImageWriter.write_image`)."""
        return self._writer.write_image(
            source,
            size=size,
            source_info=source_info,
            previous=previous,
            changed=changed,
            progress=progress,
        )

    def save_manifest(self, manifest: Manifest) -> str:
        return self._writer.save_manifest(manifest)

    def abandon(self, manifest: Manifest) -> None:
        self._writer.abandon(manifest)

    def load_manifest(self, manifest_id: str) -> Manifest:
        return self._reader.load_manifest(manifest_id)

    def list_manifests(self) -> list[str]:
        return self._reader.list_manifests()

    def delete_manifest(self, manifest_id: str) -> None:
        """Remove an image; its chunks go at the next garbage collection."""
        if manifest_id in self.pinned_manifests():
            raise ManifestInUse(f"a running backup or a download reads image {manifest_id}")
        until = self.locked_until(manifest_id)
        if until is not None:
            raise RepositoryLocked(f"image {manifest_id}", until)
        with contextlib.suppress(ObjectMissing):
            self.store.delete(manifest_key(manifest_id))

    @property
    def immutable_days(self) -> int | None:
        """The lock period of an immutable repository (see immutable.py), else None."""
        return (self.config.get("immutability") or {}).get("days")

    def locked_until(self, manifest_id: str) -> datetime | None:
        """When an image's lock ends, if the repository is immutable and it is locked now."""
        from app.repository.immutable import locked_until

        return locked_until(self.store, manifest_key(manifest_id))

    def read_image(
        self,
        manifest: Manifest,
        offset: int = 0,
        length: int | None = None,
        *,
        reuse_buffers: bool = False,
    ) -> Iterator[bytes]:
        return self._reader.read_image(manifest, offset, length, reuse_buffers=reuse_buffers)

    def verify_image(
        self,
        manifest: Manifest,
        *,
        sample: float = 1.0,
        progress: Callable[[int], None] | None = None,
    ) -> list[ChunkDamaged]:
        return self._reader.verify_image(manifest, sample=sample, progress=progress)

    # -- writers in progress (writers.py) -------------------------------------------------

    def writing(self) -> contextlib.AbstractContextManager[None]:
        return self.writers.writing()

    def pin(self, manifest_id: str) -> Callable[[], None]:
        return self.writers.pin(manifest_id)

    def active_writers(
        self, *, stale_after: float = 48 * 3600, remove_dead: bool = False
    ) -> list[dict[str, Any]]:
        return self.writers.active(stale_after=stale_after, remove_dead=remove_dead)

    def pinned_manifests(self) -> dict[str, str]:
        return self.writers.pinned_manifests()

    def gc_lock(self, *, exclusive: bool):
        return gc_lock(self.store, exclusive=exclusive)


# -- opening ----------------------------------------------------------------------------------


def open_repository_at(
    path: Path,
    *,
    key: bytes | None = None,
    create: bool = False,
    encrypted: bool | None = None,
    id: int | None = None,
    block_size: int = BLOCK_SIZE,
) -> Repository:
    """Open the repository in the directory ``path`` (see :func:`open_repository_in`)."""
    path = Path(path)
    return open_repository_in(
        FilesystemStore(path),
        label=str(path),
        key=key,
        create=create,
        encrypted=encrypted,
        id=id,
        block_size=block_size,
    )


def open_repository_in(
    store: ObjectStore,
    *,
    label: str,
    key: bytes | None = None,
    create: bool = False,
    encrypted: bool | None = None,
    id: int | None = None,
    block_size: int = BLOCK_SIZE,
    immutable_days: int | None = None,
) -> Repository:
    """Open the repository held by ``store``; ``key`` is the service secret
    (BULWARK_SECRET_KEY); ``label`` names it in errors (a directory, ``s3://bucket/prefix``).

    With ``create`` a missing repository is initialised (``encrypted`` defaults to whether a
    key is given). An encrypted repository's own key is kept in its config, wrapped by the
    service secret: without that secret the data cannot be read back.
    """
    try:
        config = json.loads(store.get("config"))
    except ObjectMissing:
        if not create:
            raise RepositoryError(f"{label} holds no Bulwark repository") from None
        if encrypted is None:
            encrypted = key is not None
        config = _initialise(store, label, key, encrypted, block_size, immutable_days)
    except (OSError, ValueError) as exc:
        raise RepositoryError(f"cannot read the repository config in {label}: {exc}") from None
    if config.get("format") != FORMAT:
        raise RepositoryError(f"{label}: unknown repository format {config.get('format')!r}")
    immutability = config.get("immutability")
    if immutability:
        # The config decides, whatever the connection says now: it cannot be switched off.
        from app.repository.immutable import LockingStore

        store = LockingStore(store, int(immutability["days"]))
    repository_key = None
    if config.get("encrypted"):
        if key is None:
            raise RepositoryError(f"{label} is encrypted and no key was given")
        try:
            repository_key = unwrap_key(
                key, base64.b64decode(config["wrapped_key"]), config["uuid"]
            )
        except SealBroken as exc:
            raise RepositoryError(str(exc)) from None
    return Repository(store, config, repository_key, id=id)


def _initialise(
    store: ObjectStore,
    label: str,
    key: bytes | None,
    encrypted: bool,
    block_size: int,
    immutable_days: int | None = None,
) -> dict[str, Any]:
    if encrypted and key is None:
        raise RepositoryError("an encrypted repository needs the service secret")
    if immutable_days and not (hasattr(store, "lock_enabled") and store.lock_enabled()):
        raise RepositoryError(
            f"{label}: an immutable repository needs an S3 bucket created with Object Lock "
            "enabled (it cannot be added to a bucket later)"
        )
    if isinstance(store, FilesystemStore):
        path = store.root
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RepositoryError(f"cannot create {path}: {exc.strerror}") from None
        if any(p.name != ".locks" for p in path.iterdir()):
            raise RepositoryError(f"{path} is not empty and holds no Bulwark repository")
    elif next(iter(store.list("")), None) is not None:
        raise RepositoryError(f"{label} is not empty and holds no Bulwark repository")
    config: dict[str, Any] = {
        "format": FORMAT,
        "uuid": str(uuid.uuid4()),
        "block_size": block_size,
        "hash": "blake3-keyed" if encrypted else "blake3",
        "compression": "zstd",
        "encrypted": encrypted,
        "created_at": datetime.now(UTC).isoformat(),
    }
    if immutable_days:
        config["immutability"] = {"mode": "s3-object-lock-compliance", "days": immutable_days}
    if encrypted:
        config["cipher"] = "aes-256-gcm"
        config["wrapped_key"] = base64.b64encode(
            wrap_key(key, secrets.token_bytes(32), config["uuid"])
        ).decode()
    try:
        store.put("config", json.dumps(config, indent=1).encode())
    except OSError as exc:
        raise RepositoryError(f"cannot write to {label}: {exc.strerror or exc}") from None
    return config
