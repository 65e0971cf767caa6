"""`make demo`: a populated Bulwark in a minute, for trying it without a vCenter.

Starts the vSphere lab (govmomi's simulator with an Exchange estate, lab/README.md) and a
Dovecot with sample mailboxes (the IMAP server the mailbox tests use), runs `bulwark serve` on
its own data folder with both already registered — the lab's vCenter trusted, a repository,
the inventory synced, a mail connection — and prints the URL and the sign-in. Ctrl-C stops all
three. Everything lives under ``data/demo`` (new at each start); nothing is sent anywhere.

``--check`` starts everything, checks the dashboard answers, then stops (for the test).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.lab_fixture import running_lab  # noqa: E402 - the project's own lab launchers
from tests.mailboxes.dovecot_fixture import running_dovecot  # noqa: E402
from tests.mailboxes.mailgen import message  # noqa: E402

ADMIN, PASSWORD = "admin", "demo-password-1"
MAILBOXES = {"ceo": 60, "finance": 120, "legal": 40}


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def _fill_mailboxes(dovecot) -> None:
    from imapclient import IMAPClient

    for user, count in MAILBOXES.items():
        dovecot.add_user(user)
        with IMAPClient(dovecot.host, dovecot.port, ssl=False) as imap:
            imap.login(user, dovecot.users[user])
            imap.create_folder("Projects")
            for n in range(count):
                folder = "Projects" if n % 4 == 0 else "INBOX"
                raw = message(n, sender=f"partner{n % 7}@example.com", to=f"{user}@corp.example")
                imap.append(folder, raw, flags=(b"\\Seen",) if n % 3 else ())


def _wait_ready(base: str, proc: subprocess.Popen, cert: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bulwark serve exited with code {proc.returncode}")
        try:
            # The service makes its self-signed certificate before it listens: trust that one.
            if (
                cert.exists()
                and httpx.get(f"{base}/readyz", timeout=1, verify=str(cert)).status_code == 200
            ):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"bulwark serve did not answer on {base} within {timeout:.0f} s")


def _register(base: str, token: str, cert: Path, lab, dovecot, repo_path: Path) -> None:
    api = httpx.Client(
        base_url=f"{base}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
        verify=str(cert),
    )

    def post(path: str, body: dict | None = None) -> dict:
        r = api.post(path, json=body)
        if r.status_code >= 400:
            raise SystemExit(f"POST {path}: {r.status_code} {r.text}")
        return r.json() if r.content else {}

    vc = post(
        "/connections",
        {
            "name": "lab-vcenter",
            "kind": "vcenter",
            "host": lab.host,
            "port": lab.port,
            "username": lab.username,
            "password": lab.password,
            "trusted_thumbprint": lab.thumbprint,
            "guest_username": lab.estate["guest_username"],
            "guest_password": lab.estate["guest_password"],
            "description": "The vSphere lab: a simulated vCenter with an Exchange estate",
        },
    )
    post(f"/connections/{vc['id']}/sync")
    repo = post(
        "/connections",
        {
            "name": "disk-library",
            "kind": "repository",
            "options": {"path": str(repo_path), "encrypted": True},
            "description": "A filesystem repository under data/demo",
        },
    )
    post(f"/connections/{repo['id']}/test")
    post(
        "/connections",
        {
            "name": "exchange-imap",
            "kind": "mail",
            "host": dovecot.host,
            "port": dovecot.port,
            "username": dovecot.master_user,
            "password": dovecot.master_password,
            "verify_tls": False,
            "trusted_thumbprint": dovecot.thumbprint,
            "options": {"tls": "starttls", "mailboxes": sorted(MAILBOXES)},
            "description": "Dovecot standing in for Exchange's IMAP service",
        },
    )


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--check", action="store_true", help="start, check, stop")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the lab, Dovecot and the service are always stopped.
    signal.signal(signal.SIGTERM, _interrupt)

    data = ROOT / "data" / "demo"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    port = _free_port(args.port)
    base = f"https://127.0.0.1:{port}"
    cert = data / "tls" / "cert.pem"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULWARK_")}
    env.update(BULWARK_DATA_DIR=str(data), BULWARK_ADMIN_PASSWORD=PASSWORD)

    print("starting the vSphere lab and Dovecot …", flush=True)
    with running_lab(log_dir=data / "logs") as lab, running_dovecot() as dovecot:
        _fill_mailboxes(dovecot)
        serve = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=open(data / "logs" / "bulwark.log", "w"),  # noqa: SIM115 - lives with serve
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(base, serve, cert)
            token = subprocess.run(
                [sys.executable, "-m", "app", "token", "create", ADMIN, "--name", "demo"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            _register(base, token, cert, lab, dovecot, data / "repository")
            servers = httpx.get(
                f"{base}/api/v1/servers",
                headers={"Authorization": f"Bearer {token}"},
                verify=str(cert),
            ).json()["total"]
            print(
                f"\nBulwark demo: {base}/   sign in as '{ADMIN}' with '{PASSWORD}'\n"
                f"  (the service's own self-signed certificate: {cert})\n"
                f"  vCenter 'lab-vcenter' trusted and synced: {servers} Exchange servers\n"
                f"  repository 'disk-library' (encrypted) in {data / 'repository'}\n"
                f"  mail connection 'exchange-imap': mailboxes {', '.join(sorted(MAILBOXES))}\n"
                f"  logs in {data / 'logs'}; Ctrl-C stops the demo\n",
                flush=True,
            )
            if args.check:
                page = httpx.get(f"{base}/login", timeout=10, verify=str(cert))
                return 0 if page.status_code == 200 and servers > 0 else 1
            try:
                while serve.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                print("stopping the demo …", flush=True)
            return 0
        finally:
            serve.terminate()
            try:
                serve.wait(timeout=20)
            except subprocess.TimeoutExpired:
                serve.kill()


if __name__ == "__main__":
    sys.exit(main())
