"""A real btrfs filesystem on a loop device, for the array driver's tests and benchmark.

Needs root, a free loop device and ``mkfs.btrfs`` (btrfs-progs, scripts/system-deps.sh).
Where one is missing the tests skip, except in CI (``CI=true``), where they fail loudly.
Everything is detached and removed on the way out, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class BtrfsUnavailable(RuntimeError):
    pass


def must_have_btrfs() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise BtrfsUnavailable(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def btrfs_mount(size: str = "2G", base: str | None = None) -> Iterator[Path]:
    """Mount a fresh btrfs of ``size`` (a sparse image file) and yield its mount point."""
    if os.geteuid() != 0:
        raise BtrfsUnavailable("a loop-mounted btrfs needs root")
    for tool in ("losetup", "mkfs.btrfs", "mount", "umount", "btrfs"):
        if shutil.which(tool) is None:
            raise BtrfsUnavailable(f"{tool} is not installed (see scripts/system-deps.sh)")
    work = Path(tempfile.mkdtemp(prefix="bulwark-btrfs-", dir=base))
    image, mount = work / "array.img", work / "mnt"
    mount.mkdir()
    device = None
    mounted = False
    try:
        _run("truncate", "-s", size, str(image))
        device = _run("losetup", "--find", "--show", str(image))
        _run("mkfs.btrfs", "-q", "-f", device)
        _run("mount", "-t", "btrfs", device, str(mount))
        mounted = True
        yield mount
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=120)
        if device:
            subprocess.run(["losetup", "-d", device], capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)
