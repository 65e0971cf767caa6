"""A ``repository`` connection: its options, the test that initialises the repository, and
opening the repository a connection row names (the storage engine itself knows no tables)."""

from __future__ import annotations

import contextlib
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.repository.backend import ObjectMissing
from app.repository.errors import RepositoryError
from app.repository.store import Repository, open_repository_at

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
    path = (conn.options or {}).get("path")
    if not path:
        raise RepositoryError(f"repository {conn.name} has no path")
    if root_key is None:
        from app.config import get_settings

        root_key = get_settings().root_key()
    encrypted = bool((conn.options or {}).get("encrypted", False))
    with _open_lock:
        return open_repository_at(
            Path(path), key=root_key, create=create, encrypted=encrypted, id=conn.id
        )


def validate_options(options: dict[str, Any], *, need_path: bool = False) -> dict[str, Any]:
    """``path`` (absolute directory) and ``encrypted`` (bool); raises ValueError.

    A connection may be saved before its path is known (it stays untested); testing or
    opening it needs the path.
    """
    unknown = sorted(set(options) - {"path", "encrypted"})
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


def _encrypted(options: dict[str, Any]) -> bool:
    encrypted = options.get("encrypted", False)
    if not isinstance(encrypted, bool):
        raise ValueError("options.encrypted must be true or false")
    return encrypted


@dataclass
class RepositoryCheck:
    ok: bool
    message: str
    about: str | None = None


def check_repository(options: dict[str, Any], root_key: bytes) -> RepositoryCheck:
    """Open the repository (initialising an empty directory) and write, read, delete a probe."""
    try:
        opts = validate_options(options, need_path=True)
        repo = open_repository_at(
            Path(opts["path"]), key=root_key, create=True, encrypted=opts["encrypted"]
        )
        probe = f"probe/{secrets.token_hex(8)}"
        data = secrets.token_bytes(64)
        repo.store.put(probe, data)
        try:
            if repo.store.get(probe) != data:
                return RepositoryCheck(False, f"{opts['path']}: a written probe read back wrong")
        finally:
            with contextlib.suppress(ObjectMissing):
                repo.store.delete(probe)
    except (ValueError, RepositoryError) as exc:
        return RepositoryCheck(False, str(exc))
    except OSError as exc:
        return RepositoryCheck(False, f"{opts['path']}: {exc.strerror or exc}")
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
    return RepositoryCheck(True, f"{opts['path']} is writable{note}", about)


def open_job_repository(ctx: Any, connection_id: int, session: Session | None = None):
    """The repository a job reads or writes, opened with its service's key (``ctx.runtime``,
    or the process settings for a job context without one)."""
    key = ctx.runtime.settings.root_key() if getattr(ctx, "runtime", None) else None
    if session is not None:
        return open_repository(session, connection_id, root_key=key)
    with ctx.db.session() as own:
        return open_repository(own, connection_id, root_key=key)
