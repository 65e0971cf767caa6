"""The `bulwark` command as a newcomer uses it: migrate, create users and tokens, serve."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
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
    assert r.exit_code == 0 and r.stdout.strip().startswith("bwk_")
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
        deadline = time.monotonic() + 120
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


def test_an_admin_command_in_the_wrong_directory_refuses_to_create_a_database(
    tmp_path: Path, monkeypatch
):
    """Run where no service lives, `user create` used to make a new database and key there."""
    from app.config import get_settings

    for key in [k for k in os.environ if k.startswith("BULWARK_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    runner = CliRunner()
    r = runner.invoke(
        cli, ["user", "create", "alice"], env={"BULWARK_NEW_USER_PASSWORD": "a-long-password-1"}
    )
    assert r.exit_code == 2, r.output
    assert "database: sqlite:///" in r.output and "no Bulwark database there" in r.output
    assert not (tmp_path / "data").exists()
    r = runner.invoke(
        cli,
        ["user", "create", "alice", "--create-database"],
        env={"BULWARK_NEW_USER_PASSWORD": "a-long-password-1"},
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "data" / "bulwark.db").is_file()
    get_settings.cache_clear()


def test_user_list_reset_password_token_list_and_revoke(settings, monkeypatch):
    from sqlalchemy import select

    from app.config import get_settings
    from app.db.models import ApiToken, User
    from app.db.session import Database
    from app.security.passwords import verify_password

    for key, value in _env(settings).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    runner = CliRunner()
    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    env = {"BULWARK_NEW_USER_PASSWORD": "first-password-1"}
    assert (
        runner.invoke(cli, ["user", "create", "bob", "--role", "auditor"], env=env).exit_code == 0
    )
    r = runner.invoke(cli, ["user", "list"])
    assert r.exit_code == 0 and "bob" in r.output and "auditor" in r.output, r.output
    with Database(settings.database_url).session() as s:
        epoch_before = s.scalar(select(User.session_epoch).where(User.username == "bob"))
    r = runner.invoke(
        cli, ["user", "reset-password", "bob"], env={"BULWARK_NEW_USER_PASSWORD": "second-pass-22"}
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["token", "create", "bob", "--name", "night-shift"])
    token = r.stdout.strip()
    db = Database(settings.database_url)
    with db.session() as s:
        bob = s.scalar(select(User).where(User.username == "bob"))
        assert verify_password(bob.password_hash, "second-pass-22")
        assert bob.session_epoch != epoch_before  # a reset ends the user's sessions
        row = s.scalar(select(ApiToken).where(ApiToken.name == "night-shift"))
        assert token.startswith(row.prefix)
    r = runner.invoke(cli, ["token", "list"])
    assert "night-shift" in r.output and token not in r.output and "active" in r.output
    assert runner.invoke(cli, ["token", "revoke", str(row.id)]).exit_code == 0
    assert "revoked" in runner.invoke(cli, ["token", "list"]).output
    assert runner.invoke(cli, ["token", "revoke", "999999"]).exit_code == 1
    with db.session() as s:
        assert s.get(ApiToken, row.id).revoked_at is not None
    db.dispose()
    get_settings.cache_clear()


def test_status_jobs_backup_and_restore_points_go_through_the_api(
    app, client, admin, settings, monkeypatch
):
    """The night-shift commands use a token against the REST API, not the database."""
    from app import remote_commands
    from tests.e2e.estate import seed_estate

    ids = seed_estate(settings.database_url)
    token = admin["Authorization"].removeprefix("Bearer ")
    seen: list[str] = []

    def in_process_client(base_url, headers, timeout):
        # The real application behind httpx's client interface, in this process.
        c = TestClient(app, base_url=base_url, headers=headers)
        c.event_hooks["request"].append(lambda request: seen.append(request.url.path))
        return c

    monkeypatch.setattr(remote_commands.Api, "client_factory", staticmethod(in_process_client))
    runner = CliRunner()
    base = ["--url", "http://bulwark.test", "--token", token]
    r = runner.invoke(cli, ["status", *base])
    assert r.exit_code == 0, r.output
    lines = {line.split()[0]: line for line in r.output.splitlines()[1:]}
    assert "UNPROTECTED" not in lines["EXCH-MBX02"] and "hot_crash_scripted" in lines["EXCH-MBX02"]
    r = runner.invoke(cli, ["restore-points", "EXCH-MBX02", *base])
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 3, r.output
    r = runner.invoke(cli, ["jobs", *base, "--state", "running"])
    assert r.exit_code == 0 and str(ids["running_job"]) in r.output, r.output
    r = runner.invoke(cli, ["backup", "no-such-policy", *base])
    assert r.exit_code == 1 and "no policy named 'no-such-policy'" in r.output
    repo = client.post(
        "/api/v1/connections", json={"name": "library", "kind": "repository"}, headers=admin
    ).json()["id"]
    policy = {
        "name": "nightly",
        "method": "vm_image",
        "consistency": "crash",
        "schedule_cron": "0 2 * * *",
        "repository_id": repo,
        "targets": [{"server_id": ids["mbx1"]}],
    }
    assert client.post("/api/v1/policies", json=policy, headers=admin).status_code == 201
    r = runner.invoke(cli, ["backup", "nightly", *base])
    assert r.exit_code == 0 and "queued: backup of policy 'nightly'" in r.output, r.output
    job_id = int(r.output.split()[1])
    job = client.get(f"/api/v1/jobs/{job_id}", headers=admin).json()
    assert job["kind"] == "backup" and job["created_by"].startswith("user-admin/bwk_")
    r = runner.invoke(cli, ["status", "--url", "http://bulwark.test", "--token", "bwk_wrong"])
    assert r.exit_code == 1 and "401" in r.output
    assert all(path.startswith("/api/v1/") for path in seen)
