"""The dashboard for VM images: the restore point lists its disks with download and restore,
the disk restore form confirms, and the job page shows bytes and throughput."""

from __future__ import annotations

import re
from pathlib import Path

from tests.image.conftest import flat_disks, sha
from tests.protection.conftest import backup_now, job, restore_points, run_jobs
from tests.web.conftest import ADMIN_PASSWORD, csrf_from, sign_in

SERVER = "EXCH-MBX03"


def test_restore_point_page_downloads_and_restores_a_disk(
    client, admin, runtime, worker, lab, image_policy
):
    (done,) = backup_now(client, admin, runtime, worker, image_policy()["id"])
    (point,) = restore_points(client, admin)
    assert sign_in(client, "admin", ADMIN_PASSWORD).status_code == 303

    # The backup job's page: bytes moved and the throughput of the copy.
    page = client.get(f"/jobs/{done['id']}").text
    assert re.search(r"48\.0 MiB of 48\.0 MiB · <span class=\"throughput\">[\d.]+ [KMG]i?B/s", page)

    page = client.get(f"/restore-points/{point['id']}").text
    assert "Disk images in the repository" in page
    links = re.findall(r'class="disk-download" href="([^"]+)"', page)
    assert len(links) == 3
    db_link = next(link for link in links if "/disks/2016/" in link)
    # The download link works with the dashboard's session (no API token).
    got = client.get(db_link, headers={"Range": "bytes=0-1023"})
    assert got.status_code == 206
    disk = next(d for d in flat_disks(lab, SERVER) if d["key"] == 2016)
    assert got.content == Path(disk["local_path"]).read_bytes()[:1024]

    form_url = f"/restore-points/{point['id']}/disks/2016/restore"
    form_page = client.get(form_url)
    assert form_page.status_code == 200 and "Over the original disk" in form_page.text
    token = csrf_from(form_page.text)
    wrong = client.post(
        form_url, data={"csrf_token": token, "target": "original", "confirm": "EXCH"}
    )
    assert wrong.status_code == 422 and "confirm by setting confirm" in wrong.text
    started = client.post(
        form_url, data={"csrf_token": token, "target": "new"}, follow_redirects=False
    )
    assert started.status_code == 303
    job_id = int(started.headers["location"].rsplit("/", 1)[-1])
    run_jobs(worker)
    finished = job(client, admin, job_id)
    assert finished["state"] == "succeeded", finished["error"]
    restored = lab.datastore_path("VMFS-SYS-01") / (
        f"{SERVER}/{SERVER}_1-restored-rp{point['id']}-job{job_id}-flat.vmdk"
    )
    assert sha(restored.read_bytes()) == sha(Path(disk["local_path"]).read_bytes())
    # Without the CSRF token nothing starts.
    refused = client.post(form_url, data={"target": "new"}, follow_redirects=False)
    assert refused.status_code in (400, 403)
