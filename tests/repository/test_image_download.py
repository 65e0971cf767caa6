"""Disk-image downloads are byte-identical for every kind of repository and block.

Blocks of 1 MiB take every path of the codec: zero (not stored), text (compressed below the
one-call AES size), hex (compressed, still above it) and random (stored as is, above it).
An encrypted random block used to open into a ``bytearray``, which Starlette's
``StreamingResponse`` tried to ``.encode()``: the download broke after its 200.
"""

from __future__ import annotations

import io
import random

import pytest

from app.db.models import ExchangeServer, RestorePoint, RestorePointCopy
from app.db.types import utcnow
from app.domain.protection import Consistency, CopyLocation, ProtectionMethod
from app.repository import open_repository, open_repository_at
from tests.repository.test_jobs_and_api import add_repository

BS = 1024 * 1024
DISK = 2000


def block(kind: str, rnd: random.Random) -> bytes:
    if kind == "zero":
        return bytes(BS)
    if kind == "random":
        return rnd.randbytes(BS)
    if kind == "hex":  # about half the size compressed: above 256 KiB still
        return rnd.randbytes(BS // 2).hex().encode()
    line = f"mailbox {rnd.randrange(10**6)} subject hello world\n".encode()
    return (line * (BS // len(line) + 1))[:BS]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("kind", ["random", "hex", "text"])
def test_download_is_byte_identical(client, admin, app, tmp_path, encrypted, kind):
    runtime = app.state.runtime
    path = tmp_path / "lib"
    open_repository_at(
        path, key=runtime.settings.root_key(), create=True, encrypted=encrypted, block_size=BS
    )
    repo_id = add_repository(client, admin, path, encrypted=encrypted)
    rnd = random.Random(7)
    # Mixed with a zero block and a short tail, so ranges cross block kinds.
    image = block(kind, rnd) + block("zero", rnd) + block(kind, rnd) + rnd.randbytes(1000)
    with runtime.db.session() as session:
        repo = open_repository(session, repo_id, root_key=runtime.settings.root_key())
        manifest = repo.write_image(io.BytesIO(image), size=len(image), source_info={})
        repo.save_manifest(manifest)
        server = ExchangeServer(name="ex01")
        session.add(server)
        session.flush()
        point = RestorePoint(
            server_id=server.id,
            captured_at=utcnow(),
            method=ProtectionMethod.VM_IMAGE,
            consistency=Consistency.CRASH,
            details={
                "repository_id": repo_id,
                "disks": [{"key": DISK, "label": "Hard disk 1", "manifest": manifest.id}],
            },
        )
        point.copies.append(
            RestorePointCopy(
                location=CopyLocation.REPOSITORY, connection_id=repo_id, reference=manifest.id
            )
        )
        session.add(point)
        session.flush()
        point_id = point.id
    url = f"/api/v1/restore-points/{point_id}/disks/{DISK}/image"
    whole = client.get(url, headers=admin)
    assert whole.status_code == 200, whole.text
    assert int(whole.headers["content-length"]) == len(image)
    assert whole.content == image
    # A range that starts inside the first block and ends inside the third.
    lo, hi = BS // 3, 2 * BS + BS // 5
    part = client.get(url, headers={**admin, "Range": f"bytes={lo}-{hi}"})
    assert part.status_code == 206, part.text
    assert part.content == image[lo : hi + 1]
