"""`make demo` from a clean clone: the lab, Dovecot and a service with both registered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TEST_DB

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(
        TEST_DB != "sqlite", reason="the demo runs on its own SQLite file: once, in the SQLite pass"
    ),
]


def test_make_demo_from_a_clean_clone_serves_a_populated_product(tmp_path: Path):
    clone = tmp_path / "bulwark"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    venv = Path(sys.executable).parent.parent  # this suite's venv: no second install
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULWARK_")}
    done = subprocess.run(
        ["make", "--no-print-directory", "demo", f"VENV={venv}", "DEMO_ARGS=--check --port 0"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "sign in as 'admin' with 'demo-password-1'" in out
    assert "vCenter 'lab-vcenter' trusted and synced: 5 Exchange servers" in out
    assert "mailboxes ceo, finance, legal" in out
    assert (clone / "data" / "demo" / "bulwark.db").is_file()
