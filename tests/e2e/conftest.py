"""End-to-end fixtures: the real service in a subprocess, driven by Debian's Chromium.

The server runs exactly as an operator starts it (uvicorn with the app factory), on a free
loopback port, against a fresh database: PostgreSQL when the suite runs on PostgreSQL, a
SQLite file otherwise. Screenshots land in ``test-output/e2e/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e.estate import seed_estate

CHROMIUM = os.environ.get("BULWARK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_PASSWORD = "e2e-admin-password-123"
SECRET_KEY = "e2e-secret-key-not-for-production"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


@dataclass
class Server:
    url: str
    database_url: str
    log: Path


@pytest.fixture(scope="session")
def screenshots(output_dir: Path) -> Path:
    path = output_dir / "e2e"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def running_server(
    tmp: Path, postgres, log: Path, factory: str = "app.main:create_app"
) -> Iterator[Server]:
    """Start uvicorn with an app factory on a free port against a fresh database."""
    database_url = postgres.new() if postgres is not None else f"sqlite:///{tmp / 'bulwark.db'}"
    port = _free_port()
    env = {
        **os.environ,
        "BULWARK_DATA_DIR": str(tmp / "data"),
        "BULWARK_SECRET_KEY": SECRET_KEY,
        "BULWARK_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "BULWARK_DATABASE_URL": database_url,
        "BULWARK_LOG_LEVEL": "INFO",
    }
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                _python(),
                "-m",
                "uvicorn",
                "--factory",
                factory,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not become ready:\n{log.read_text()}")
            time.sleep(0.2)
        yield Server(url, database_url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory, postgres, screenshots) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("e2e-server")
    with running_server(tmp, postgres, screenshots / "server.log") as running:
        yield running


@pytest.fixture(scope="session")
def jobs_server(tmp_path_factory, postgres, screenshots) -> Iterator[Server]:
    """A second service, as ``bulwark serve`` runs it: API, dashboard, scheduler and one
    in-process worker (capability ``vcenter``), on its own empty database — for the flows
    against the vSphere lab, where jobs must really run."""
    tmp = tmp_path_factory.mktemp("e2e-jobs-server")
    with running_server(
        tmp, postgres, screenshots / "jobs-server.log", "tests.e2e.jobs_app:create_app"
    ) as running:
        yield running


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not path:
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@contextmanager
def browser_page(browser, base_url: str):
    context = browser.new_context(
        base_url=base_url, viewport={"width": 1360, "height": 900}, color_scheme="light"
    )
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(browser, server):
    with browser_page(browser, server.url) as page:
        yield page


@pytest.fixture
def jobs_page(browser, jobs_server):
    """Signed in as admin on the service that runs jobs."""
    with browser_page(browser, jobs_server.url) as page:
        sign_in(page)
        yield page


def sign_in(page, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)


@pytest.fixture(scope="session")
def estate(server) -> dict[str, int]:
    """A small Exchange estate written straight into the server's database."""
    return seed_estate(server.database_url)


@pytest.fixture
def admin_page(page):
    sign_in(page)
    return page
