"""``bulwark serve``'s background scheduler + worker, and the ``bulwark worker`` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from app.composition import start_background
from app.db.models import Job, Proxy
from app.domain.jobs import JobKind, JobState
from app.state import Runtime
from app.worker_cli import _parse_limits, worker_command
from tests.jobs.conftest import FAST, wait_for
from tests.jobs.test_scheduler import add_policy

ROOT = Path(__file__).resolve().parents[2]


def test_serve_runs_scheduler_and_worker_in_the_background(settings, registry, servers, db):
    ran = []
    registry.register(JobKind.BACKUP, lambda ctx: ran.append((ctx.policy_id, ctx.server_id)))
    policy_id = add_policy(db, servers[:1], rpo_minutes=60)
    runtime = Runtime.from_settings(settings)
    options = {k: v for k, v in FAST.items() if k != "retry_base_s"}
    handle = start_background(
        runtime,
        worker_name="serve-1",
        capabilities=["vcenter"],
        registry=registry,
        scheduler_interval=0.05,
        worker_options=options,
    )
    try:
        wait_for(lambda: ran)

        def state():
            with db.session() as session:
                return session.scalar(select(Job.state).where(Job.policy_id == policy_id))

        wait_for(lambda: state() == JobState.SUCCEEDED)
        assert handle.alive
    finally:
        handle.stop(timeout=10)
        runtime.db.dispose()
    assert not handle.alive
    assert ran == [(policy_id, servers[0])]
    with db.session() as session:
        assert session.scalar(select(Proxy.capabilities).where(Proxy.name == "serve-1")) == [
            "vcenter"
        ]


def test_limit_options_parse():
    assert _parse_limits(["datastore:ds-1=2", "host=4"]) == ({"datastore:ds-1": 2}, {"host": 4})
    for bad in ("datastore", "datastore:ds-1=0", "=3", "host=x"):
        with pytest.raises(typer.BadParameter):
            _parse_limits([bad])


def test_worker_command_help_lists_its_options():
    app = typer.Typer()
    app.command("worker")(worker_command)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["worker", "--help"])
    assert result.exit_code == 0
    for option in ("--name", "--capability", "--concurrency", "--limit", "--scheduler"):
        assert option in result.output


def _command(database_url: str, tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BULWARK_DATABASE_URL": database_url,
        "BULWARK_DATA_DIR": str(tmp_path / "data"),
        "BULWARK_SECRET_KEY": "test-secret-key-not-for-production",
    }
    code = "import typer; from app.worker_cli import worker_command; typer.run(worker_command)"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_worker_command_registers_and_stops_on_sigterm(database_url, tmp_path, db):
    proc = _command(
        database_url,
        tmp_path,
        "--name",
        "cli-proxy",
        "--capability",
        "vcenter",
        "-c",
        "array:btrfs-1",
        "--limit",
        "datastore=2",
    )
    try:

        def proxy():
            with db.session() as session:
                return session.scalar(select(Proxy).where(Proxy.name == "cli-proxy"))

        row = wait_for(lambda: proxy() or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, proc.communicate()
        assert row.capabilities == ["array:btrfs-1", "vcenter"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "worker cli-proxy" in out


def test_worker_command_refuses_an_unmigrated_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'blank.db'}"
    proc = _command(url, tmp_path, "--name", "w")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "bulwark migrate" in err
