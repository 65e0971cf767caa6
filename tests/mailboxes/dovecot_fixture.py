"""Dovecot from Debian, started from tests/mailboxes/dovecot/dovecot.conf on loopback ports.

``running_dovecot()`` lays out a temp dir (config, self-signed certificate, passwd files,
maildirs owned by an unprivileged uid), runs ``dovecot -F -c <conf>`` and stops it on exit.
``hide_condstore=True`` advertises what Exchange advertises (no CONDSTORE, QRESYNC nor
MULTIAPPEND), so the sweep paths run. In CI a missing Dovecot is an error (see
``must_have_dovecot``), never a skip.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CONF_TEMPLATE = Path(__file__).parent / "dovecot" / "dovecot.conf"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
MASTER_USER, MASTER_PASSWORD = "bulwark", "master-secret-1"
# What Exchange Online / Exchange 2019 advertise after login (no CONDSTORE, no MULTIAPPEND).
EXCHANGE_LIKE = (
    "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
    "UIDPLUS MOVE NAMESPACE UNSELECT CHILDREN"
)


class DovecotUnavailable(RuntimeError):
    pass


def must_have_dovecot() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _self_signed(base: Path) -> str:
    """A certificate for 127.0.0.1; returns its SHA-256 thumbprint (hex)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (base / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (base / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(base / "key.pem", 0o600)
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass
class Dovecot:
    base: Path
    port: int
    tls_port: int
    thumbprint: str
    condstore: bool
    users: dict[str, str] = field(default_factory=dict)
    master_user: str = MASTER_USER
    master_password: str = MASTER_PASSWORD
    host: str = "127.0.0.1"

    @property
    def conf(self) -> Path:
        return self.base / "dovecot.conf"

    @property
    def cafile(self) -> str:
        return str(self.base / "cert.pem")

    def add_user(self, name: str, password: str | None = None) -> str:
        password = password or f"{name}-password-1"
        self.users[name] = password
        # One passwd-file per user: Dovecot re-reads a changed file at most once a second, a
        # new file at once.
        path = self.base / "users.d" / name
        path.write_text(f"{name}:{{PLAIN}}{password}\n")
        os.chmod(path, 0o644)
        return password

    def doveadm(self, *args: str) -> str:
        out = subprocess.run(
            [DOVEADM, "-c", str(self.conf), *args], capture_output=True, text=True, timeout=60
        )
        if out.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def log(self) -> str:
        path = self.base / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _owner() -> tuple[str, int, int, str]:
    """Who Dovecot's helpers and the mail run as: packaged users under root, else us."""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for user in ("dovecot", "dovenull"):
            try:
                pwd.getpwnam(user)
            except KeyError as exc:
                raise DovecotUnavailable(
                    f"user '{user}' is missing (install dovecot-imapd from Debian)"
                ) from exc
        return "dovecot", nobody.pw_uid, nobody.pw_gid, "dovenull"
    me = pwd.getpwuid(os.geteuid())
    return me.pw_name, me.pw_uid, me.pw_gid, me.pw_name


@contextlib.contextmanager
def running_dovecot(*, hide_condstore: bool = False) -> Iterator[Dovecot]:
    if not Path(DOVECOT).exists():
        raise DovecotUnavailable("dovecot is not installed (apt-get install dovecot-imapd)")
    internal, uid, gid, login_user = _owner()
    base = Path(tempfile.mkdtemp(prefix="bulwark-dovecot-"))
    os.chmod(base, 0o755)  # the mail uid must reach its maildir below
    try:
        (base / "run").mkdir()
        (base / "state").mkdir()
        mail = base / "mail"
        mail.mkdir()
        os.chown(mail, uid, gid)
        thumbprint = _self_signed(base)
        port, tls_port = _free_port(), _free_port()
        conf = (
            CONF_TEMPLATE.read_text()
            .replace("@BASE@", str(base))
            .replace("@NAME@", base.name)
            .replace("@PORT@", str(port))
            .replace("@TLS_PORT@", str(tls_port))
            .replace("@MAIL_UID@", str(uid))
            .replace("@MAIL_GID@", str(gid))
            .replace("@CAPABILITY@", f"  {EXCHANGE_LIKE}" if hide_condstore else "")
        )
        if os.geteuid() != 0:
            conf = conf.replace(
                "default_internal_user = dovecot", f"default_internal_user = {internal}"
            )
            conf = conf.replace(
                "default_login_user = dovenull", f"default_login_user = {login_user}"
            )
        (base / "dovecot.conf").write_text(conf)
        (base / "masters").write_text(f"{MASTER_USER}:{{PLAIN}}{MASTER_PASSWORD}\n")
        (base / "users.d").mkdir()
        os.chmod(base / "masters", 0o644)
        server = Dovecot(base, port, tls_port, thumbprint, condstore=not hide_condstore)
        proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(base / "dovecot.conf")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for(port, proc, server)
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _wait_for(port: int, proc: subprocess.Popen, server: Dovecot) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise DovecotUnavailable(f"dovecot exited: {out.strip()} {server.log()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise DovecotUnavailable(f"dovecot did not listen on {port}: {server.log()[-2000:]}")
