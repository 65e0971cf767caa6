"""Bulwark's repository against restic on one generated disk image, in the same run.

The image (2 GiB by default) is a mix of 1 MiB regions: zero, random and compressible text.
Measured for both: a full backup; a second backup after 2 % of the regions changed (Bulwark
twice: reading everything, and reading only the changed blocks as changed block tracking
would); a restore of the second backup to a file (``restic dump`` for restic). Both encrypt
(restic always does), both run on all cores, both read the image from the same file.

    .venv/bin/python benchmarks/repository.py [--size-mib 2048] [--dir /var/tmp] [--keep]

Debian's ``borg`` (borgbackup, encrypted repokey-blake2, its default compression) runs the same
steps side by side. Needs Debian's ``restic`` and ``borgbackup`` (scripts/system-deps.sh
installs them). Also the cost of the reuse check (every block carried over checked, size and
seal, as the first changed-blocks backup after a verify does). Ends with one line ``RESULT
full_vs_restic=… restore_vs_restic=… restore_vs_borg=… restore_vs_backup=… full_vs_borg=…
cbt_vs_restic_incremental=… peak_rss_mb=… reuse_check_mibps=… reuse_check_vs_full=…
restore_cpu_vs_restic=… restore_cpu_vs_backup=…``
(throughput ratios: higher is better for Bulwark; ``restore_vs_backup`` is Bulwark's restore
rate over its own full backup's; the check's time as a share of a full backup's: lower is
better; ``restore_cpu_vs_*`` compare CPU seconds, which other load on the machine does not
change as it changes wall time).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The project root instead of benchmarks/ (whose script names, e.g. array.py, would shadow
# standard modules).
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from app.repository import open_repository_at  # noqa: E402
from app.repository.image_writer import ReuseChecks  # noqa: E402

MiB = 1024 * 1024
KEY = b"benchmark-service-secret"


def generate(path: Path, regions: int, seed: int = 7) -> None:
    """Zero, random and compressible 1 MiB regions in about equal shares, streamed."""
    rnd = random.Random(seed)
    words = [f"mailbox{n} subject re: quarterly report".encode() for n in range(200)]
    with open(path, "wb") as fh:
        for _ in range(regions):
            kind = rnd.random()
            if kind < 0.33:
                fh.write(bytes(MiB))
            elif kind < 0.66:
                fh.write(rnd.randbytes(MiB))
            else:
                text = b" ".join(rnd.choice(words) for _ in range(MiB // 30))
                fh.write((text * 2)[:MiB])


def change(path: Path, regions: int, share: float, seed: int = 11) -> list[tuple[int, int]]:
    rnd = random.Random(seed)
    picked = sorted(rnd.sample(range(regions), max(1, round(regions * share))))
    with open(path, "r+b") as fh:
        for r in picked:
            fh.seek(r * MiB)
            fh.write(rnd.randbytes(MiB))
    return [(r * MiB, MiB) for r in picked]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (restic, borg): what a step cost
    whatever else the machine runs, unlike its wall time."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


CPU: dict[str, float] = {}  # CPU seconds of the last timed step, by the name it was given


def timed(fn, cpu_key: str | None = None):
    os.sync()  # the previous step's writeback must not slow this one down
    start, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    if cpu_key:
        CPU[cpu_key] = cpu_seconds() - cpu
    return time.perf_counter() - start, result


def bulwark(work: Path, image: Path, size: int, regions: int) -> dict[str, float]:
    repo = open_repository_at(work / "bulwark-repo", key=KEY, create=True)
    out: dict[str, float] = {}

    def backup(previous=None, changed=None):
        nonlocal repo
        with open(image, "rb") as src:
            m = repo.write_image(
                src, size=size, source_info={"disk": "bench"}, previous=previous, changed=changed
            )
        repo.save_manifest(m)
        return m

    out["full"], first = timed(backup, "full")
    out["full_cpu"] = CPU["full"]
    areas = change(image, regions, 0.02)
    # Each second backup starts from the repository as the full backup left it.
    shutil.copytree(work / "bulwark-repo", work / "bulwark-repo-copy")
    out["second_full_read"], _ = timed(backup)
    shutil.rmtree(work / "bulwark-repo")
    (work / "bulwark-repo-copy").rename(work / "bulwark-repo")
    repo = open_repository_at(work / "bulwark-repo", key=KEY)
    out["second_cbt"], second = timed(lambda: backup(first, areas))
    # The reuse check at its dearest: every block carried over is checked (size and seal),
    # as the first changed-blocks backup after a verify does; a full-read backup checks the
    # chunks it finds stored the same way (its time above includes that).
    checks = ReuseChecks(repo.chunks, frozenset())
    carried = [(i, d) for i, d in enumerate(second.blocks) if d is not None]
    out["check_all"], again = timed(lambda: checks.carried(carried, second.block_length))
    out["checked_mib"] = sum(second.block_length(i) for i, _d in carried) / MiB
    assert not again, "the benchmark's repository is damaged"
    target = work / "bulwark-restore.raw"

    def restore():
        with open(target, "wb") as fh:
            for piece in repo.read_image(second, reuse_buffers=True):
                fh.write(piece)

    out["restore"], _ = timed(restore, "restore")
    out["restore_cpu"] = CPU["restore"]
    out["ok"] = float(sha256(target) == sha256(image))
    target.unlink()
    out["stored_mib"] = (
        sum(f.stat().st_size for f in (work / "bulwark-repo").rglob("*") if f.is_file()) / MiB
    )
    return out


def restic(work: Path, image: Path, regions: int) -> dict[str, float]:
    env = {
        **os.environ,
        "RESTIC_PASSWORD": "benchmark",
        "RESTIC_REPOSITORY": str(work / "restic-repo"),
        "RESTIC_CACHE_DIR": str(work / "restic-cache"),
    }

    def run(*args, stdout=subprocess.DEVNULL):
        subprocess.run(["restic", "--quiet", *args], env=env, check=True, stdout=stdout)

    run("init")
    out: dict[str, float] = {}
    out["full"], _ = timed(lambda: run("backup", str(image)), "full")
    out["full_cpu"] = CPU["full"]
    change(image, regions, 0.02)
    out["second"], _ = timed(lambda: run("backup", str(image)))
    target = work / "restic-restore.raw"

    def restore():
        with open(target, "wb") as fh:
            run("dump", "latest", str(image), stdout=fh)

    out["restore"], _ = timed(restore, "restore")
    out["restore_cpu"] = CPU["restore"]
    out["ok"] = float(sha256(target) == sha256(image))
    target.unlink()
    out["stored_mib"] = (
        sum(f.stat().st_size for f in (work / "restic-repo").rglob("*") if f.is_file()) / MiB
    )
    return out


def borg(work: Path, image: Path, regions: int) -> dict[str, float]:
    """Debian's borg (borgbackup 1.2), encrypted (repokey-blake2), default compression."""
    env = {
        **os.environ,
        "BORG_PASSPHRASE": "benchmark",
        "BORG_REPO": str(work / "borg-repo"),
        "BORG_BASE_DIR": str(work / "borg-base"),
        "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
    }

    def run(*args, stdout=subprocess.DEVNULL, cwd=None, stderr=None):
        subprocess.run(["borg", *args], env=env, check=True, stdout=stdout, cwd=cwd, stderr=stderr)

    run("init", "--encryption=repokey-blake2", stderr=subprocess.DEVNULL)  # its key advice
    out: dict[str, float] = {}
    # Relative paths: the archive holds "image.raw", which extract finds again.
    out["full"], _ = timed(lambda: run("create", "::one", image.name, cwd=image.parent), "full")
    out["full_cpu"] = CPU["full"]
    change(image, regions, 0.02)
    out["second"], _ = timed(lambda: run("create", "::two", image.name, cwd=image.parent))
    target = work / "borg-restore.raw"

    def restore():
        with open(target, "wb") as fh:
            run("extract", "--stdout", "::two", image.name, stdout=fh)

    out["restore"], _ = timed(restore, "restore")
    out["restore_cpu"] = CPU["restore"]
    out["ok"] = float(sha256(target) == sha256(image))
    target.unlink()
    out["stored_mib"] = (
        sum(f.stat().st_size for f in (work / "borg-repo").rglob("*") if f.is_file()) / MiB
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=3, help="runs; the median of each counts")
    parser.add_argument("--dir", default="/var/tmp", help="where the image and repositories go")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    for tool, package in (("restic", "restic"), ("borg", "borgbackup")):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install {package} (or scripts/system-deps.sh)")
    regions = args.size_mib
    size = regions * MiB
    runs: list[tuple[dict[str, float], dict[str, float], dict[str, float]]] = []
    for _ in range(args.reps):
        # Bulwark and restic take turns in every run, so both see the same machine load.
        work = Path(tempfile.mkdtemp(prefix="bulwark-bench-repo-", dir=args.dir))
        try:
            image = work / "image.raw"
            generate(image, regions)
            b = bulwark(work, image, size, regions)
            generate(image, regions)  # the same image again for restic, then the same change
            r = restic(work, image, regions)
            generate(image, regions)
            g = borg(work, image, regions)
            runs.append((b, r, g))
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    b = {k: statistics.median(run[0][k] for run in runs) for k in runs[0][0]}
    r = {k: statistics.median(run[1][k] for run in runs) for k in runs[0][1]}
    g = {k: statistics.median(run[2][k] for run in runs) for k in runs[0][2]}
    ok_b = all(run[0]["ok"] for run in runs)
    ok_r = all(run[1]["ok"] for run in runs)
    ok_g = all(run[2]["ok"] for run in runs)

    def mbps(seconds: float, nbytes: int = size) -> float:
        return nbytes / MiB / seconds

    rows = [
        ("full backup", b["full"], r["full"], g["full"]),
        ("2nd backup, read all", b["second_full_read"], r["second"], g["second"]),
        ("2nd backup, CBT", b["second_cbt"], r["second"], g["second"]),
        ("restore", b["restore"], r["restore"], g["restore"]),
    ]
    print(
        f"image {args.size_mib} MiB (zero/random/text 1 MiB regions), 2% changed; "
        f"{os.cpu_count()} cores; median of {len(runs)} run(s)"
    )
    print(
        f"{'step':<22}{'bulwark s':>10}{'MiB/s':>7}{'restic s':>10}{'MiB/s':>7}{'ratio':>7}"
        f"{'borg s':>9}{'MiB/s':>7}{'ratio':>7}"
    )
    for name, bt, rt, gt in rows:
        print(
            f"{name:<22}{bt:>10.2f}{mbps(bt):>7.0f}{rt:>10.2f}{mbps(rt):>7.0f}{rt / bt:>7.2f}"
            f"{gt:>9.2f}{mbps(gt):>7.0f}{gt / bt:>7.2f}"
        )
    print(
        f"stored MiB: bulwark {b['stored_mib']:.0f}, restic {r['stored_mib']:.0f}, "
        f"borg {g['stored_mib']:.0f}; restores byte-identical: bulwark {ok_b}, restic {ok_r}, "
        f"borg {ok_g}"
    )
    print(
        f"bulwark restore at {b['full'] / b['restore']:.2f}x its own full backup's rate "
        "(target >= 0.80), "
        f"{r['restore'] / b['restore']:.2f}x restic's (target >= 2)"
    )
    print(
        "CPU seconds (this process and its children; steady whatever else the machine runs): "
        f"full backup bulwark {b['full_cpu']:.1f}, restic {r['full_cpu']:.1f}, "
        f"borg {g['full_cpu']:.1f}; restore bulwark {b['restore_cpu']:.1f}, "
        f"restic {r['restore_cpu']:.1f}, borg {g['restore_cpu']:.1f}; bulwark's restore costs "
        f"{b['restore_cpu'] / b['full_cpu']:.2f}x its backup's CPU"
    )
    check_rate = mbps(b["check_all"], b["checked_mib"] * MiB)
    print(
        f"reuse check of every stored block ({b['checked_mib']:.0f} MiB, the first CBT backup "
        f"after a verify): {b['check_all']:.2f} s, {check_rate:.0f} MiB/s, "
        f"{100 * b['check_all'] / b['full']:.0f}% of a full backup's time"
    )
    print(f"bulwark peak RSS {peak_rss_mb:.0f} MiB (whole benchmark process)")
    print(
        f"RESULT full_vs_restic={r['full'] / b['full']:.2f} "
        f"restore_vs_restic={r['restore'] / b['restore']:.2f} "
        f"restore_vs_borg={g['restore'] / b['restore']:.2f} "
        f"restore_vs_backup={b['full'] / b['restore']:.2f} "
        f"full_vs_borg={g['full'] / b['full']:.2f} "
        f"cbt_vs_restic_incremental={r['second'] / b['second_cbt']:.2f} "
        f"peak_rss_mb={peak_rss_mb:.0f} "
        f"reuse_check_mibps={check_rate:.0f} "
        f"reuse_check_vs_full={b['check_all'] / b['full']:.2f} "
        f"restore_cpu_vs_restic={r['restore_cpu'] / b['restore_cpu']:.2f} "
        f"restore_cpu_vs_backup={b['full_cpu'] / b['restore_cpu']:.2f}"
    )


if __name__ == "__main__":
    main()
