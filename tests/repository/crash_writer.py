"""Run as a process: write a large image into a repository until killed (crash-safety test).

    python -m tests.repository.crash_writer <repo dir> <ready file>

Touches <ready file> once some chunks are stored, then keeps writing random blocks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from app.repository import open_repository_at


def blocks(ready: Path, block_size: int):
    n = 0
    while True:
        yield os.urandom(block_size)
        n += 1
        if n == 8:
            ready.touch()


def main() -> None:
    repo = open_repository_at(Path(sys.argv[1]))
    ready = Path(sys.argv[2])
    size = 10_000 * repo.block_size  # never reached: the test kills us first
    repo.write_image(blocks(ready, repo.block_size), size=size, source_info={"crash": True})


if __name__ == "__main__":
    main()
