"""Job throughput: 1,000 VM-snapshot backups through the job engine, with 1, 2 and 4 workers.

Starts a vSphere lab with ``--vms 1000``, creates a throwaway PostgreSQL database, reads the
lab's inventory into it, and protects every ordinary VM as an Exchange server with one
database on a VMDK. Then, for each worker count, one ``vmfs_snapshot`` policy
(hot_application) over all of those servers is run once: its policy-wide job queues one
backup job per server, and that many ``bulwark worker``-like processes drain the queue. Every
job does what a real one does: claim with a lease, heartbeat thread, events and progress,
leftover bookkeeping, a vCenter session, CreateSnapshot_Task and the wait for it, the
restore-point catalog write, retention on primary storage, and the final state.

Every call into the vSphere adapter (session login and logout, snapshot tasks, listings) is
timed inside the workers, so the engine's own time per job (everything else the job thread
spends, from claim to final state) is reported apart from the time spent waiting on vCenter.
The heartbeat thread's database calls run beside the job and are reported separately.

    .venv/bin/python benchmarks/jobs_throughput.py [--jobs 1000] [--workers 1,2,4]
        [--mode process|thread] [--pg-admin-url URL]

Ends with exactly one line:

    RESULT jobs=... overhead_ms_per_job=... jobs_per_s_1=... jobs_per_s_2=... jobs_per_s_4=...

``overhead_ms_per_job`` is from the one-worker run (no competition for the CPU or for rows);
target: under 10 ms per job.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, select, text  # noqa: E402

from app.adapters import vsphere  # noqa: E402
from app.composition import load_handlers  # noqa: E402
from app.config import Settings  # noqa: E402
from app.db import migrate  # noqa: E402
from app.db.models import (  # noqa: E402
    Connection,
    ExchangeDatabase,
    ExchangeServer,
    Job,
    Policy,
    PolicyTarget,
    RestorePoint,
)
from app.domain.connections import ConnectionKind  # noqa: E402
from app.domain.jobs import JobKind, JobState  # noqa: E402
from app.domain.protection import Consistency, DatabaseLayout, ProtectionMethod  # noqa: E402
from app.inventory.sync import sync_connection  # noqa: E402
from app.jobs import Worker  # noqa: E402
from app.state import Runtime  # noqa: E402
from tests.lab_fixture import running_lab  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SECRET = "benchmark-secret-key-not-for-production"

# What the workers wrap with timers: the vSphere adapter functions the backup path calls.
VCENTER_CALLS = (
    "connect",
    "create_snapshot",
    "list_snapshots",
    "remove_snapshot",
    "revert_snapshot",
    "wait_for_task",
    "power_on",
    "power_state",
    "shut_down",
)


# -- timing inside a worker ------------------------------------------------------------------


@dataclass
class Timers:
    """Seconds spent per labelled activity, per thread kind."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    local: threading.local = field(default_factory=threading.local)

    def add(self, label: str, elapsed: float, cpu: float = 0.0) -> None:
        with self.lock:
            self.seconds[label] += elapsed
            self.cpu[label] += cpu
            self.calls[label] += 1

    def timed(self, label: str, fn):
        """``fn`` wrapped: its time goes to ``label``; nested vCenter time is not counted
        twice (an outer vCenter call includes the inner ones)."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            depth = getattr(self.local, "depth", 0)
            self.local.depth = depth + 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.local.depth = depth
                if depth == 0:
                    self.add(label, time.perf_counter() - t0)

        return wrapper


def instrument_adapter(timers: Timers) -> None:
    """Wrap the vSphere adapter calls: the time spent waiting on vCenter."""
    for name in VCENTER_CALLS:
        setattr(vsphere, name, timers.timed("vcenter", getattr(vsphere, name)))
    # Jobs open sessions through app.inventory.vcenter.open_client, which calls
    # vsphere.connect through the package attribute: wrapped above. Logout, and the check of
    # a pooled session before a job reuses it:
    import app.protection.bindings.vcenter as access_module

    vsphere.VSphereClient.close = timers.timed("vcenter", vsphere.VSphereClient.close)
    access_module._alive = timers.timed("vcenter", access_module._alive)


def instrument_engine(timers: Timers, worker: Worker) -> None:
    """Wrap the engine's calls, for the breakdown of the engine's time per job."""
    import app.protection.handlers.backup as backup_module

    engine = worker.engine
    for name, label in (
        ("add_event", "engine: events, progress"),
        ("save_progress", "engine: events, progress"),
        ("save_leftovers", "engine: leftovers"),
        ("succeed", "engine: final state"),
        ("fail", "engine: final state"),
        ("poll", "engine: heartbeat (beside the job)"),
        ("extend_lease", "engine: heartbeat (beside the job)"),
    ):
        setattr(engine, name, engine_timed(timers, label, getattr(engine, name)))
    if not hasattr(backup_module._catalog, "__wrapped__"):
        backup_module._catalog = engine_timed(
            timers, "engine: catalog write", backup_module._catalog
        )


def engine_timed(timers: Timers, label: str, fn):
    """``fn`` timed under ``label``; calls from a job's heartbeat thread count as heartbeat,
    and a call inside another timed engine call (the catalog write clearing the job's
    leftovers in its transaction) is not counted twice."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        depth = getattr(timers.local, "engine_depth", 0)
        timers.local.engine_depth = depth + 1
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            timers.local.engine_depth = depth
            if depth == 0:
                beside = threading.current_thread().name.endswith("-heartbeat")
                timers.add(
                    "engine: heartbeat (beside the job)" if beside else label,
                    time.perf_counter() - t0,
                    time.thread_time() - c0,
                )

    return wrapper


def worker_main(
    url: str, data_dir: str, name: str, ready, go, results, threads: int = 1
) -> None:  # pragma: no cover - runs in a worker process
    """One worker (process): drain the queue; report timings."""
    load_handlers()
    # As `bulwark worker` does: no ping before each pooled connection is used.
    runtime = Runtime.from_settings(
        Settings(database_url=url, secret_key=SECRET, data_dir=Path(data_dir)), pre_ping=False
    )
    timers = Timers()
    workers = [
        Worker(runtime, f"{name}-{i}" if threads > 1 else name, ["vcenter"]) for i in range(threads)
    ]
    instrument_adapter(timers)
    for w in workers:
        w.register()
        instrument_engine(timers, w)
    trips = count_round_trips(runtime)
    ready.set()
    go.wait()
    jobs: list[tuple[float, float, float]] = []  # (claim s, claim CPU s, execute s) per job
    lock = threading.Lock()
    cpu0 = time.process_time()

    def drain(w: Worker) -> None:
        while True:
            t0, c0 = time.perf_counter(), time.thread_time()
            job = w.claim()
            t1, c1 = time.perf_counter(), time.thread_time()
            if job is None:
                return
            w.execute(job)
            t2 = time.perf_counter()
            with lock:
                jobs.append((t1 - t0, c1 - c0, t2 - t1))

    pool = [threading.Thread(target=drain, args=(w,)) for w in workers]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    runtime.db.dispose()
    results.put(
        {
            "name": name,
            "jobs": jobs,
            "seconds": dict(timers.seconds),
            "cpu": dict(timers.cpu),
            "calls": dict(timers.calls),
            "process_cpu": time.process_time() - cpu0,
            "round_trips": dict(trips),
        }
    )


def count_round_trips(runtime: Runtime) -> dict[str, int]:
    """Count the worker's statements and transactions (each a round trip to PostgreSQL; a
    figure the machine's load does not change, unlike the times)."""
    from sqlalchemy import event

    counts = {"statements": 0, "transactions": 0}
    lock = threading.Lock()

    def statement(*_args) -> None:
        with lock:
            counts["statements"] += 1

    def transaction(*_args) -> None:
        with lock:
            counts["transactions"] += 1  # BEGIN … COMMIT: two more round trips

    event.listen(runtime.db.engine, "before_cursor_execute", statement)
    event.listen(runtime.db.engine, "commit", transaction)
    return counts


# -- setup -------------------------------------------------------------------------------------


def new_pg_database(admin_url: str) -> tuple[str, Any]:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"bulwark_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    return url, (admin, name)


def drop_pg_database(handle: Any) -> None:
    admin, name = handle
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def prepare(runtime: Runtime, lab, servers: int) -> tuple[int, list[int]]:
    """The lab vCenter as a connection, its inventory synced, ``servers`` ordinary VMs
    protected as Exchange servers (one database on their first VMDK each)."""
    db = runtime.db
    with db.session() as session:
        conn = Connection(
            name="bench-lab",
            kind=ConnectionKind.VCENTER,
            host=lab.host,
            port=lab.port,
            username=lab.username,
            trusted_thumbprint=lab.thumbprint,
        )
        conn.secret_ciphertext = runtime.secrets.seal(lab.password, "connection")
        session.add(conn)
        session.flush()
        connection_id = conn.id
    with vsphere.connect(
        lab.host, lab.port, lab.username, lab.password, trusted_thumbprint=lab.thumbprint
    ) as client:
        inventory = vsphere.read_inventory(client)
    with db.session() as session:
        sync_connection(session, connection_id, inventory)
    vms = lab.estate["ordinary_vms"][:servers]
    if len(vms) < servers:
        raise SystemExit(f"the lab has only {len(vms)} ordinary VMs; start it with more")
    with db.session() as session:
        rows = []
        for vm in vms:
            server = ExchangeServer(
                name=f"bench-{vm['name']}", connection_id=connection_id, vm_moref=vm["moref"]
            )
            server.databases = [
                ExchangeDatabase(
                    name=f"DB-{vm['name']}", database_disk_key=2000, layout=DatabaseLayout.VMDK
                )
            ]
            rows.append(server)
        session.add_all(rows)
        session.flush()
        targets = [(s.id, s.databases[0].id) for s in rows]
    return connection_id, targets


def queue_run(runtime: Runtime, targets: list[tuple[int, int]], label: str) -> int:
    """A policy over every target and its policy-wide job, run in this process: it queues one
    backup job per target. Returns the policy's id."""
    with runtime.db.session() as session:
        policy = Policy(
            name=f"bench-{label}",
            method=ProtectionMethod.VMFS_SNAPSHOT,
            consistency=Consistency.HOT_APPLICATION,
            rpo_minutes=60,
            keep_on_primary=2,
        )
        policy.targets = [PolicyTarget(server_id=s, database_id=d) for s, d in targets]
        session.add(policy)
        session.flush()
        policy_id = policy.id
        session.add(Job(kind=JobKind.BACKUP, policy_id=policy_id, created_by="benchmark"))
    Worker(runtime, f"dispatch-{label}", ["vcenter"]).run_once()
    # Fresh statistics for the planner, as autovacuum keeps them on a running system (a
    # thousand rows inserted at once would otherwise be planned as an empty table).
    with runtime.db.engine.connect() as conn:
        conn.execute(text("ANALYZE jobs"))
        conn.commit()
    return policy_id


@dataclass
class RunResult:
    workers: int
    jobs: int
    wall_s: float
    per_job: dict[str, float]  # label -> ms per job
    engine_cpu_ms: float  # CPU time of the engine's calls, per job
    cpu_ms: dict[str, float]  # CPU per job of the worker processes, the lab, PostgreSQL
    overhead_ms: float
    vcenter_ms: float
    statements: float  # per job, all of the worker's (engine and handler)
    transactions: float
    claim_ms: float
    failed: int


LAB_PID = 0


def cpu_of_peers() -> dict[str, float]:
    """CPU seconds used so far by the lab and by PostgreSQL's processes (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {"lab (vCenter)": 0.0, "PostgreSQL": 0.0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        used = (int(fields[11]) + int(fields[12])) / tick
        if int(entry) == LAB_PID:
            found["lab (vCenter)"] += used
        elif name.startswith("postgres"):
            found["PostgreSQL"] += used
    return found


def run_once(
    url: str, data_dir: str, runtime: Runtime, targets, workers: int, mode: str
) -> RunResult:
    policy_id = queue_run(runtime, targets, f"{workers}w-{uuid.uuid4().hex[:6]}")
    ctx = mp.get_context("spawn")
    ready_events, go = [], ctx.Event()
    results = ctx.Queue()
    procs = []
    count, threads = (workers, 1) if mode == "process" else (1, workers)
    for i in range(count):
        ready = ctx.Event()
        p = ctx.Process(
            target=worker_main,
            args=(url, data_dir, f"bench-w{workers}-{i}", ready, go, results, threads),
        )
        p.start()
        procs.append(p)
        ready_events.append(ready)
    for ready in ready_events:
        if not ready.wait(120):
            raise SystemExit("a worker process did not start")
    cpu_before = cpu_of_peers()
    t0 = time.perf_counter()
    go.set()
    reports = [results.get(timeout=3600) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(30)

    with runtime.db.session() as session:
        states = dict(
            session.execute(
                select(Job.state, func.count(Job.id))
                .where(Job.kind == JobKind.BACKUP, Job.policy_id == policy_id)
                .where(Job.server_id.is_not(None))
                .group_by(Job.state)
            ).all()
        )
    jobs = [j for r in reports for j in r["jobs"]]
    if len(jobs) != len(targets):
        print(f"  warning: {len(jobs)} jobs ran, {len(targets)} were queued")
    n = len(jobs)
    seconds: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    for r in reports:
        for label, s in r["seconds"].items():
            seconds[label] += s
        for label, s in r["cpu"].items():
            cpu[label] += s
    claim_s = sum(c for c, _, _ in jobs)
    claim_cpu_s = sum(c for _, c, _ in jobs)
    execute_s = sum(e for _, _, e in jobs)
    vcenter_s = seconds.get("vcenter", 0.0)
    # The engine's own work: claim, heartbeat, events and progress, leftovers, catalog write,
    # final state. The rest of the job thread's time, apart from waiting on vCenter, is the
    # handler's own: reading the policy and target, the connection's secrets, retention's
    # queries, pyVmomi and Python work between calls.
    engine_s = {label: s for label, s in seconds.items() if label.startswith("engine")}
    in_thread_s = sum(s for label, s in engine_s.items() if "heartbeat" not in label)
    overhead_s = claim_s + sum(engine_s.values())
    per_job = {"engine: claim": claim_s * 1000 / max(n, 1)}
    per_job |= {label: s * 1000 / max(n, 1) for label, s in sorted(engine_s.items())}
    per_job["handler's own work (not engine)"] = (
        (execute_s - vcenter_s - in_thread_s) * 1000 / max(n, 1)
    )
    engine_cpu_s = claim_cpu_s + sum(s for label, s in cpu.items() if label.startswith("engine"))
    machine = {
        "worker processes": sum(r["process_cpu"] for r in reports),
        **{name: after - cpu_before.get(name, 0.0) for name, after in cpu_of_peers().items()},
    }
    return RunResult(
        workers=workers,
        jobs=n,
        wall_s=wall,
        per_job=per_job,
        engine_cpu_ms=engine_cpu_s * 1000 / max(n, 1),
        cpu_ms={k: v * 1000 / max(n, 1) for k, v in machine.items()},
        overhead_ms=overhead_s * 1000 / max(n, 1),
        statements=sum(r["round_trips"]["statements"] for r in reports) / max(n, 1),
        transactions=sum(r["round_trips"]["transactions"] for r in reports) / max(n, 1),
        vcenter_ms=vcenter_s * 1000 / max(n, 1),
        claim_ms=claim_s * 1000 / max(n, 1),
        failed=sum(v for k, v in states.items() if k != JobState.SUCCEEDED),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="backup jobs per run")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to run, e.g. 1,2,4")
    parser.add_argument(
        "--mode",
        choices=("process", "thread"),
        default="process",
        help="workers as processes (as `bulwark worker` runs) or threads in one process",
    )
    parser.add_argument("--pg-admin-url", default=os.environ.get("BULWARK_BENCH_PG", PG_ADMIN))
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",") if x.strip()]

    load_handlers()
    print(f"starting a lab with {args.jobs} ordinary VMs ...", flush=True)
    global LAB_PID
    with running_lab(vms=args.jobs) as lab, tempfile.TemporaryDirectory() as data_dir:
        LAB_PID = lab.pid
        print(f"  {lab.estate['vm_count_total']} VMs in {lab.estate['startup_seconds']:.1f} s")
        url, handle = new_pg_database(args.pg_admin_url)
        try:
            migrate.upgrade(url)
            runtime = Runtime.from_settings(
                Settings(database_url=url, secret_key=SECRET, data_dir=Path(data_dir))
            )
            t0 = time.perf_counter()
            _, targets = prepare(runtime, lab, args.jobs)
            print(
                f"  inventory synced, {len(targets)} servers protected in "
                f"{time.perf_counter() - t0:.1f} s"
            )
            results = []
            for workers in counts:
                print(f"\n{workers} worker(s) ({args.mode}es), {args.jobs} jobs ...", flush=True)
                r = run_once(url, data_dir, runtime, targets, workers, args.mode)
                results.append(r)
                report(r)
            with runtime.db.session() as session:
                points = session.scalar(select(func.count(RestorePoint.id)))
            print(f"\nrestore points cataloged: {points}")
            runtime.db.dispose()
        finally:
            drop_pg_database(handle)

    by_workers = {r.workers: r for r in results}
    base = by_workers.get(1, results[0])
    total_jobs = sum(r.jobs for r in results)
    failed = sum(r.failed for r in results)
    print(
        f"\nsummary: {total_jobs} jobs, {failed} not succeeded; engine overhead "
        f"{base.overhead_ms:.1f} ms/job with one worker (target < 10 ms), vCenter "
        f"{base.vcenter_ms:.1f} ms/job"
    )
    fields = [f"jobs={base.jobs}", f"overhead_ms_per_job={base.overhead_ms:.1f}"]
    for n in (1, 2, 4):
        r = by_workers.get(n)
        fields.append(f"jobs_per_s_{n}={(r.jobs / r.wall_s) if r else float('nan'):.1f}")
    print("RESULT " + " ".join(fields))
    return 0 if failed == 0 else 1


def report(r: RunResult) -> None:
    rate = r.jobs / r.wall_s if r.wall_s else float("nan")
    print(f"  {r.jobs} jobs in {r.wall_s:.1f} s: {rate:.1f} jobs/s ({r.failed} not succeeded)")
    print(f"  per job: waiting on vCenter {r.vcenter_ms:.1f} ms, engine {r.overhead_ms:.1f} ms")
    for label, ms in r.per_job.items():
        print(f"    {label:<36} {ms:6.2f} ms")
    print(f"  engine CPU time (in its own threads): {r.engine_cpu_ms:.1f} ms/job")
    print(
        f"  database per job (engine and handler): {r.statements:.1f} statements, "
        f"{r.transactions:.1f} committed transactions"
    )
    seen = {k: v for k, v in r.cpu_ms.items() if v > 0}  # PostgreSQL may run out of sight
    total = sum(seen.values())
    parts = ", ".join(f"{k} {v:.1f}" for k, v in seen.items())
    print(
        f"  CPU per job: {total:.1f} ms ({parts}); on {os.cpu_count()} CPUs that allows "
        f"at most {os.cpu_count() * 1000 / total if total else float('nan'):.0f} jobs/s"
    )


if __name__ == "__main__":
    sys.exit(main())
