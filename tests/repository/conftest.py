"""Repositories on the local filesystem, plain and encrypted."""

from __future__ import annotations

import os

import pytest

from app.repository import open_repository_at

ROOT_KEY = b"repository-test-root-key"
MiB = 1024 * 1024


@pytest.fixture(params=["plain", "encrypted"])
def repo(request, tmp_path):
    encrypted = request.param == "encrypted"
    return open_repository_at(
        tmp_path / "repo", key=ROOT_KEY if encrypted else None, create=True, encrypted=encrypted
    )


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
