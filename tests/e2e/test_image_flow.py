"""A VM image backup in a real browser against the vSphere lab: add a repository, protect a
server with a VM-image policy, back it up now (bytes and throughput on the job page), then on
the restore point download a disk image and restore the disk as a new VMDK; then the whole-VM
wizard: restore the VM as a new VM from the repository (defaults from the original, network
disconnected) and, over the original, the configuration compared and the name typed.

The lab is the govmomi simulator (tests/lab_fixture.py): a stand-in for vCenter, not the
thing under test; the repository is a folder on this machine.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from app.repository.store import open_repository_at
from tests.e2e.conftest import SECRET_KEY, browser_page, running_server, sign_in
from tests.e2e.test_dashboard import shot
from tests.e2e.test_lab_flows import ensure_synced_vcenter

pytestmark = [pytest.mark.e2e, pytest.mark.lab]


@pytest.fixture(scope="module")
def lab():
    """A lab of its own: this flow restores a whole VM as a new one, and the session's lab
    must keep the estate the other tests count."""
    from tests.lab_fixture import running_lab

    with running_lab() as running:
        yield running


JOB_TIMEOUT = 90_000
SERVER = "EXCH-MBX01"  # system disk, database and logs on VMDKs


@pytest.fixture(scope="module")
def image_server(tmp_path_factory, postgres, screenshots):
    """Its own service and database: the lab flows expect to add the first vCenter and find
    the only restore point of EXCH-MBX01 on theirs."""
    tmp = tmp_path_factory.mktemp("e2e-image-server")
    with running_server(
        tmp, postgres, screenshots / "image-server.log", "tests.e2e.jobs_app:create_app"
    ) as running:
        yield running


@pytest.fixture
def image_page(browser, image_server) -> Iterator[Page]:
    with browser_page(browser, image_server.url) as page:
        sign_in(page)
        yield page


def test_image_backup_download_and_restore_a_disk(image_page: Page, lab, screenshots, tmp_path):
    page = image_page
    ensure_synced_vcenter(page, lab)
    tag = uuid.uuid4().hex[:4]

    # A repository: a folder on this machine (initialised as the connection test would).
    path = tmp_path / "disk-library"
    open_repository_at(path, key=SECRET_KEY.encode(), create=True, encrypted=False)
    page.goto("/connections/new?kind=repository")
    page.get_by_label("Name", exact=True).fill(f"library-{tag}")
    page.get_by_label("Kind", exact=True).select_option("repository")
    page.get_by_label("Settings for this kind").fill(f"path = {path}")
    page.get_by_role("button", name="Add connection").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"library-{tag}")

    # A VM-image policy for the whole server, no snapshot kept on primary storage.
    page.goto("/policies/new")
    page.get_by_label("Name", exact=True).fill(f"e2e-image-{tag}")
    page.get_by_label("Protection method").select_option("vm_image")
    page.get_by_label("Consistency").select_option("hot_application")
    page.get_by_label("Repository").select_option(label=f"library-{tag}")
    page.get_by_label("Snapshots kept on primary").fill("0")
    page.get_by_label(f"{SERVER} (whole server)").check()
    page.get_by_role("button", name="Create policy").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"e2e-image-{tag}")

    # Back up now; the per-target job copies the disks and shows bytes and throughput.
    page.get_by_role("button", name="Back up now").click()
    children = page.get_by_role("region", name="Jobs it started")
    expect(children.locator("tbody tr").first).to_contain_text("Succeeded", timeout=JOB_TIMEOUT)
    children.locator("tbody tr a").first.click()
    state = page.get_by_role("region", name="State")
    expect(state).to_contain_text("12.0 MiB of 12.0 MiB")
    expect(state.locator(".throughput")).to_contain_text(re.compile(r"[\d.]+ [KMG]i?B/s"))
    expect(page.locator("main")).to_contain_text("copied to the repository")
    shot(page, screenshots, "60-image-backup-job")

    # The restore point: its disk images, each with download and restore.
    page.locator("a.made-point").click()
    point_url = page.url
    disks = page.get_by_role("region", name="Disk images in the repository")
    expect(disks.locator("tbody tr")).to_have_count(3)
    shot(page, screenshots, "61-image-restore-point")
    database_disk = next(d for d in lab.exchange_vm(SERVER)["disks"] if d["key"] == 2016)
    row = disks.locator("tr", has_text="key 2016")
    with page.expect_download() as download:
        row.get_by_role("link", name="Download").click()
    data = Path(download.value.path()).read_bytes()
    assert hashlib.sha256(data).hexdigest() == database_disk["content_sha256"]

    row.get_by_role("link", name="Restore disk").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Restore Hard disk 2")
    page.get_by_label("Over the original disk").check()
    page.get_by_role("button", name="Restore disk").click()
    expect(page.get_by_role("alert")).to_contain_text("confirm by setting confirm")
    page.get_by_label("A new disk file beside the original").check()
    shot(page, screenshots, "62-restore-disk-form")
    page.get_by_role("button", name="Restore disk").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Restore job #")
    expect(page.get_by_role("region", name="State")).to_contain_text(
        "Succeeded", timeout=JOB_TIMEOUT
    )
    expect(page.locator("main")).to_contain_text("-restored-rp")
    shot(page, screenshots, "63-restore-disk-job")

    # The whole VM, as a new VM: the restore point offers it (its snapshot is gone, so no
    # revert, and says why).
    page.goto(point_url)
    offers = page.get_by_role("region", name="Restores it allows")
    expect(offers.locator("[data-offer=revert]")).to_contain_text("not offered: no VM snapshot")
    offers.get_by_role("link", name="Restore the whole VM as a new VM").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("as a new VM")
    expect(page.get_by_label("Name of the new VM")).to_have_value(f"{SERVER}-restored")
    expect(page.get_by_label("Network", exact=True)).to_have_value("VM Network")
    expect(page.get_by_label("Datastore")).to_have_value("VMFS-SYS-01")
    expect(page.get_by_label("Connect the network adapters")).not_to_be_checked()
    name = f"{SERVER}-e2e-{tag}"
    page.get_by_label("Name of the new VM").fill(name)
    page.get_by_label("Datastore").select_option("VMFS-GEN-01")
    shot(page, screenshots, "64-whole-vm-wizard")
    page.get_by_role("button", name="Create the VM and restore its disks").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Restore job #")
    expect(page.get_by_role("region", name="State")).to_contain_text(
        "Succeeded", timeout=JOB_TIMEOUT
    )
    expect(page.locator("main")).to_contain_text(f"as new VM {name}")
    expect(page.locator("main")).to_contain_text("MiB/s overall")
    shot(page, screenshots, "65-whole-vm-job")
    home = (
        Path(next(d for d in lab.estate["datastores"] if d["name"] == "VMFS-GEN-01")["local_path"])
        / name
    )
    written = (home / f"{name}_1-flat.vmdk").read_bytes()
    assert hashlib.sha256(written).hexdigest() == database_disk["content_sha256"]

    # Over the original: the configuration compared first, the server's name typed.
    page.goto(f"{point_url}/whole-vm?target=original")
    expect(page.get_by_role("heading", level=1)).to_contain_text("over the original")
    expect(page.locator("#differences")).to_contain_text("the same as when it was backed up")
    page.get_by_label(f"Type {SERVER} to confirm").fill("EXCH-MBX99")
    page.get_by_role("button", name="Power off and restore every disk").click()
    expect(page.get_by_role("alert")).to_contain_text(f"Type {SERVER} exactly")
    shot(page, screenshots, "66-whole-vm-over-original")
