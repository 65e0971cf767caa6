"""A full disk: the error names the repository, its path and how full it is; the chunks of
the attempt that failed are reclaimable at once (their writer is known dead), not after the
five-minute grace."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.repository import RepositoryError, open_repository_at
from app.repository.errors import RepositoryFull
from app.repository.gc import collect_garbage

BS = 256 * 1024


@contextlib.contextmanager
def small_disk(size: str = "6m") -> Iterator[Path]:
    """A tmpfs of ``size``: a disk that really fills up (mounting needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where = Path(tempfile.mkdtemp(prefix="bulwark-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
        where.rmdir()


def test_a_full_disk_is_named_and_the_failed_attempt_reclaimed_at_once():
    with small_disk() as disk:
        repo = open_repository_at(disk / "lib", create=True, block_size=BS)
        repo.store.name = "library-1"  # what opening it through its connection sets
        image = os.urandom(40 * BS)  # 10 MiB of incompressible blocks onto 6 MiB
        with pytest.raises(RepositoryFull) as caught:
            repo.write_image(io.BytesIO(image), size=len(image), source_info={})
        text = str(caught.value)
        assert isinstance(caught.value, RepositoryError)
        assert f"repository 'library-1' at {disk / 'lib'} is full: " in text
        assert "% of 0.0 GiB used" in text and "MiB free" in text
        stored = list(repo.store.list("chunks/"))
        assert stored  # what the attempt stored before the disk filled

        # The failed writer recorded its chunks: the next collection takes them now,
        # although they are seconds old (the grace is five minutes).
        report = collect_garbage(repo, images_only=True)
        assert report.removed_abandoned == len(stored) and report.kept_young == 0
        assert list(repo.store.list("chunks/")) == []
        assert list(repo.store.list("abandoned/")) == []
        # Room again: a smaller image fits.
        small = os.urandom(4 * BS)
        m = repo.write_image(io.BytesIO(small), size=len(small), source_info={})
        repo.save_manifest(m)
        assert b"".join(repo.read_image(m)) == small


def test_a_chunk_used_again_after_the_failure_is_kept(tmp_path):
    repo = open_repository_at(tmp_path / "lib", create=True, block_size=BS)
    image = os.urandom(4 * BS)
    first = repo.write_image(io.BytesIO(image), size=len(image), source_info={})
    repo.abandon(first)  # the job failed before saving it
    second = repo.write_image(io.BytesIO(image), size=len(image), source_info={})
    repo.save_manifest(second)  # the same blocks, touched again and named
    report = collect_garbage(repo, images_only=True)
    assert report.removed_abandoned == 0
    assert b"".join(repo.read_image(second)) == image
