"""The ``copy`` job: a second copy of restore points in another repository (3-2-1).

``params``: ``repository_id`` (the source), ``target_repository_id``, and optionally
``restore_point_id`` (one point; else every restore point with a live copy in the source).
Each image the target lacks is copied with its chunks (``app/repository/copy.py``: byte for
byte, only what the target lacks, a killed copy resumes without sending again what arrived),
then catalogued as the point's copy in the target repository, one commit per image: a copy
killed half-way keeps what it catalogued and the next run carries on.

The target connection's repository becomes a *replica* of the source (same uuid and key):
an empty or freshly tested one is adopted; one holding other data is refused. A replica
serves one source. Its immutability is its own (the target connection's
``immutable_days``), so a locked copy can sit beside an unlocked primary.
"""

from __future__ import annotations

import json

from sqlalchemy.orm import Session

from app.db.models import Connection, RestorePointCopy
from app.domain.connections import ConnectionKind
from app.domain.jobs import JobKind
from app.domain.protection import CopyLocation
from app.jobs.context import JobContext, JobResult, PermanentError
from app.jobs.handlers import register
from app.protection.handlers.expire import repository_copies
from app.repository.backend import ObjectMissing
from app.repository.connection import open_repository, store_for
from app.repository.copy import copy_images, open_replica
from app.repository.errors import RepositoryError


def _adoptable(store) -> bool:
    """A target holding only a fresh repository's config (what its connection test left)."""
    return all(key == "config" for key in store.list(""))


def open_target(session: Session, source, target_id: int, root_key: bytes):
    conn = session.get(Connection, target_id)
    if conn is None or conn.kind != ConnectionKind.REPOSITORY:
        raise PermanentError(f"connection {target_id} is not a repository")
    if target_id == source.id:
        raise PermanentError("a copy needs another repository than its source")
    store, label = store_for(conn, root_key)
    try:
        config = json.loads(store.get("config"))
    except ObjectMissing:
        config = None
    if config is not None and config.get("uuid") != source.uuid and _adoptable(store):
        store.delete("config")  # a fresh, empty repository: it becomes the replica
    return open_replica(
        source,
        store,
        label=label,
        key=root_key,
        id=conn.id,
        immutable_days=(conn.options or {}).get("immutable_days"),
    )


def run_copy(ctx: JobContext) -> JobResult:
    source_id = ctx.params.get("repository_id")
    target_id = ctx.params.get("target_repository_id")
    if not isinstance(source_id, int) or not isinstance(target_id, int):
        raise PermanentError("a copy job needs params.repository_id and target_repository_id")
    root_key = ctx.runtime.settings.root_key()
    ctx.step("prepare")
    with ctx.db.session() as session:
        try:
            source = open_repository(session, source_id, root_key=root_key)
            target = open_target(session, source, target_id, root_key)
        except RepositoryError as exc:
            raise PermanentError(str(exc)) from exc
        wanted = ctx.params.get("restore_point_id")
        copies = [
            c
            for c in repository_copies(session, source_id)
            if wanted is None or c.restore_point_id == wanted
        ]
        on_target = {
            (c.restore_point_id, c.reference) for c in repository_copies(session, target_id)
        }
        todo = [(c.restore_point_id, c.reference, c.size_bytes) for c in copies]
    todo = [t for t in todo if (t[0], t[1]) not in on_target]
    ctx.step("copy", f"copying {len(todo)} image(s) to repository {target_id}")
    moved = 0
    done_images = 0
    chunks = {"copied": 0, "present": 0}

    def progress(done: int, rate: float) -> None:
        ctx.progress(bytes_done=moved + done)

    for point_id, manifest_id, size in todo:
        ctx.check_cancelled()
        report = copy_images(source, target, [manifest_id], progress=progress)
        moved += report.bytes_copied
        chunks["copied"] += report.chunks_copied
        chunks["present"] += report.chunks_present
        with ctx.db.session() as session:
            session.add(
                RestorePointCopy(
                    restore_point_id=point_id,
                    location=CopyLocation.REPOSITORY,
                    connection_id=target_id,
                    reference=manifest_id,
                    size_bytes=size,
                )
            )
        done_images += 1
        ctx.progress(percent=100.0 * done_images / len(todo), bytes_done=moved)
        ctx.event(
            f"image {manifest_id} of restore point {point_id}: {report.chunks_copied} chunk(s) "
            f"({report.bytes_copied} bytes) copied, {report.chunks_present} already there, "
            f"{report.mib_s:.1f} MiB/s"
        )
    ctx.progress(percent=100)
    return JobResult(
        message=f"{done_images} image(s) copied to repository {target_id}, {moved} bytes sent",
        details={
            "images": done_images,
            "bytes_copied": moved,
            "chunks_copied": chunks["copied"],
            "chunks_present": chunks["present"],
            "target": target_id,
        },
    )


register(JobKind.COPY, run_copy)
