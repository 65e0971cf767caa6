"""Writer records and the repository lock: what keeps garbage collection off live work.

Design note (the oldest-writer cutoff of pbs-datastore). A backup in progress, or a read
that must not lose its image (a download), leaves a record ``writers/<id>``: when it
started, which host and process, the image it builds on or reads (``previous``) and
``purpose`` ("write" or "read"). Garbage collection sweeps only what is older than the
oldest live record's start, and an image a record names cannot be deleted
(``ManifestInUse``). A record of a process that died on this host is ignored (and removed by
the next collection); one older than two days is taken for the leftover of another host.

The ``gc`` lock is held exclusively by a sweep and shared by saving a manifest (where the
store offers locks; see backend.py).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from app.repository.backend import ObjectMissing, ObjectStore
from app.repository.packs import PackIndex

CLOCK_SLACK_S = 2.0


class WriterRecords:
    def __init__(self, store: ObjectStore, packs: PackIndex):
        self.store = store
        self.packs = packs

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A backup of small objects (mail) in progress: garbage collection spares every
        chunk it stores or uses again until it ends, as it does for an image being written.
        What a failed backup stored stays in the open pack (another backup may share the
        handle and its pack): a later flush writes it, and garbage collection removes it."""
        writer_id = self.begin(None)
        try:
            yield
        finally:
            self.end(writer_id)

    def pin(self, manifest_id: str) -> Callable[[], None]:
        """Keep an image while something outside a job reads it (a download): deleting it
        raises ManifestInUse, so expiry keeps its restore point until the next run. Call
        the returned function when done; a dead process's pin is ignored."""
        writer_id = self.begin(manifest_id, purpose="read")
        return functools.partial(self.end, writer_id)

    def begin(self, previous: str | None, *, purpose: str = "write") -> str:
        # Chunks used again from now on must be touched anew: this writer's start is the
        # collection's cutoff, and an earlier touch may lie before it.
        self.packs.forget_touches()
        writer_id = f"{int(time.time())}-{secrets.token_hex(6)}"
        doc = {
            # Early by a margin: file times come from a coarse clock that can lag time.time().
            "started": time.time() - CLOCK_SLACK_S,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "previous": previous,
            "purpose": purpose,
        }
        # Not fsynced: after a crash the writer is dead and its record meaningless anyway.
        self.store.put(f"writers/{writer_id}", json.dumps(doc).encode(), durable=False)
        return writer_id

    def abandoned(self, writer_id: str, chunks: list[str]) -> None:
        """This writer failed: the chunks it stored new are garbage now, not in five minutes
        (see gc.py), unless something else has used them since."""
        if chunks:
            doc = {"ended": time.time() + CLOCK_SLACK_S, "chunks": sorted(set(chunks))}
            with contextlib.suppress(OSError):  # a full disk: the grace period applies
                self.store.put(f"abandoned/{writer_id}", json.dumps(doc).encode(), durable=False)
        self.end(writer_id)

    def abandoned_chunks(self) -> dict[str, tuple[float, dict[str, float]]]:
        """Records of failed writers: id -> (when it ended, {chunk: when it ended})."""
        found = {}
        for key in self.store.list("abandoned/"):
            try:
                doc = json.loads(self.store.get(key))
            except (ObjectMissing, ValueError):
                continue
            ended = float(doc.get("ended", 0))
            found[key] = (ended, dict.fromkeys(doc.get("chunks") or [], ended))
        return found

    def end(self, writer_id: str) -> None:
        with contextlib.suppress(ObjectMissing):
            self.store.delete(f"writers/{writer_id}")

    def active(
        self, *, stale_after: float = 48 * 3600, remove_dead: bool = False
    ) -> list[dict[str, Any]]:
        """Backups writing right now; records of dead processes on this host are ignored
        (and removed with ``remove_dead``), as are records older than ``stale_after``."""
        host = socket.gethostname()
        result = []
        for key in self.store.list("writers/"):
            try:
                doc = json.loads(self.store.get(key))
            except (ObjectMissing, ValueError):
                continue
            dead = doc.get("host") == host and not _pid_alive(doc.get("pid", 0))
            if dead and remove_dead:
                with contextlib.suppress(ObjectMissing):
                    self.store.delete(key)
            if dead or time.time() - doc.get("started", 0) > stale_after:
                continue
            doc["id"] = key.removeprefix("writers/")
            result.append(doc)
        return result

    def pinned_manifests(self) -> dict[str, str]:
        """Images that must stay: manifest id -> "write" (a backup builds on it) or "read"."""
        return {
            w["previous"]: w.get("purpose", "write") for w in self.active() if w.get("previous")
        }


def gc_lock(store: ObjectStore, *, exclusive: bool):
    lock = getattr(store, "lock", None)
    if lock is None:
        return contextlib.nullcontext()
    return lock("gc", exclusive=exclusive)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
