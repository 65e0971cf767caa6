"""A real ``bulwark serve`` over HTTPS and real ``bulwark agent`` processes, enrolled with
one-time codes, driving the stand-in Exchange (app/agent/standin.py) on this machine."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from app.agent import standin
from app.repository import open_repository_at
from tests.conftest import ROOT

SECRET = "agent-tests-secret-key-not-for-production"
ADMIN_PASSWORD = "agent-tests-admin-password"
BLOCK = 64 * 1024  # small repository blocks: a small database still spans many
PAGE, LOG = 8192, 64 * 1024


def _python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    url: str
    env: dict[str, str]
    data: Path
    client: httpx.Client
    log: Path
    proc: subprocess.Popen
    repo_path: Path | None = None
    repo_id: int | None = None
    cleanup: list = field(default_factory=list)

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        return self.client.request(method, path, **kw)

    def ok(self, method: str, path: str, **kw):
        r = self.api(method, path, **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def wait_job(self, job_id: int, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.ok("GET", f"/api/v1/jobs/{job_id}")
            if job["state"] in ("succeeded", "failed", "cancelled", "partially_succeeded"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish: {job}\n{self.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def service(tmp_path_factory, postgres) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("agent-service")
    database_url = postgres.new() if postgres is not None else f"sqlite:///{tmp / 'bulwark.db'}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULWARK_")}
    env.update(
        BULWARK_DATA_DIR=str(tmp / "data"),
        BULWARK_DATABASE_URL=database_url,
        BULWARK_SECRET_KEY=SECRET,
        BULWARK_ADMIN_PASSWORD=ADMIN_PASSWORD,
        # Short enough for the killed-agent test, long enough for a loaded machine's heartbeats.
        BULWARK_AGENT_SILENT_AFTER_S="15",
        BULWARK_INVENTORY_RESYNC_MINUTES="0",
        BULWARK_REPOSITORY_EXPIRE_MINUTES="0",
        BULWARK_REPOSITORY_VERIFY_MINUTES="0",
    )
    log = tmp / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [_python(), "-m", "app", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail(f"bulwark serve exited:\n{log.read_text()}")
        try:
            if httpx.get(url + "/readyz", verify=False, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"bulwark serve did not become ready:\n{log.read_text()}")
        time.sleep(0.2)
    token = subprocess.run(
        [_python(), "-m", "app", "token", "create", "admin", "--name", "tests"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The operator's side of the tests does not pin; the agent does.
    client = httpx.Client(
        base_url=url, verify=False, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    svc = Service(url, env, tmp / "data", client, log, proc)
    repo_path = tmp / "repository"
    open_repository_at(repo_path, key=SECRET.encode(), create=True, block_size=BLOCK)
    repo = svc.ok(
        "POST",
        "/api/v1/connections",
        json={"name": "library", "kind": "repository", "options": {"path": str(repo_path)}},
    )
    svc.repo_path, svc.repo_id = repo_path, repo["id"]
    try:
        yield svc
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Guest:
    """One stand-in Exchange server with its agent process."""

    name: str
    root: Path
    config: Path
    server_id: int
    database_ids: dict[str, int]
    service: Service
    proc: subprocess.Popen | None = None
    log: Path | None = None
    writers: list[subprocess.Popen] = field(default_factory=list)

    def store(self, database: str = "DB1") -> standin.Store:
        return standin.Store(self.root / database)

    def start_agent(self) -> None:
        env = dict(self.service.env, BULWARK_AGENT_HEARTBEAT_S="1")
        self.log = self.root.parent / f"{self.name}-agent.log"
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [_python(), "-m", "app", "agent", "--config", str(self.config), "run"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = self.service.ok("GET", f"/api/v1/servers/{self.server_id}/agent")
            if status["online"] and status["databases"]:
                return
            time.sleep(0.2)
        raise AssertionError(f"the agent did not come online:\n{self.log.read_text()}")

    def stop_agent(self, sig: int | None = None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def start_writer(self, database: str = "DB1", seed: int = 7) -> subprocess.Popen:
        ready = self.root / f".{database}-writer-ready"
        ready.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [
                _python(),
                "-m",
                "app.agent.standin",
                "write",
                "--root",
                str(self.root),
                "--database",
                database,
                "--seed",
                str(seed),
                "--ready",
                str(ready),
                "--pause",
                "0.01",
            ],
            cwd=ROOT,
        )
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.writers.append(proc)
        return proc

    def stop_writers(self) -> None:
        for proc in self.writers:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        self.writers.clear()


def make_guest(
    service: Service,
    tmp: Path,
    name: str,
    databases: tuple[str, ...] = ("DB1",),
    *,
    pages: int = 512,
    dag: Path | None = None,
    enroll: bool = True,
) -> Guest:
    root = standin.create_server(tmp / name, name, dag)
    for i, db in enumerate(databases):
        standin.create_database(root, db, pages=pages, page_size=PAGE, log_size=LOG, seed=i + 1)
    server = service.ok(
        "POST",
        "/api/v1/servers",
        json={"name": name, "databases": [{"name": db, "layout": "vmdk"} for db in databases]},
    )
    guest = Guest(
        name,
        root,
        tmp / f"{name}-agent.json",
        server["id"],
        {d["name"]: d["id"] for d in server["databases"]},
        service,
    )
    if enroll:
        enroll_guest(guest)
    return guest


def enroll_guest(guest: Guest, url: str | None = None) -> subprocess.CompletedProcess:
    svc = guest.service
    code = svc.ok("POST", f"/api/v1/servers/{guest.server_id}/agent/enrollments")
    done = subprocess.run(
        [
            _python(),
            "-m",
            "app",
            "agent",
            "--config",
            str(guest.config),
            "enroll",
            "--url",
            url or svc.url,
            "--code",
            code["code"],
            "--fingerprint",
            code["fingerprint"],
            "--exchange",
            f"standin:{guest.root}",
        ],
        cwd=ROOT,
        env=svc.env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done


def agent_policy(service: Service, guest: Guest, name: str, database: str = "DB1", **extra) -> int:
    body = {
        "name": name,
        "method": "agent_stream",
        "consistency": "hot_application",
        "rpo_minutes": 24 * 60,
        "repository_id": service.repo_id,
        "targets": [{"server_id": guest.server_id, "database_id": guest.database_ids[database]}],
        **extra,
    }
    return service.ok("POST", "/api/v1/policies", json=body)["id"]


def run_backup(service: Service, guest: Guest, policy_id: int, database: str = "DB1", **params):
    job = service.ok(
        "POST",
        "/api/v1/jobs",
        json={
            "kind": "backup",
            "policy_id": policy_id,
            "server_id": guest.server_id,
            "database_id": guest.database_ids[database],
            "params": params,
        },
    )
    return job["id"]


def points_of(service: Service, policy_id: int) -> list[dict]:
    items = service.ok("GET", f"/api/v1/restore-points?policy_id={policy_id}&limit=100")["items"]
    return sorted(items, key=lambda p: p["id"])


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


class DroppingProxy:
    """A TCP forwarder in front of the service that cuts every open connection once, after
    ``drop_after`` bytes went towards the service: a network that fails mid-stream."""

    def __init__(self, target_port: int, drop_after: int):
        import socket
        import threading

        self.target_port = target_port
        self.drop_after = drop_after
        self.forwarded = 0
        self.dropped = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._open: list = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, counted: bool) -> None:
        import socket

        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if counted:
                    with self._lock:
                        self.forwarded += len(data)
                        cut = not self.dropped and self.forwarded >= self.drop_after
                        if cut:
                            self.dropped = True
                            doomed, self._open = self._open, []
                    if cut:
                        for s in doomed:
                            # shutdown, not close: it wakes the other pipe's blocked recv.
                            with contextlib.suppress(OSError):
                                s.shutdown(socket.SHUT_RDWR)
                        return
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self.listener.close()
