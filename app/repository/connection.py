"""A ``repository`` connection: its options, the store it names, the test that initialises
the repository, and opening the repository a connection row names (the storage engine
itself knows no tables).

Two kinds of store (option ``backend``):

* ``filesystem`` (the default): ``path``, an absolute directory, local or mounted;
* ``s3``: ``endpoint`` (http(s)://host[:port]), ``bucket``, ``prefix``, ``region``,
  ``path_style``; the access key is the connection's ``username`` and the secret key its
  password (sealed at rest like every connection secret); TLS is verified against the
  system's CAs unless the connection trusts one certificate by its SHA-256 thumbprint
  (``trusted_thumbprint``, as for vCenter) or ``verify_tls`` is off.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from app.repository.backend import FilesystemStore, ObjectMissing, ObjectStore
from app.repository.errors import RepositoryError
from app.repository.store import Repository, open_repository_in

_open_lock = threading.Lock()


def open_repository(
    session: Session, connection_id: int, *, root_key: bytes | None = None, create: bool = False
) -> Repository:
    """Open the repository a ``repository`` connection points at."""
    from app.db.models import Connection
    from app.domain.connections import ConnectionKind

    conn = session.get(Connection, connection_id)
    if conn is None or conn.kind != ConnectionKind.REPOSITORY:
        raise RepositoryError(f"connection {connection_id} is not a repository")
    if root_key is None:
        from app.config import get_settings

        root_key = get_settings().root_key()
    store, label = store_for(conn, root_key)
    store.name = conn.name  # for its errors (a full disk names the repository)
    options = conn.options or {}
    with _open_lock:
        return open_repository_in(
            store,
            label=label,
            key=root_key,
            create=create,
            encrypted=bool(options.get("encrypted", False)),
            id=conn.id,
            immutable_days=options.get("immutable_days"),
        )


BACKENDS = ("filesystem", "s3")
_COMMON = {"backend", "encrypted"}
_FILESYSTEM = _COMMON | {"path"}
_S3 = _COMMON | {
    "endpoint",
    "bucket",
    "prefix",
    "region",
    "path_style",
    "max_parallel",
    "immutable_days",
}


def validate_options(options: dict[str, Any], *, need_path: bool = False) -> dict[str, Any]:
    """The options normalised; raises ValueError naming the first problem.

    A connection may be saved before its place is known (it stays untested); testing or
    opening it needs the place (``path``, or ``endpoint`` and ``bucket``).
    """
    backend = options.get("backend", "filesystem")
    if backend not in BACKENDS:
        raise ValueError(f"options.backend must be one of {list(BACKENDS)}, not {backend!r}")
    if backend == "s3":
        return _s3_options(options, need_place=need_path)
    unknown = sorted(set(options) - _FILESYSTEM)
    if unknown:
        raise ValueError(f"a repository takes the options 'path' and 'encrypted', not {unknown}")
    path = options.get("path")
    if path is None and not need_path:
        return {"encrypted": _encrypted(options)}
    if not isinstance(path, str) or not path.strip():
        raise ValueError("say where the repository lives: options.path, an absolute directory")
    path = path.strip()
    if not path.startswith("/") or "\0" in path or ".." in Path(path).parts:
        raise ValueError(f"options.path must be an absolute directory without '..', not {path!r}")
    return {"path": str(Path(path)), "encrypted": _encrypted(options)}


def _s3_options(options: dict[str, Any], *, need_place: bool) -> dict[str, Any]:
    from app.repository.s3 import DEFAULT_PARALLEL, normalise_prefix, validate_bucket

    unknown = sorted(set(options) - _S3)
    if unknown:
        raise ValueError(
            f"an S3 repository takes the options {sorted(_S3)}, not {unknown} "
            "(the access key is the connection's username, the secret key its password)"
        )
    out: dict[str, Any] = {"backend": "s3", "encrypted": _encrypted(options)}
    endpoint = options.get("endpoint")
    if endpoint is not None or need_place:
        if not isinstance(endpoint, str):
            raise ValueError("say where the object store is: options.endpoint, https://host")
        parts = urlsplit(endpoint.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"options.endpoint must be http(s)://host[:port], not {endpoint!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError(
                f"options.endpoint is the server only (the bucket goes in options.bucket), "
                f"not {endpoint!r}"
            )
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"options.endpoint has a bad port: {endpoint!r}") from None
        out["endpoint"] = f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")
    bucket = options.get("bucket")
    if bucket is not None or need_place:
        out["bucket"] = validate_bucket(bucket)
    out["prefix"] = normalise_prefix(options.get("prefix"))
    region = options.get("region", "us-east-1")
    if not isinstance(region, str) or not region or len(region) > 64:
        raise ValueError("options.region must be a region name such as 'us-east-1'")
    out["region"] = region
    path_style = options.get("path_style", True)
    if not isinstance(path_style, bool):
        raise ValueError("options.path_style must be true or false")
    out["path_style"] = path_style
    parallel = options.get("max_parallel", DEFAULT_PARALLEL)
    if not isinstance(parallel, int) or isinstance(parallel, bool) or not 1 <= parallel <= 64:
        raise ValueError("options.max_parallel must be a whole number from 1 to 64")
    out["max_parallel"] = parallel
    days = options.get("immutable_days")
    if days is not None:
        if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 3650:
            raise ValueError("options.immutable_days must be a whole number of days, 1 to 3650")
        out["immutable_days"] = days
    return out


def _encrypted(options: dict[str, Any]) -> bool:
    encrypted = options.get("encrypted", False)
    if not isinstance(encrypted, bool):
        raise ValueError("options.encrypted must be true or false")
    return encrypted


def place_of(options: dict[str, Any]) -> str | None:
    """Where the repository's objects are, as one string (two connections must not share
    it: each would expire and collect the other's data)."""
    if options.get("backend") == "s3":
        if not options.get("endpoint") or not options.get("bucket"):
            return None
        return f"{options['endpoint']}/{options['bucket']}/{options.get('prefix', '')}"
    return options.get("path")


def store_for(conn: Any, root_key: bytes, *, lock_dir: Path | None = None):
    """The object store a repository connection row names, and a label for messages."""
    try:
        opts = validate_options(conn.options or {}, need_path=True)
    except ValueError as exc:
        raise RepositoryError(f"repository {conn.name}: {exc}") from None
    if opts.get("backend") != "s3":
        return FilesystemStore(Path(opts["path"])), opts["path"]
    from app.repository.s3 import S3Location, S3Store
    from app.security.secrets import SecretBox, SecretUnreadable

    secret = ""
    if conn.secret_ciphertext:
        try:
            secret = SecretBox(root_key).open(conn.secret_ciphertext, "connection")
        except SecretUnreadable as exc:
            raise RepositoryError(f"repository {conn.name}: {exc}") from None
    location = S3Location(
        endpoint=opts["endpoint"],
        bucket=opts["bucket"],
        prefix=opts["prefix"],
        region=opts["region"],
        path_style=opts["path_style"],
        verify_tls=bool(conn.verify_tls),
        trusted_thumbprint=conn.trusted_thumbprint,
    )
    store = S3Store(
        location,
        access_key=conn.username or "",
        secret_key=secret,
        max_parallel=opts["max_parallel"],
        lock_dir=lock_dir,
    )
    return store, location.label()


def copy_locks(session: Session, point: Any) -> dict[int, datetime]:
    """Copy id -> when its lock ends, for the point's live copies in immutable repositories
    whose lock has not ended. From the catalog: the copy's time plus the repository's lock
    period, never later than the store's own date (which a reuse may have moved on)."""
    from app.db.models import Connection
    from app.db.types import utcnow
    from app.domain.protection import CopyLocation

    now = utcnow()
    locks = {}
    for copy in point.copies:
        if copy.removed_at is not None or copy.location != CopyLocation.REPOSITORY:
            continue
        conn = session.get(Connection, copy.connection_id) if copy.connection_id else None
        days = ((conn.options or {}) if conn else {}).get("immutable_days")
        if days and (until := copy.created_at + timedelta(days=days)) > now:
            locks[copy.id] = until
    return locks


@dataclass
class RepositoryCheck:
    ok: bool
    message: str
    about: str | None = None


def check_repository(conn: Any, root_key: bytes, *, lock_dir: Path | None = None):
    """Open the repository (initialising an empty directory or bucket) and write, read,
    delete a probe."""
    label = (conn.options or {}).get("path") or "the repository"
    try:
        opts = validate_options(conn.options or {}, need_path=True)
        store, label = store_for(conn, root_key, lock_dir=lock_dir)
        repo = open_repository_in(
            store,
            label=label,
            key=root_key,
            create=True,
            encrypted=opts["encrypted"],
            immutable_days=opts.get("immutable_days"),
        )
        probe = f"probe/{secrets.token_hex(8)}"
        data = secrets.token_bytes(64)
        repo.store.put(probe, data)
        try:
            if repo.store.get(probe) != data:
                return RepositoryCheck(False, f"{label}: a written probe read back wrong")
        finally:
            with contextlib.suppress(ObjectMissing):
                repo.store.delete(probe)
    except (ValueError, RepositoryError) as exc:
        return RepositoryCheck(False, str(exc))
    except OSError as exc:
        return RepositoryCheck(False, f"{label}: {exc.strerror or exc}")
    note = ""
    if repo.encrypted != opts["encrypted"]:
        note = (
            f" (the repository is {'encrypted' if repo.encrypted else 'not encrypted'}; "
            "that was decided when it was initialised)"
        )
    about = (
        f"Bulwark repository {repo.uuid}: "
        f"{'AES-256-GCM encrypted' if repo.encrypted else 'not encrypted'}, "
        f"{repo.block_size // (1024 * 1024)} MiB blocks, zstd"
    )
    if repo.immutable_days:
        about += f", immutable: Object Lock COMPLIANCE for {repo.immutable_days} day(s)"
        if opts.get("immutable_days") != repo.immutable_days:
            note += (
                f" (the repository locks for {repo.immutable_days} day(s): decided when it "
                "was initialised, it cannot be changed)"
            )
    return RepositoryCheck(True, f"{label} is writable{note}", about)


def open_job_repository(ctx: Any, connection_id: int, session: Session | None = None):
    """The repository a job reads or writes, opened with its service's key (``ctx.runtime``,
    or the process settings for a job context without one)."""
    key = ctx.runtime.settings.root_key() if getattr(ctx, "runtime", None) else None
    if session is not None:
        return open_repository(session, connection_id, root_key=key)
    with ctx.db.session() as own:
        return open_repository(own, connection_id, root_key=key)


__all__ = [
    "ObjectStore",
    "open_repository",
    "RepositoryCheck",
    "check_repository",
    "copy_locks",
    "open_job_repository",
    "place_of",
    "store_for",
    "validate_options",
]
