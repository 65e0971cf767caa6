"""Repositories on the local filesystem (plain and encrypted) and in an S3 bucket on
SeaweedFS (encrypted): the tests that take ``repo`` run on each."""

from __future__ import annotations

import os
import uuid

import pytest

from app.repository import open_repository_at
from app.repository.s3 import S3Location, S3Store
from app.repository.store import open_repository_in

ROOT_KEY = b"repository-test-root-key"
MiB = 1024 * 1024


@pytest.fixture(params=["plain", "encrypted", "s3"])
def repo(request, tmp_path):
    if request.param == "s3":
        return s3_repository(request.getfixturevalue("seaweedfs"), tmp_path, encrypted=True)
    encrypted = request.param == "encrypted"
    return open_repository_at(
        tmp_path / "repo", key=ROOT_KEY if encrypted else None, create=True, encrypted=encrypted
    )


@pytest.fixture(params=["filesystem", "s3"])
def backend(request):
    """Which store a test that makes its own repositories uses (``new_repository``)."""
    return request.param


@pytest.fixture
def new_repository(request, backend, tmp_path):
    """``new_repository(**kw)``: a fresh repository on the test's backend."""
    made = []

    def make(*, encrypted: bool = False, block_size: int | None = None, bucket=None):
        kw = {"block_size": block_size} if block_size else {}
        if backend == "s3":
            peer = request.getfixturevalue("seaweedfs")
            return s3_repository(peer, tmp_path, encrypted=encrypted, bucket=bucket, **kw)
        made.append(tmp_path / f"repo{len(made)}")
        return open_repository_at(
            made[-1], key=ROOT_KEY if encrypted else None, create=True, encrypted=encrypted, **kw
        )

    return make


def s3_store(peer, tmp_path, bucket: str | None = None, prefix: str | None = None) -> S3Store:
    # One shared bucket, a prefix per test: creating a bucket costs SeaweedFS ~1.5 s.
    prefix = prefix or f"t{uuid.uuid4().hex[:12]}/"
    return S3Store(
        S3Location(endpoint=peer.endpoint, bucket=bucket or peer.shared_bucket(), prefix=prefix),
        access_key=peer.access_key,
        secret_key=peer.secret_key,
        lock_dir=tmp_path / "locks",
    )


def s3_repository(peer, tmp_path, *, encrypted: bool, bucket=None, **kw):
    store = s3_store(peer, tmp_path, bucket)
    return open_repository_in(
        store,
        label=store.location.label(),
        key=ROOT_KEY if encrypted else None,
        create=True,
        encrypted=encrypted,
        **kw,
    )


def reopen(repo, **kw):
    """The same repository opened anew, as another process would."""
    return open_repository_in(
        repo.store, label="again", key=ROOT_KEY if repo.encrypted else None, id=repo.id, **kw
    )


def corrupt(repo, key: str, at: int | None = None) -> None:
    """Flip one byte of a stored object (the middle one unless ``at``), on any backend."""
    data = bytearray(repo.store.get(key))
    data[len(data) // 2 if at is None else at] ^= 0xFF
    repo.store.delete(key)
    repo.store.put(key, bytes(data))


def make_image(blocks: list[str], block_size: int, tail: int = 0, seed: int = 1) -> bytes:
    """An image of blocks: 'z' zero, 'r' random, 't' compressible text; plus a short tail."""
    rnd = __import__("random").Random(seed)
    parts = []
    for kind in blocks:
        if kind == "z":
            parts.append(bytes(block_size))
        elif kind == "r":
            parts.append(rnd.randbytes(block_size))
        else:
            line = f"mailbox {rnd.randrange(10**6)} subject hello world\n".encode()
            parts.append((line * (block_size // len(line) + 1))[:block_size])
    if tail:
        parts.append(rnd.randbytes(tail))
    return b"".join(parts)


def random_bytes(n: int) -> bytes:
    return os.urandom(n)
