"""The array path in a real browser: add the btrfs array, see the RDM database matched to its
volumes by NAA id, protect DB02 (physical-mode RDM) with array snapshots, back it up now and
recover it instantly from the array after a simulated corruption.

The service runs as ``bulwark serve`` would, with a worker that reaches both the lab vCenter
and the array (capabilities ``vcenter`` and ``array``). The lab's stand-in guest runs the
freeze and thaw commands (it stands in for a Windows guest with Exchange's VSS writer).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from app.adapters.arrays import BtrfsArray
from tests.btrfs_fixture import BtrfsUnavailable, btrfs_mount, must_have_btrfs
from tests.e2e.conftest import browser_page, running_server, sign_in
from tests.e2e.test_dashboard import shot
from tests.e2e.test_lab_flows import VCENTER, ensure_synced_vcenter

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

JOB_TIMEOUT = 90_000
LUN_BYTES = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def btrfs_array() -> Iterator[BtrfsArray]:
    try:
        with btrfs_mount("1G") as mount:
            (mount / "array").mkdir()
            yield BtrfsArray(mount / "array", "e2e-array")
    except BtrfsUnavailable as exc:
        if must_have_btrfs():
            pytest.fail(f"a btrfs array is required in CI: {exc}")
        pytest.skip(f"btrfs on a loop device unavailable: {exc}")


@pytest.fixture(scope="module")
def array_server(tmp_path_factory, postgres, screenshots, btrfs_array):
    """The service with an in-process worker that reaches the vCenter and the array."""
    tmp = tmp_path_factory.mktemp("e2e-array-server")
    before = os.environ.get("BULWARK_WORKER_CAPABILITIES")
    os.environ["BULWARK_WORKER_CAPABILITIES"] = '["vcenter", "array"]'
    try:
        with running_server(
            tmp, postgres, screenshots / "array-server.log", "tests.e2e.jobs_app:create_app"
        ) as running:
            yield running
    finally:
        if before is None:
            os.environ.pop("BULWARK_WORKER_CAPABILITIES", None)
        else:
            os.environ["BULWARK_WORKER_CAPABILITIES"] = before


@pytest.fixture
def array_page(browser, array_server) -> Iterator[Page]:
    with browser_page(browser, array_server.url) as page:
        sign_in(page)
        yield page


def naa_of(lab, vm: str, key: int) -> str:
    return next(d for d in lab.exchange_vm(vm)["disks"] if d["key"] == key)["canonical_name"]


def test_add_array_match_rdm_backup_and_instant_recovery(
    array_page: Page, lab, btrfs_array: BtrfsArray, screenshots: Path
):
    page, array = array_page, btrfs_array
    ensure_synced_vcenter(page, lab)
    # The freeze and thaw commands run as the lab's guest account.
    page.goto("/connections?kind=vcenter")
    page.get_by_role("link", name=VCENTER, exact=True).click()
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Guest user name").fill(lab.estate["guest_username"])
    page.get_by_label("Guest password").fill(lab.estate["guest_password"])
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status").first).to_contain_text("saved")
    db, log = naa_of(lab, "EXCH-MBX02", 2016), naa_of(lab, "EXCH-MBX02", 2032)
    # The array administrator's part: DB02's LUNs in one consistency group.
    good = {}
    for naa in (db, log):
        array.create_volume("EXCH-MBX02-DB02", naa, LUN_BYTES)
        good[naa] = random.randbytes(LUN_BYTES)
        with array.open_volume(naa, write=True) as f:
            f.write(good[naa])

    # Add the array: a connection of kind array, driver and mount path as options.
    page.goto("/connections/new?kind=array")
    page.get_by_label("Name", exact=True).fill("lab-array")
    page.get_by_label("Kind", exact=True).select_option("array")
    page.get_by_label(re.compile(r"^Settings for this kind")).fill(
        f"driver = btrfs\npath = {array.root}"
    )
    page.get_by_role("button", name="Add connection").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("lab-array")
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#test-result")).to_contain_text(re.compile("btrfs array at", re.I))
    page.get_by_role("link", name="Volumes and RDM LUNs").click()
    page.get_by_role("button", name="List volumes now").click()
    expect(page.get_by_role("status").first).to_contain_text("reported 2 volume(s)")

    # The RDM database is matched by NAA id; the other RDMs are listed as on no array.
    matched = page.locator("#matched-luns")
    for naa, role in ((db, "database"), (log, "logs")):
        row = matched.locator(f"tr[data-naa='{naa}']")
        expect(row).to_contain_text("EXCH-MBX02")
        expect(row).to_contain_text("EXCH-MBX02/DB02")
        expect(row).to_contain_text(role)
    expect(page.locator("#unmatched-luns")).to_contain_text("EXCH-MBX03")
    shot(page, screenshots, "60-array-luns-matched")

    # A policy: array snapshot of DB02, quiesced by a VSS-aware freeze command in the guest.
    page.goto("/policies/new")
    page.get_by_label("Name", exact=True).fill("DB02 on the array")
    page.get_by_label("Protection method").select_option("array_snapshot")
    page.get_by_label("Consistency").select_option("hot_application")
    page.get_by_label(re.compile(r"^Before the snapshot")).fill("freeze-exchange.cmd DB02")
    page.get_by_label(re.compile(r"^After the snapshot")).fill("thaw-exchange.cmd DB02")
    page.get_by_label("Snapshots kept on primary").fill("2")
    page.locator(".target", has_text="EXCH-MBX02").get_by_label("DB02").check()
    page.get_by_role("button", name="Create policy").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("DB02 on the array")

    page.get_by_role("button", name="Back up now").click()
    children = page.get_by_role("region", name="Jobs it started")
    expect(children.locator("tbody tr").first).to_contain_text("Succeeded", timeout=JOB_TIMEOUT)
    children.locator("tbody tr a").first.click()
    page.locator("a.made-point").click()
    main = page.locator("main")
    expect(main).to_contain_text("Hot, application-consistent")
    expect(main).to_contain_text("Array snapshot (primary storage)")
    expect(main).to_contain_text("EXCH-MBX02-DB02@bulwark-job-")
    shot(page, screenshots, "61-array-restore-point")

    # Corruption on the array, then instant recovery from the snapshot.
    for naa in (db, log):
        with array.open_volume(naa, write=True) as f:
            f.write(b"\xde\xad\xbe\xef" * 8192)
    page.get_by_role("link", name="Restore from the array…").click()
    page.get_by_label(re.compile("Instant recovery")).check()
    page.get_by_label(re.compile("type the server's name")).fill("EXCH-MBX03")
    page.get_by_role("button", name="Start restore").click()
    expect(page.get_by_role("alert")).to_contain_text("is not the server's name")
    page.get_by_label(re.compile("type the server's name")).fill("EXCH-MBX02")
    shot(page, screenshots, "62-array-instant-recovery")
    page.get_by_role("button", name="Start restore").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Restore job #")
    expect(page.get_by_role("region", name="State")).to_contain_text(
        "Succeeded", timeout=JOB_TIMEOUT
    )
    expect(page.locator("main")).to_contain_text("to array snapshot EXCH-MBX02-DB02@bulwark-job-")
    shot(page, screenshots, "63-array-restore-job")
    for naa in (db, log):
        with array.open_volume(naa) as f:
            assert f.read() == good[naa]
