"""The operator's flows in a real browser against the vSphere lab, with the job engine running
in the service: add the vCenter, trust its certificate, sync, map databases, read the advisor;
then protect a database, back it up now, and revert to the restore point.

The lab is the govmomi simulator (tests/lab_fixture.py): a stand-in for vCenter, not the
thing under test. The service runs as ``bulwark serve`` would (tests/e2e/jobs_app.py).
"""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_dashboard import shot

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

VCENTER = "lab-vcenter"
JOB_TIMEOUT = 90_000


def add_vcenter_form(page: Page, lab, *, trusted: bool) -> None:
    page.goto("/connections/new?kind=vcenter")
    page.get_by_label("Name", exact=True).fill(VCENTER)
    page.get_by_label("Kind", exact=True).select_option("vcenter")
    page.get_by_label("Host").fill(lab.host)
    page.get_by_label("Port").fill(str(lab.port))
    page.get_by_label(re.compile(r"^User name")).fill(lab.username)
    page.get_by_label(re.compile(r"^Password")).fill(lab.password)
    page.get_by_label("Guest user name").fill("LAB\\svc-exch-scripts")
    page.get_by_label("Guest password").fill("Guest-Pass-1!")
    if trusted:
        page.get_by_label("Trusted certificate (SHA-256)").fill(lab.thumbprint)
    page.get_by_role("button", name="Add connection").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(VCENTER)


def ensure_synced_vcenter(page: Page, lab) -> None:
    """The lab's vCenter, added and synced (by the first flow, or here when run alone)."""
    page.goto("/connections?kind=vcenter")
    link = page.get_by_role("link", name=VCENTER, exact=True)
    if link.count():
        return
    add_vcenter_form(page, lab, trusted=True)
    page.get_by_role("button", name="Sync inventory now").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Inventory synced")


def open_server(page: Page, name: str) -> None:
    page.goto("/servers")
    page.get_by_role("link", name=name, exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(name)


def test_add_test_trust_sync_map_and_advise(jobs_page: Page, lab, screenshots):
    page = jobs_page
    add_vcenter_form(page, lab, trusted=False)
    main = page.locator("main")
    expect(main).to_contain_text("LAB\\svc-exch-scripts")
    assert lab.password not in page.content() and "Guest-Pass-1!" not in page.content()

    # Test: the lab's self-signed certificate is not trusted; its fingerprint is shown.
    page.get_by_role("button", name="Test connection").click()
    result = page.locator("#test-result")
    expect(result).to_contain_text("The test failed.")
    expect(result).to_contain_text("not trusted")
    expect(page.locator("#presented-thumbprint")).to_have_text(lab.thumbprint)
    shot(page, screenshots, "30-untrusted-certificate")

    # Trust it: a confirmation page says exactly what is trusted.
    page.get_by_role("link", name="Trust this certificate…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        f"Trust this certificate for “{VCENTER}”?"
    )
    expect(page.locator("#trust-thumbprint")).to_have_text(lab.thumbprint)
    expect(main).to_contain_text(f"{lab.host}:{lab.port}")
    expect(main).to_contain_text("recorded in the audit log")
    shot(page, screenshots, "31-trust-confirm")
    page.get_by_role("button", name="Trust this certificate").click()

    expect(page.get_by_role("status").first).to_contain_text("is now trusted")
    expect(result).to_contain_text("OK.")
    expect(result).to_contain_text("Signed in to")
    expect(page.locator("h1 .badge")).to_have_text("OK")
    shot(page, screenshots, "32-connection-ok")

    # Sync: the summary of what was read.
    page.get_by_role("button", name="Sync inventory now").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Inventory synced")
    tagged = sorted(vm["name"] for vm in lab.estate["exchange_vms"] if vm["custom_attribute"])
    expect(page.locator("#discovered-count")).to_contain_text(str(len(tagged)))
    for name in tagged:
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    expect(main).to_contain_text(f"{lab.estate['vm_count_total']} ")
    shot(page, screenshots, "33-sync-summary")

    # Inventory: the untagged Exchange VM, with its disks and backings.
    page.get_by_role("link", name="Browse the VMs").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Inventory")
    page.get_by_label("Name", exact=True).fill("EXCH")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.vms tbody tr")).to_have_count(6)
    expect(page.locator("table.vms")).to_contain_text("Physical RDM")
    expect(page.locator("table.vms")).to_contain_text("Virtual RDM")
    expect(page.locator("table.vms")).to_contain_text("LUN naa.6001405")
    shot(page, screenshots, "34-inventory")
    page.get_by_label("Exchange server", exact=True).select_option("no")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.vms tbody tr")).to_have_count(1)
    page.get_by_role("button", name="Protect EXCH-MBX06 as Exchange server").click()

    # Map its database: the disk choice shows the layout it gives.
    expect(page.get_by_role("heading", level=1)).to_have_text("EXCH-MBX06")
    expect(page.get_by_role("status").first).to_contain_text("is now an Exchange server")
    new = page.get_by_role("form", name="Add a database")
    new.get_by_label("Database name").fill("DB31")
    new.get_by_label("Database disk").select_option("2016")
    new.get_by_label("Log disk").select_option("2032")
    expect(new.locator(".derived[data-backing='flat']")).to_be_visible()
    expect(new.locator(".derived[data-backing='rdm-physical']")).to_be_hidden()
    new.get_by_role("button", name="Add database").click()
    expect(page.get_by_role("status").first).to_contain_text("Database DB31 mapped")
    db31 = page.get_by_role("form", name="Database DB31")
    expect(db31.locator(".layout-tag")).to_have_text("VMDK on VMFS")
    expect(db31.get_by_label("Database disk")).to_have_value("2016")
    expect(page.locator("#databases")).to_be_visible()
    shot(page, screenshots, "35-database-mapped")

    # Read the advisor for DB31.
    advice = page.get_by_label("Advice for DB31")
    fits = advice.locator("li.fits")
    # The agent method fits a VMDK database only once an agent is enrolled; until then the
    # advisor says how to install one (issue 15).
    expect(fits.filter(has_text="In-guest agent stream backup")).to_have_count(0)
    expect(advice.locator("li.ruled-out", has_text="In-guest agent stream backup")).to_contain_text(
        "No agent is enrolled"
    )
    expect(fits.filter(has_text="VMFS snapshot")).to_contain_text(
        "if VMware Tools quiesces the guest (VSS)"
    )
    expect(advice.locator("li.ruled-out", has_text="Array snapshot")).to_contain_text(
        "the array cannot snapshot it"
    )
    page.locator("#advice").screenshot(path=str(screenshots / "36-advisor.png"))

    # A discovered server with a physical-mode RDM: VMFS snapshots are ruled out, and why.
    open_server(page, "EXCH-MBX02")
    db02 = page.get_by_role("form", name="Database DB02")
    expect(db02.locator(".layout-tag")).to_have_text("Physical-mode RDM")
    advice = page.get_by_label("Advice for DB02")
    expect(advice.locator("li.ruled-out", has_text="VMFS snapshot")).to_contain_text(
        "VMFS cannot snapshot it"
    )
    expect(advice.locator("li.fits", has_text="Array snapshot")).to_be_visible()
    # Move its logs onto its own disk (the same one the attribute named: nothing changes).
    db02.get_by_role("button", name="Save DB02").click()
    expect(page.get_by_role("status").first).to_contain_text("Nothing changed for DB02")
    shot(page, screenshots, "37-server-physical-rdm")


def test_policy_backup_now_restore_point_and_revert(jobs_page: Page, lab, screenshots):
    page = jobs_page
    ensure_synced_vcenter(page, lab)
    name = f"e2e-db01-{uuid.uuid4().hex[:4]}"

    # A policy for database DB01 of EXCH-MBX01 (a VMDK): VMFS snapshot, VSS-quiesced.
    page.goto("/policies/new")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Protection method").select_option("vmfs_snapshot")
    page.get_by_label("Consistency").select_option("hot_application")
    page.get_by_label("Snapshots kept on primary").fill("2")
    target = page.locator(".target", has_text="EXCH-MBX01")
    target.get_by_label("DB01").check()
    page.get_by_role("button", name="Create policy").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)

    # Run it now and watch the job (and the per-target job it starts) finish, live.
    page.get_by_role("button", name="Back up now").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Backup job #")
    page.evaluate("window.__marker = 'same page'")
    children = page.get_by_role("region", name="Jobs it started")
    expect(children.locator("tbody tr")).to_have_count(1, timeout=JOB_TIMEOUT)
    expect(children.locator("tbody tr").first).to_contain_text("Succeeded", timeout=JOB_TIMEOUT)
    assert page.evaluate("window.__marker") == "same page"  # htmx refreshed it in place
    shot(page, screenshots, "40-backup-job")
    children.locator("tbody tr a").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Backup job #")
    expect(page.locator("main")).to_contain_text("Succeeded")

    # The restore point: consistency reached, where the copy is.
    page.locator("a.made-point").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Restore point of EXCH-MBX01 / DB01")
    main = page.locator("main")
    expect(main).to_contain_text("Hot, application-consistent")
    expect(main).to_contain_text("VM snapshot (primary storage)")
    expect(main).to_contain_text("bulwark-job-")
    shot(page, screenshots, "41-restore-point")

    # Revert: the operator types the server's name; a wrong name is refused.
    page.get_by_role("link", name="Revert to this restore point").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Revert EXCH-MBX01 to")
    expect(main).to_contain_text("every database and the system disk of EXCH-MBX01 go back")
    confirm = page.get_by_label("Type the server's name")
    confirm.fill("EXCH-MBX02")
    page.get_by_role("button", name="Revert EXCH-MBX01").click()
    expect(page.get_by_role("alert")).to_contain_text("“EXCH-MBX02” is not the server's name")
    shot(page, screenshots, "42-revert-wrong-name")
    page.get_by_label("Type the server's name").fill("EXCH-MBX01")
    page.get_by_role("button", name="Revert EXCH-MBX01").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("Restore job #")
    expect(page.get_by_role("status").first).to_contain_text("queued")
    state = page.get_by_role("region", name="State")
    expect(state).to_contain_text("Succeeded", timeout=JOB_TIMEOUT)
    expect(page.locator("main")).to_contain_text("reverting EXCH-MBX01 to snapshot")
    shot(page, screenshots, "43-restore-job")

    # The server's page lists the restore point; the overview measures the RPO.
    open_server(page, "EXCH-MBX01")
    expect(page.locator("#restore-points")).to_contain_text("Hot, application-consistent")
    page.goto("/")
    row = page.locator("tr", has=page.get_by_role("link", name="EXCH-MBX01", exact=True))
    expect(row).to_contain_text("Within objective")
    expect(row).to_contain_text(re.compile(r"(under )?\d+ min old"))
    expect(row).to_contain_text("objective 24 h (its schedule)")
    shot(page, screenshots, "44-overview-rpo")

    # The catalog lists it; a legal hold keeps it until released (with confirmation).
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Restore points").click()
    page.get_by_label("Server", exact=True).select_option(label="EXCH-MBX01")
    page.get_by_role("button", name="Filter").click()
    # One restore point, under its server's heading row.
    rows = page.locator("main table tbody tr:not(.group-head)")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("VM snapshot (primary storage)")
    rows.first.get_by_role("link").first.click()
    page.get_by_role("link", name="Place legal hold").click()
    hold = f"Case {name}"
    page.get_by_label("Name", exact=True).fill(hold)
    page.get_by_label("Reason").fill("Records request from legal (e2e)")
    expect(page.get_by_label("One restore point")).to_be_checked()
    shot(page, screenshots, "45-place-hold")
    page.get_by_role("button", name="Place legal hold").click()
    expect(page.get_by_role("status").first).to_contain_text(f"Legal hold '{hold}' placed")
    row = page.locator("tr", has_text=hold)
    expect(row).to_contain_text("In force")
    shot(page, screenshots, "46-holds")
    row.get_by_role("link", name=f"Release {hold}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Release legal hold “{hold}”?")
    page.get_by_role("button", name="Release hold").click()
    expect(page.get_by_role("status").first).to_contain_text("released")
    expect(page.locator("tr", has_text=hold)).to_have_count(0)
