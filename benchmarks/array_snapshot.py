"""Array snapshots on the reference btrfs array: snapshot, revert and clone of 1 GiB and 4 GiB
volumes (instant and flat in size, or the design is wrong), and the off-host copy of a second
snapshot after 2% of a 4 GiB volume changed, by changed blocks against a full copy.

A fresh btrfs on a loop device (root; see tests/btrfs_fixture.py) holds one consistency group
per size with a database volume full of random bytes and a small log volume. Each operation is
timed ``--repeat`` times and the median is reported. For the copies the page cache is dropped
first, so both read from the disk, and both go into the same repository (so the full copy
gains from deduplication too: the comparison is conservative). The 2% change is written as
1 MiB runs at random places, as a database's page writes cluster in extents.

    .venv/bin/python benchmarks/array_snapshot.py [--repeat 5] [--base /tmp]

Ends with exactly one line:

    RESULT snapshot_s_1g=… snapshot_s_4g=… revert_s_4g=… clone_s_4g=… changed_copy_vs_full=…

``changed_copy_vs_full`` is the changed-block copy's time over the full copy's (lower is
better); the bytes each read are printed above it.
"""

from __future__ import annotations

import os
import sys

# This file is named like the standard library's ``array`` module: take its folder off the
# import path before anything imports that module.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from app.adapters.arrays import BtrfsArray, derived_naa  # noqa: E402
from app.repository import open_repository_at  # noqa: E402
from tests.btrfs_fixture import btrfs_mount  # noqa: E402

GiB = 1024**3
MiB = 1024**2


def fill(array: BtrfsArray, naa: str, size: int) -> None:
    rng = random.Random(size)
    with array.open_volume(naa, write=True) as f:
        for _ in range(size // (4 * MiB)):
            f.write(rng.randbytes(4 * MiB))
        f.flush()
        os.fsync(f.fileno())


def drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        print("  (could not drop the page cache: copies may read from memory)")


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--base", default=None, help="where the btrfs image file goes")
    args = parser.parse_args()
    results: dict[str, float] = {}
    with btrfs_mount("14G", args.base) as mount:
        (mount / "array").mkdir()
        array = BtrfsArray(mount / "array", "bench")
        print(f"btrfs array on a loop device at {mount}")
        groups = {}
        for label, size in (("1g", GiB), ("4g", 4 * GiB)):
            group = f"DB-{label}"
            db, log = derived_naa(f"bench/{label}/db"), derived_naa(f"bench/{label}/log")
            array.create_volume(group, db, size)
            array.create_volume(group, log, 256 * MiB)
            started = time.perf_counter()
            fill(array, db, size)
            fill(array, log, 256 * MiB)
            print(f"{label}: wrote {size / GiB:.0f} GiB in {time.perf_counter() - started:.1f} s")
            groups[label] = (group, db, log)

        for label, (group, db, log) in groups.items():
            snaps, clones, reverts = [], [], []
            for n in range(args.repeat):
                snap_id = f"{group}@s{n}"
                snaps.append(timed(array.create_snapshot, [db, log], f"s{n}"))
                clones.append(timed(array.clone_snapshot, snap_id, f"c{label}{n}"))
                with array.open_volume(db, write=True) as f:  # some damage to undo
                    f.write(b"\xde\xad" * (MiB // 2))
                reverts.append(timed(array.revert_to_snapshot, snap_id))
            for n in range(args.repeat):
                array.delete_clone(f"c{label}{n}")
                array.delete_snapshot(f"{group}@s{n}")
            s, c, r = (statistics.median(x) for x in (snaps, clones, reverts))
            print(
                f"{label}: snapshot {s * 1000:.1f} ms, clone {c * 1000:.1f} ms, "
                f"revert {r * 1000:.1f} ms (median of {args.repeat}; "
                f"max {max(snaps) * 1000:.1f} / {max(clones) * 1000:.1f} / "
                f"{max(reverts) * 1000:.1f} ms)"
            )
            results[f"snapshot_s_{label}"] = s
            results[f"clone_s_{label}"] = c
            results[f"revert_s_{label}"] = r

        # Off-host copy of the 4 GiB database volume.
        group, db, log = groups["4g"]
        size = 4 * GiB
        with tempfile.TemporaryDirectory(prefix="bulwark-bench-repo-", dir=args.base) as tmp:
            repo = open_repository_at(Path(tmp), create=True, encrypted=False)
            first = array.create_snapshot([db, log], "copy-1")
            drop_caches()
            with array.open_snapshot_volume(first.id, db) as f:
                started = time.perf_counter()
                base = repo.write_image(f, size=size, source_info={"bench": 1})
                repo.save_manifest(base)
                t_first = time.perf_counter() - started
            print(f"first full copy of 4 GiB: {t_first:.1f} s")

            rng = random.Random(2)
            changed_bytes = int(size * 0.02)
            with array.open_volume(db, write=True) as f:
                for _ in range(changed_bytes // MiB):
                    f.seek(rng.randrange(0, size // MiB) * MiB)
                    f.write(rng.randbytes(MiB))
            second = array.create_snapshot([db, log], "copy-2")

            areas_started = time.perf_counter()
            areas = array.changed_areas(first.id, second.id, db)
            t_areas = time.perf_counter() - areas_started
            drop_caches()
            with array.open_snapshot_volume(second.id, db) as f:
                started = time.perf_counter()
                areas = array.changed_areas(first.id, second.id, db)
                inc = repo.write_image(
                    f, size=size, source_info={"bench": 2}, previous=base, changed=areas
                )
                t_changed = time.perf_counter() - started
            drop_caches()
            with array.open_snapshot_volume(second.id, db) as f:
                started = time.perf_counter()
                full = repo.write_image(f, size=size, source_info={"bench": 3})
                t_full = time.perf_counter() - started
            assert inc.image_hash == full.image_hash, "changed-block copy differs from full copy"
            repo.abandon(inc)
            repo.abandon(full)
            print(
                f"2% changed ({changed_bytes / MiB:.0f} MiB in 1 MiB runs): extent map "
                f"{t_areas * 1000:.0f} ms, {len(areas)} areas, "
                f"{sum(n for _, n in areas) / MiB:.0f} MiB changed"
            )
            print(
                f"second copy: changed blocks {t_changed:.2f} s "
                f"({inc.stats['read_bytes'] / MiB:.0f} MiB read) vs full {t_full:.2f} s "
                f"({full.stats['read_bytes'] / MiB:.0f} MiB read); images identical"
            )
            results["changed_copy_vs_full"] = t_changed / t_full

    print(
        "RESULT "
        f"snapshot_s_1g={results['snapshot_s_1g']:.4f} "
        f"snapshot_s_4g={results['snapshot_s_4g']:.4f} "
        f"revert_s_4g={results['revert_s_4g']:.4f} "
        f"clone_s_4g={results['clone_s_4g']:.4f} "
        f"changed_copy_vs_full={results['changed_copy_vs_full']:.3f}"
    )


if __name__ == "__main__":
    main()
