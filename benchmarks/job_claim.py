"""Claim throughput of the job engine: N worker threads drain a queue of M jobs.

    .venv/bin/python benchmarks/job_claim.py                      # SQLite in a temp dir
    .venv/bin/python benchmarks/job_claim.py --postgresql         # a throwaway PG database
    .venv/bin/python benchmarks/job_claim.py --workers 8 --jobs 2000

Each worker claims a job and marks it succeeded (no handler work), so the figures are the
queue's own cost: claims per second and the latency of one claim+finish.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, insert, text

from app.db import migrate
from app.db.models import Job
from app.db.session import Database
from app.domain.jobs import JobKind, JobState
from app.jobs.engine import JobEngine

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def run(url: str, workers: int, jobs: int) -> None:
    migrate.upgrade(url)
    db = Database(url)
    try:
        with db.session() as session:
            session.execute(
                insert(Job),
                [
                    {"kind": JobKind.VERIFY, "state": JobState.QUEUED, "params": {}}
                    for _ in range(jobs)
                ],
            )
        engine = JobEngine(db, lease_seconds=60)
        latencies: list[float] = []
        lock = threading.Lock()
        start = threading.Barrier(workers + 1)

        def work(n: int) -> None:
            mine: list[float] = []
            start.wait()
            while True:
                t0 = time.perf_counter()
                job = engine.claim(f"bench-{n}")
                if job is None:
                    break
                engine.succeed(job.id, f"bench-{n}")
                mine.append(time.perf_counter() - t0)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        latencies.sort()
        p95 = latencies[int(len(latencies) * 0.95) - 1] if latencies else 0.0
        print(
            f"{db.engine.dialect.name}: {len(latencies)} jobs, {workers} workers, "
            f"{elapsed:.2f} s, {len(latencies) / elapsed:.0f} claims/s, "
            f"claim+finish median {statistics.median(latencies) * 1000:.1f} ms, "
            f"p95 {p95 * 1000:.1f} ms"
        )
    finally:
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--postgresql", action="store_true")
    args = parser.parse_args()
    if args.postgresql:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"bulwark_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            run(admin.url.set(database=name).render_as_string(False), args.workers, args.jobs)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(f"sqlite:///{Path(tmp) / 'bench.db'}", args.workers, args.jobs)


if __name__ == "__main__":
    main()
