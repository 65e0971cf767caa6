"""Start the vSphere lab (lab/bin/bulwark-lab) for tests and benchmarks. No pytest in here.

    with running_lab() as lab:          # builds the lab first if needed
        client = connect(lab.host, lab.port, lab.username, lab.password,
                         trusted_thumbprint=lab.thumbprint)
        lab.estate["exchange_vms"]       # what the lab laid out: the expected answer

The lab listens on a free loopback port it picks itself, prints its URL and the path of its
estate JSON (see lab/README.md), and is stopped by its PID (SIGTERM, then SIGKILL) on exit. Its
stdin is a pipe from this process, and the lab is started with --exit-on-stdin-eof, so it also
ends if this process dies without cleaning up. Its log goes to a file, never to a pipe nobody
reads.

:class:`LabUnavailable` means the lab could not be built or started; callers decide whether that
skips (a developer without Go) or fails (CI=true) their tests: see :func:`must_have_lab`.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAB_DIR = ROOT / "lab"
BUILD_SCRIPT = LAB_DIR / "build.sh"
BINARY = LAB_DIR / "bin" / "bulwark-lab"

URL_LINE = "BULWARK_LAB_URL="
ESTATE_LINE = "BULWARK_LAB_ESTATE="


class LabUnavailable(RuntimeError):
    """The lab could not be built or did not start; the message says why."""


def must_have_lab() -> bool:
    """True where a missing lab is a failure rather than a reason to skip (CI=true)."""
    return os.environ.get("CI", "").lower() == "true"


@dataclass(frozen=True)
class Lab:
    """A running lab: where it listens, how to log in, and the estate it serves."""

    url: str  # https://user:pass@127.0.0.1:PORT/sdk (user name URL-quoted)
    host: str
    port: int
    username: str
    password: str
    thumbprint: str  # SHA-256 of its self-signed certificate, "AB:CD:..."
    estate_path: Path
    estate: dict[str, Any] = field(repr=False)
    pid: int = 0
    log_path: Path | None = None

    def exchange_vm(self, name: str) -> dict[str, Any]:
        for vm in self.estate["exchange_vms"]:
            if vm["name"] == name:
                return vm
        raise KeyError(name)

    def datastore_path(self, name: str) -> Path:
        """Folder on this machine that backs the datastore called ``name``."""
        for ds in self.estate["datastores"]:
            if ds["name"] == name:
                return Path(ds["local_path"])
        raise KeyError(name)


def build_lab(timeout: float = 600.0) -> Path:
    """Build lab/bin/bulwark-lab if its sources are newer (lab/build.sh); return its path."""
    if not BUILD_SCRIPT.exists():
        raise LabUnavailable(f"{BUILD_SCRIPT} is missing")
    try:
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise LabUnavailable(f"building the lab took longer than {timeout:g} s") from None
    if done.returncode != 0 or not BINARY.exists():
        tail = (done.stderr + done.stdout).strip()[-2000:]
        raise LabUnavailable(
            f"building the lab failed (lab/build.sh exit {done.returncode}):\n{tail}"
        )
    return BINARY


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _stop(proc: subprocess.Popen[str], grace: float = 10.0) -> None:
    """Stop the lab by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
        except ProcessLookupError:
            pass
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def _log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@contextmanager
def running_lab(
    vms: int | None = None,
    *,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 180.0,
    log_dir: Path | None = None,
) -> Iterator[Lab]:
    """Build (if needed) and start a lab; yield a :class:`Lab`; stop it on exit.

    ``vms`` is the number of ordinary VMs (the lab's --vms; its default is small so tests start
    in well under a second). ``log_dir`` keeps the lab's log there; by default it goes to a
    temporary folder that is removed afterwards.
    """
    binary = build_lab()
    own_log_dir = log_dir is None
    log_folder = Path(tempfile.mkdtemp(prefix="bulwark-lab-log-")) if own_log_dir else log_dir
    log_folder.mkdir(parents=True, exist_ok=True)
    log_path = log_folder / f"bulwark-lab-{os.getpid()}-{time.monotonic_ns()}.log"
    args = [str(binary), "--listen", "127.0.0.1:0", "--exit-on-stdin-eof", *extra_args]
    if vms is not None:
        args += ["--vms", str(vms)]

    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
    estate_path: Path | None = None
    try:
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
        found: dict[str, str] = {}
        deadline = time.monotonic() + startup_timeout
        while URL_LINE not in found:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise LabUnavailable(
                    f"the lab did not start within {startup_timeout:g} s:\n{_log_tail(log_path)}"
                ) from None
            if line is None:
                raise LabUnavailable(
                    f"the lab exited with code {proc.wait()} before serving:\n{_log_tail(log_path)}"
                )
            for prefix in (URL_LINE, ESTATE_LINE):
                if line.startswith(prefix):
                    found[prefix] = line[len(prefix) :]
        if ESTATE_LINE not in found:
            raise LabUnavailable("the lab printed its URL but no estate file")

        url = found[URL_LINE]
        parts = urllib.parse.urlsplit(url)
        estate_path = Path(found[ESTATE_LINE])
        estate = json.loads(estate_path.read_text())
        yield Lab(
            url=url,
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 443,
            username=urllib.parse.unquote(parts.username or ""),
            password=urllib.parse.unquote(parts.password or ""),
            thumbprint=estate["tls_thumbprint_sha256"],
            estate_path=estate_path,
            estate=estate,
            pid=proc.pid,
            log_path=log_path,
        )
    finally:
        _stop(proc)
        # A lab that had to be killed could not remove its temporary state folder.
        state = estate_path.parent if estate_path is not None else None
        own_state = "--state-dir" not in extra_args
        if own_state and state is not None and state.name.startswith("bulwark-lab-"):
            shutil.rmtree(state, ignore_errors=True)
        if own_log_dir:
            shutil.rmtree(log_folder, ignore_errors=True)
