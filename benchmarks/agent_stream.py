"""The agent stream backup on loopback against the repository's local image write.

A stand-in Exchange database (2 GiB of random pages by default) with 1 GiB of logs is backed
up by a real ``bulwark agent`` through a real ``bulwark serve`` (HTTPS on loopback, SQLite)
into a filesystem repository; the same bytes are written with ``Repository.write_image``
into a fresh repository of the same kind. Then: an unchanged second full (only digests cross),
an incremental of 256 new logs, and a restore of the full to another path.

    .venv/bin/python benchmarks/agent_stream.py [--db-mib 2048] [--logs-mib 1024] [--dir /var/tmp]

Ends with ``RESULT agent_vs_local=… second_full_ratio=… incr_s=… restore_mib_s=…
agent_peak_rss_mb=… service_peak_rss_mb=…`` (agent_vs_local: the agent's throughput over the
local write's; target ≥ 0.8; second_full_ratio: the unchanged full's time over the first's,
target < 0.1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import httpx  # noqa: E402

from app.agent import standin  # noqa: E402
from app.repository import open_repository_at  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
SECRET = "benchmark-service-secret"
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Run:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BULWARK_")}
        self.env.update(
            BULWARK_DATA_DIR=str(tmp / "data"),
            BULWARK_SECRET_KEY=SECRET,
            BULWARK_ADMIN_PASSWORD="benchmark-admin-password",
            BULWARK_LOG_LEVEL="WARNING",
            BULWARK_INVENTORY_RESYNC_MINUTES="0",
            BULWARK_REPOSITORY_EXPIRE_MINUTES="0",
            BULWARK_REPOSITORY_VERIFY_MINUTES="0",
        )
        port = _port()
        self.url = f"https://127.0.0.1:{port}"
        self.serve = subprocess.Popen(
            [PY, "-m", "app", "serve", "--port", str(port)],
            cwd=ROOT,
            env=self.env,
            stdout=open(tmp / "serve.log", "w"),  # noqa: SIM115 - lives as long as the process
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(self.url + "/readyz", verify=False, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.serve.poll() is not None:
                raise SystemExit((tmp / "serve.log").read_text())
            time.sleep(0.3)
        token = subprocess.run(
            [PY, "-m", "app", "token", "create", "admin", "--name", "bench"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.api = httpx.Client(
            base_url=self.url,
            verify=False,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        self.agent: subprocess.Popen | None = None

    def ok(self, method: str, path: str, **kw):
        r = self.api.request(method, path, **kw)
        if r.status_code >= 300:
            raise SystemExit(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    def job(self, body: dict) -> tuple[dict, float]:
        start = time.monotonic()
        job = self.ok("POST", "/api/v1/jobs", json=body)
        while True:
            job = self.ok("GET", f"/api/v1/jobs/{job['id']}")
            if job["state"] not in ("queued", "running"):
                break
            time.sleep(0.1)
        took = time.monotonic() - start
        if job["state"] not in ("succeeded", "partially_succeeded"):
            raise SystemExit(f"job failed: {job}")
        return job, took

    def stop(self) -> None:
        for proc in (self.agent, self.serve):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db-mib", type=int, default=2048)
    ap.add_argument("--logs-mib", type=int, default=1024)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bulwark-agent-bench-", dir=args.dir))
    run = None
    try:
        print(f"generating a {args.db_mib} MiB database and {args.logs_mib} MiB of logs in {tmp}")
        root = standin.create_server(tmp / "EXCH-B1", "EXCH-B1")
        pages = args.db_mib * MiB // standin.PAGE_SIZE
        store = standin.create_database(root, "DB1", pages=pages)
        standin.fill_logs(store, args.logs_mib * MiB // standin.LOG_SIZE)
        total = store.edb.stat().st_size + sum(
            (store.logs / standin.log_name(g)).stat().st_size for g in store.generations()[:-1]
        )

        # The local baseline: the same bytes through write_image (the database, then the logs
        # as one stream, as the agent groups them).
        local_repo = open_repository_at(tmp / "local-repo", key=None, create=True)
        start = time.monotonic()
        with open(store.edb, "rb") as fh:
            m = local_repo.write_image(fh, size=store.edb.stat().st_size, source_info={})
            local_repo.save_manifest(m)

        def logs():
            for g in store.generations()[:-1]:
                with open(store.logs / standin.log_name(g), "rb") as fh:
                    while chunk := fh.read(4 * MiB):
                        yield chunk

        size = total - store.edb.stat().st_size
        m = local_repo.write_image(logs(), size=size, source_info={})
        local_repo.save_manifest(m)
        local_s = time.monotonic() - start
        shutil.rmtree(tmp / "local-repo")
        print(f"local write_image: {local_s:.1f} s ({total / MiB / local_s:.0f} MiB/s)")

        run = Run(tmp)
        repo_path = tmp / "repository"
        open_repository_at(repo_path, key=SECRET.encode(), create=True)
        repo = run.ok(
            "POST",
            "/api/v1/connections",
            json={"name": "lib", "kind": "repository", "options": {"path": str(repo_path)}},
        )
        server = run.ok(
            "POST",
            "/api/v1/servers",
            json={"name": "EXCH-B1", "databases": [{"name": "DB1", "layout": "vmdk"}]},
        )
        code = run.ok("POST", f"/api/v1/servers/{server['id']}/agent/enrollments")
        config = tmp / "agent.json"
        subprocess.run(
            [PY, "-m", "app", "agent", "--config", str(config), "enroll", "--url", run.url,
             "--code", code["code"], "--fingerprint", code["fingerprint"],
             "--exchange", f"standin:{root}"],
            cwd=ROOT, env=run.env, check=True, capture_output=True,
        )  # fmt: skip
        run.agent = subprocess.Popen(
            [PY, "-m", "app", "agent", "--config", str(config), "run", "--log-level", "WARNING"],
            cwd=ROOT,
            env=run.env,
        )
        while not run.ok("GET", f"/api/v1/servers/{server['id']}/agent")["online"]:
            time.sleep(0.2)
        policy = run.ok(
            "POST",
            "/api/v1/policies",
            json={
                "name": "bench",
                "method": "agent_stream",
                "consistency": "hot_application",
                "rpo_minutes": 1440,
                "repository_id": repo["id"],
                "targets": [
                    {"server_id": server["id"], "database_id": server["databases"][0]["id"]}
                ],
            },
        )
        target = {
            "kind": "backup",
            "policy_id": policy["id"],
            "server_id": server["id"],
            "database_id": server["databases"][0]["id"],
        }
        # No truncation between the two fulls would make the second identical; the first
        # truncates nothing here (the checkpoint is at the first log), so the bytes stay.
        job, first_s = run.job(target)
        print(f"agent full: {first_s:.1f} s ({total / MiB / first_s:.0f} MiB/s)")
        job2, second_s = run.job({**target, "params": {"full": True}})
        sent = job2["result"]["details"]["sent_chunks"]
        print(f"unchanged second full: {second_s:.1f} s, {sent} chunks sent")
        standin.fill_logs(store, 256, seed=9)
        job3, incr_s = run.job(target)
        print(f"incremental of 256 logs: {incr_s:.1f} s")
        points = run.ok("GET", f"/api/v1/restore-points?policy_id={policy['id']}")["items"]
        full = min(points, key=lambda p: p["id"])
        _, restore_s = run.job(
            {
                "kind": "restore",
                "restore_point_id": full["id"],
                "params": {"mode": "agent_path", "path": str(tmp / "restored")},
            }
        )
        print(f"restore: {restore_s:.1f} s ({total / MiB / restore_s:.0f} MiB/s)")
        agent_rss = peak_rss_mb(run.agent.pid)
        service_rss = peak_rss_mb(run.serve.pid)
        print(f"peak RSS: agent {agent_rss:.0f} MB, service {service_rss:.0f} MB")
        print(json.dumps({"local_s": local_s, "first_s": first_s, "second_s": second_s}))
        print(
            f"RESULT agent_vs_local={local_s / first_s:.2f} "
            f"second_full_ratio={second_s / first_s:.3f} incr_s={incr_s:.1f} "
            f"restore_mib_s={total / MiB / restore_s:.0f} agent_peak_rss_mb={agent_rss:.0f} "
            f"service_peak_rss_mb={service_rss:.0f}"
        )
    finally:
        if run is not None:
            run.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
