"""The `bulwark` command as a newcomer uses it: migrate, create users and tokens, serve."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from app.cli import cli

BULWARK = [sys.executable, "-m", "app"]


def _env(settings) -> dict[str, str]:
    return {
        "BULWARK_DATA_DIR": str(settings.data_dir),
        "BULWARK_DATABASE_URL": settings.database_url,
        "BULWARK_SECRET_KEY": settings.secret_key.get_secret_value(),
    }


def test_user_and_token_create(settings, monkeypatch):
    from app.config import get_settings

    for key, value in _env(settings).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    runner = CliRunner()
    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    r = runner.invoke(
        cli,
        ["user", "create", "root-admin", "--admin"],
        env={"BULWARK_NEW_USER_PASSWORD": "a-long-admin-password"},
    )
    assert r.exit_code == 0, r.output
    assert "role admin" in r.output
    r = runner.invoke(
        cli,
        ["user", "create", "root-admin", "--admin"],
        env={"BULWARK_NEW_USER_PASSWORD": "a-long-admin-password"},
    )
    assert r.exit_code == 1 and "already exists" in r.output
    r = runner.invoke(cli, ["user", "create", "weak"], env={"BULWARK_NEW_USER_PASSWORD": "short"})
    assert r.exit_code != 0
    r = runner.invoke(cli, ["token", "create", "root-admin", "--name", "ci"])
    assert r.exit_code == 0 and r.output.strip().startswith("bwk_")
    get_settings.cache_clear()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_with_nothing_configured_uses_sqlite_under_the_data_dir(tmp_path: Path):
    """The README's first command: no database URL, no key; only an admin password."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULWARK_")}
    env["BULWARK_ADMIN_PASSWORD"] = "first-start-password"
    proc = subprocess.Popen(
        [*BULWARK, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # HTTPS with a self-signed certificate made on first start (agents pin it).
        base = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1, verify=False).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("bulwark serve did not become ready")
        assert (tmp_path / "data" / "bulwark.db").exists()
        assert (tmp_path / "data" / "secret.key").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "data" / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600
        assert httpx.get(f"{base}/api/v1/me", verify=False).status_code == 401
        # The first admin exists: give it a token from the same data dir and ask who it is.
        token = subprocess.run(
            [*BULWARK, "token", "create", "admin", "--name", "t"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        me = httpx.get(
            f"{base}/api/v1/me", headers={"Authorization": f"Bearer {token}"}, verify=False
        )
        assert me.status_code == 200 and me.json()["role"] == "admin"
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    assert f"https://127.0.0.1:{port}/" in output
    assert "certificate fingerprint (agents pin it): sha256:" in output
    # The schema came from Alembic, not create_all.
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "bulwark.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
