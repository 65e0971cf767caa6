"""Disk images of restore points: download (streamed, resumable with HTTP Range) and restore
to a datastore as a new disk or over the original."""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from app.api import API_PREFIX
from app.api.deps import DbSession, require, runtime
from app.api.downloads import attachment, octets
from app.api.problems import Problem, conflict, found, invalid
from app.api.schemas.common import Input
from app.api.schemas.jobs import JobOut
from app.audit import record
from app.db.models import RestorePoint
from app.protection.restores.disk import (
    RestoreRefused,
    find_disk_image,
    queue_disk_restore,
)
from app.security.roles import Permission

router = APIRouter(prefix=API_PREFIX + "/restore-points", tags=["restore points"])
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class DiskRestore(Input):
    target: Literal["new", "original"] = Field(
        default="new",
        description="new: a new VMDK beside the original; original: overwrite the disk "
        "(VM powered off, confirm required)",
    )
    confirm: Annotated[str, Field(max_length=128)] | None = Field(
        default=None, description="The server's name, to restore over the original disk"
    )
    datastore: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="Datastore for a new disk (default: the original's)"
    )


def _point(session, point_id: int) -> RestorePoint:
    return found(session.get(RestorePoint, point_id), "restore point", point_id)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for one ``bytes=`` range; None to send everything.

    Raises 416 for a range outside the image. Several ranges at once are answered with the
    whole image (allowed by RFC 9110), which no download client asks for anyway.
    """
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m:
        if header.strip().startswith("bytes=") and "," in header:
            return None
        raise Problem(
            416, f"unreadable range {header!r}", headers={"Content-Range": f"bytes */{size}"}
        )
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        raise Problem(416, "empty range", headers={"Content-Range": f"bytes */{size}"})
    if first == "":
        start, end = max(0, size - int(last)), size - 1
    else:
        start = int(first)
        end = min(size - 1, int(last)) if last else size - 1
    if start >= size or end < start:
        raise Problem(
            416,
            f"range {header} is outside the image of {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


@router.get(
    "/{point_id}/disks/{disk_key}/image",
    summary="Download a disk image (raw), resumable with Range",
    response_class=StreamingResponse,
)
def download_disk_image(
    point_id: int,
    disk_key: int,
    request: Request,
    session: DbSession,
    principal=require(Permission.RUN_RESTORE),
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_range: Annotated[str | None, Header(alias="If-Range")] = None,
):
    from app.repository.connection import open_repository
    from app.repository.errors import RepositoryError

    point = _point(session, point_id)
    try:
        image = find_disk_image(session, point, disk_key)
        repo = open_repository(
            session, image.repository_id, root_key=runtime(request).settings.root_key()
        )
    except RestoreRefused as exc:
        raise conflict(str(exc)) from None
    except RepositoryError as exc:
        raise conflict(f"restore point {point_id}: {exc}") from None
    # Pinned for as long as the transfer lasts: expiry must not delete the image (and the
    # next garbage collection its blocks) under a download that may take hours.
    release = _once(repo.pin(image.manifest_id))
    try:
        return _image_response(
            session, principal, point_id, disk_key, image, repo, release, range_header, if_range
        )
    except BaseException:
        release()
        raise


def _image_response(
    session, principal, point_id, disk_key, image, repo, release, range_header, if_range
):
    """The download of a pinned image; ``release`` runs when the transfer ends."""
    from app.repository.errors import ChunkDamaged, RepositoryError

    try:
        manifest = repo.load_manifest(image.manifest_id)
    except RepositoryError as exc:
        raise conflict(f"restore point {point_id}: {exc}") from None
    size, etag = manifest.size, f'"{manifest.image_hash}"'
    wanted = parse_range(range_header, size) if (not if_range or if_range == etag) else None
    start, end = wanted if wanted else (0, size - 1)
    length = end - start + 1 if size else 0
    chunks = repo.read_image(manifest, start, length)
    # The first block is read before answering: a damaged image is refused with a problem,
    # not cut off after a 200. (Damage further in ends the transfer short of Content-Length.)
    try:
        first = next(chunks, b"")
    except ChunkDamaged as exc:
        block = f"block {exc.index}" if exc.index is not None else "a block"
        raise conflict(
            f"restore point {point_id}, {image.label}: {block} is damaged ({exc.reason}); "
            "the download was refused"
        ) from None
    record(
        session,
        principal.actor,
        "restore.download",
        "restore_point",
        point_id,
        disk=disk_key,
        range=f"{start}-{end}" if wanted else "all",
    )

    def body():
        try:
            if first:
                yield from octets((first,))
            yield from octets(chunks)
        finally:
            release()

    stream = body()
    # A client gone before the first byte: the server never starts the generator, so its
    # ``finally`` never runs; the pin goes when the generator is collected instead.
    weakref.finalize(stream, release)

    name = f"{image.server_name}-disk{disk_key}-rp{point_id}.img"
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(length),
        "ETag": etag,
        "Content-Disposition": attachment(name),
    }
    if wanted:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(
        stream,
        status_code=206 if wanted else 200,
        media_type="application/octet-stream",
        headers=headers,
    )


@router.post(
    "/{point_id}/disks/restore",
    response_model=JobOut,
    status_code=202,
    summary="Restore every disk of a VM image (the whole VM's disks) to a datastore",
)
def restore_all_disks(
    point_id: int,
    body: DiskRestore,
    session: DbSession,
    principal=require(Permission.RUN_RESTORE),
):
    return restore_disk(point_id, None, body, session, principal)


@router.post(
    "/{point_id}/disks/{disk_key}/restore",
    response_model=JobOut,
    status_code=202,
    summary="Restore one disk from the repository to a datastore",
)
def restore_disk(
    point_id: int,
    disk_key: int | None,
    body: DiskRestore,
    session: DbSession,
    principal=require(Permission.RUN_RESTORE),
):
    point = _point(session, point_id)
    try:
        return queue_disk_restore(
            session,
            point,
            disk_key,
            target=body.target,
            confirm=body.confirm,
            datastore=body.datastore,
            actor=principal.actor,
        )
    except RestoreRefused as exc:
        raise invalid(str(exc), "confirm" if "confirm" in str(exc) else None) from None


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` that does its work the first time it is called only."""
    first = threading.Lock()

    def call() -> None:
        if first.acquire(blocking=False):  # never released: the second call finds it held
            fn()

    return call
