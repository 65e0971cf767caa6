"""Restore points, reverting to one (the typed server name), and legal holds."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from sqlalchemy import select

from app.db.models import (
    AuditEvent,
    ExchangeDatabase,
    ExchangeServer,
    Job,
    LegalHold,
    Policy,
    RestorePoint,
    RestorePointCopy,
)
from app.db.types import utcnow
from app.domain.jobs import JobKind
from app.domain.protection import (
    Consistency,
    CopyLocation,
    DatabaseLayout,
    ProtectionMethod,
    RestorePointStatus,
)
from app.security.roles import Role
from tests.web.conftest import form_token


@pytest.fixture
def points(app, client) -> dict[str, int]:
    now = utcnow()
    with app.state.runtime.db.session() as session:
        server = ExchangeServer(name="EXCH-MBX03", vm_moref="vm-103")
        server.databases = [ExchangeDatabase(name="DB03", layout=DatabaseLayout.RDM_VIRTUAL)]
        policy = Policy(
            name="db03-scripted",
            method=ProtectionMethod.VMFS_SNAPSHOT,
            consistency=Consistency.HOT_CRASH_SCRIPTED,
            rpo_minutes=60,
        )
        session.add_all([server, policy])
        session.flush()
        slow = RestorePoint(
            server_id=server.id,
            database_id=server.databases[0].id,
            policy_id=policy.id,
            captured_at=now - timedelta(minutes=30),
            method=ProtectionMethod.VMFS_SNAPSHOT,
            consistency=Consistency.CRASH,
            capabilities=["whole_database", "instant_recovery"],
            details={
                "quiesce_window_s": 18.25,
                "asked_consistency": "hot_crash_scripted",
                "snapshot_name": "bulwark-job-7",
            },
        )
        slow.copies = [
            RestorePointCopy(location=CopyLocation.VM_SNAPSHOT, reference="snapshot-77"),
            RestorePointCopy(location=CopyLocation.REPOSITORY, reference="manifest-abc"),
        ]
        quick = RestorePoint(
            server_id=server.id,
            policy_id=policy.id,
            captured_at=now - timedelta(hours=5),
            method=ProtectionMethod.VMFS_SNAPSHOT,
            consistency=Consistency.HOT_CRASH_SCRIPTED,
            details={"quiesce_window_s": 2.5},
        )
        quick.copies = [
            RestorePointCopy(
                location=CopyLocation.VM_SNAPSHOT, reference="snapshot-12", removed_at=now
            )
        ]
        expired = RestorePoint(
            server_id=server.id,
            captured_at=now - timedelta(days=9),
            method=ProtectionMethod.VMFS_SNAPSHOT,
            consistency=Consistency.COLD,
            status=RestorePointStatus.EXPIRED,
        )
        session.add_all([slow, quick, expired])
        session.flush()
        return {
            "server": server.id,
            "slow": slow.id,
            "quick": quick.id,
            "policy": policy.id,
            "database": server.databases[0].id,
        }


def html_text(response) -> str:
    return unescape(response.text)


def restore_jobs(app) -> list[Job]:
    with app.state.runtime.db.session() as session:
        return list(session.scalars(select(Job).where(Job.kind == JobKind.RESTORE)))


def test_detail_shows_consistency_window_copies_and_holds(app, admin_client, points):
    page = admin_client.get(f"/restore-points/{points['slow']}")
    assert page.status_code == 200
    html = page.text
    assert "Restore point of EXCH-MBX03 / DB03" in html
    assert "<strong>Crash-consistent</strong>" in html
    assert "asked for Hot, quiesced by scripts" in html  # reached, not asked, is what counts
    assert "18.2 s · near the 20 s limit" in html or "18.3 s · near the 20 s limit" in html
    assert "snapshot-77" in html and "bulwark-job-7" in html and "manifest-abc" in html
    assert "VM snapshot (primary storage)" in html and "Repository (off-host)" in html
    assert "Revert to this restore point" in html
    assert "Place legal hold" in html
    # Without a live VM snapshot there is nothing to revert to.
    quick = admin_client.get(f"/restore-points/{points['quick']}").text
    assert "2.5 s" in quick and "near the" not in quick
    assert "Revert to this restore point" not in quick and "cannot be reverted" in quick


def test_list_filters_and_offers_revert(admin_client, points):
    html = admin_client.get("/restore-points").text
    assert html.count("Revert…") == 1
    assert "18.2 s" in html or "18.3 s" in html
    by_location = admin_client.get("/restore-points?location=repository").text
    assert f'href="/restore-points/{points["slow"]}"' in by_location
    assert f'href="/restore-points/{points["quick"]}"' not in by_location
    by_consistency = admin_client.get("/restore-points?consistency=cold").text
    assert "Cold (server shut down)" in by_consistency and "1–1 of 1" in by_consistency
    by_server = admin_client.get(f"/restore-points?server={points['server']}&period=24h").text
    assert "1–2 of 2" in by_server
    assert "No restore points match" in admin_client.get("/restore-points?server=999").text
    by_database = admin_client.get(f"/restore-points?database={points['database']}").text
    assert f'href="/restore-points/{points["slow"]}"' in by_database
    assert f'href="/restore-points/{points["quick"]}"' not in by_database
    assert "EXCH-MBX03 / DB03</option>" in by_database


def test_revert_confirmation_refuses_a_wrong_name(app, admin_client, points):
    page = admin_client.get(f"/restore-points/{points['slow']}/revert")
    assert page.status_code == 200
    html = page.text
    assert "Revert EXCH-MBX03 to" in html and "is lost" in html
    assert "every database and the system disk of EXCH-MBX03 go back" in html
    assert "snapshot-77" in html and 'name="confirm"' in html
    token = form_token(admin_client, f"/restore-points/{points['slow']}/revert")
    wrong = admin_client.post(
        f"/restore-points/{points['slow']}/revert",
        data={"csrf_token": token, "confirm": "EXCH-MBX01"},
    )
    assert wrong.status_code == 422
    assert "“EXCH-MBX01” is not the server's name" in html_text(wrong)
    assert 'value="EXCH-MBX01"' in wrong.text
    empty = admin_client.post(
        f"/restore-points/{points['slow']}/revert", data={"csrf_token": token, "confirm": ""}
    )
    assert empty.status_code == 422 and "Type EXCH-MBX03 exactly to revert it." in empty.text
    assert restore_jobs(app) == []


def test_revert_with_the_right_name_starts_the_job(app, admin_client, points):
    token = form_token(admin_client, f"/restore-points/{points['slow']}/revert")
    response = admin_client.post(
        f"/restore-points/{points['slow']}/revert",
        data={"csrf_token": token, "confirm": "EXCH-MBX03"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"].startswith("/jobs/")
    (job,) = restore_jobs(app)
    assert job.params["restore_point_id"] == points["slow"]
    assert job.params["confirm"] == "EXCH-MBX03" and job.params["mode"] == "revert"
    assert job.server_id == points["server"] and job.created_by == "admin"
    page = admin_client.get(response.headers["location"]).text
    assert "Restore job #" in page and "queued" in page and 'hx-trigger="every 3s"' in page
    assert f'href="/restore-points/{points["slow"]}"' in page
    with app.state.runtime.db.session() as session:
        assert session.scalar(select(AuditEvent.id).where(AuditEvent.action == "job.restore"))
    detail = admin_client.get(f"/restore-points/{points['slow']}").text
    assert f'href="/jobs/{job.id}"' in detail


def test_revert_is_refused_without_a_snapshot(app, admin_client, points):
    page = admin_client.get(f"/restore-points/{points['quick']}/revert").text
    assert "nothing to revert to" in page and 'name="confirm"' not in page
    token = form_token(admin_client, f"/restore-points/{points['quick']}/revert")
    response = admin_client.post(
        f"/restore-points/{points['quick']}/revert",
        data={"csrf_token": token, "confirm": "EXCH-MBX03"},
    )
    assert response.status_code == 409 and restore_jobs(app) == []


@pytest.mark.parametrize("role", [Role.AUDITOR])
def test_revert_needs_the_restore_permission(app, client_as, points, role):
    other = client_as(role)
    assert "Revert" not in other.get(f"/restore-points/{points['slow']}").text
    assert other.get(f"/restore-points/{points['slow']}/revert").status_code == 403
    token = form_token(other, "/restore-points")
    response = other.post(
        f"/restore-points/{points['slow']}/revert",
        data={"csrf_token": token, "confirm": "EXCH-MBX03"},
    )
    assert response.status_code == 403 and restore_jobs(app) == []


def test_a_restore_operator_may_revert(app, client_as, points):
    other = client_as(Role.RESTORE_OPERATOR)
    token = form_token(other, f"/restore-points/{points['slow']}/revert")
    response = other.post(
        f"/restore-points/{points['slow']}/revert",
        data={"csrf_token": token, "confirm": "EXCH-MBX03"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and len(restore_jobs(app)) == 1


def test_revert_needs_the_csrf_token(app, admin_client, points):
    response = admin_client.post(
        f"/restore-points/{points['slow']}/revert", data={"confirm": "EXCH-MBX03"}
    )
    assert response.status_code == 403 and restore_jobs(app) == []


# -- legal holds ------------------------------------------------------------------------------


def place(client, **fields):
    token = form_token(client, "/holds/new")
    return client.post("/holds/new", data={"csrf_token": token, **fields}, follow_redirects=False)


def test_place_list_and_release_a_hold(app, admin_client, points):
    form = admin_client.get(f"/holds/new?point={points['slow']}").text
    assert 'id="scope-restore_point" value="restore_point" checked' in form
    assert f'value="{points["slow"]}"' in form
    response = place(
        admin_client,
        name="Case 117",
        reason="Records request LEG-117",
        scope="server",
        server_id=str(points["server"]),
        restore_point_id="",
    )
    assert response.status_code == 303
    listing = admin_client.get("/holds").text
    assert "Case 117" in listing and "every restore point of" in listing and "In force" in listing
    # The restore points it covers say so.
    assert "legal hold" in admin_client.get("/restore-points").text
    assert "Case 117" in admin_client.get(f"/restore-points/{points['slow']}").text

    with app.state.runtime.db.session() as session:
        hold_id = session.scalar(select(LegalHold.id))
    confirm = admin_client.get(f"/holds/{hold_id}/release")
    assert confirm.status_code == 200 and "Release legal hold “Case 117”?" in confirm.text
    assert "retention applies again" in confirm.text
    token = form_token(admin_client, f"/holds/{hold_id}/release")
    response = admin_client.post(
        f"/holds/{hold_id}/release", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    assert "No legal holds in force." in admin_client.get("/holds").text
    released = admin_client.get("/holds?state=released").text
    assert "Case 117" in released and "Released" in released
    again = admin_client.post(f"/holds/{hold_id}/release", data={"csrf_token": token})
    assert again.status_code == 409 and "already released" in again.text
    with app.state.runtime.db.session() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.action.startswith("legal_hold."))
        ).all()
    assert sorted(actions) == ["legal_hold.create", "legal_hold.release"]


def test_hold_form_errors(app, admin_client, points):
    response = place(admin_client, name="Case 9", reason="why", scope="server", server_id="")
    assert (
        response.status_code == 422
        and "Choose the server whose restore points the hold keeps." in response.text
    )
    response = place(admin_client, name="", reason="", scope="mailbox", mailbox="a@b.example")
    assert response.status_code == 422 and 'id="err-name"' in response.text
    place(admin_client, name="Case 9", reason="why", scope="mailbox", mailbox="a@b.example")
    dup = place(admin_client, name="Case 9", reason="why", scope="mailbox", mailbox="c@d.example")
    assert dup.status_code == 409 and "already exists" in dup.text


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.AUDITOR, Role.RESTORE_OPERATOR])
def test_only_admins_place_and_release_holds(app, admin_client, client_as, points, role):
    place(admin_client, name="Case 1", reason="r", scope="server", server_id=str(points["server"]))
    with app.state.runtime.db.session() as session:
        hold_id = session.scalar(select(LegalHold.id))
    other = client_as(role)
    listing = other.get("/holds")
    assert listing.status_code == 200 and "Case 1" in listing.text
    assert "Place a legal hold" not in listing.text and "Release…" not in listing.text
    assert other.get("/holds/new").status_code == 403
    assert other.get(f"/holds/{hold_id}/release").status_code == 403
    token = form_token(other, "/holds")
    response = other.post(
        "/holds/new",
        data={"csrf_token": token, "name": "x", "reason": "r", "scope": "mailbox", "mailbox": "m"},
    )
    assert response.status_code == 403
    response = other.post(f"/holds/{hold_id}/release", data={"csrf_token": token})
    assert response.status_code == 403
    with app.state.runtime.db.session() as session:
        assert session.get(LegalHold, hold_id).released_at is None


def test_holds_need_the_csrf_token(app, admin_client, points):
    response = admin_client.post(
        "/holds/new", data={"name": "x", "reason": "r", "scope": "mailbox", "mailbox": "m"}
    )
    assert response.status_code == 403
    with app.state.runtime.db.session() as session:
        assert session.scalar(select(LegalHold.id)) is None


def test_restore_points_are_grouped_per_server_newest_first(app, admin_client):
    from app.db.models import RestorePointCopy
    from app.domain.protection import CopyLocation

    now = utcnow()
    with app.state.runtime.db.session() as s:
        b, a = ExchangeServer(name="EXCH-B"), ExchangeServer(name="EXCH-A")
        s.add_all([a, b])
        s.flush()
        for server, hours in ((b, 1), (a, 2), (b, 3), (a, 4)):
            point = RestorePoint(
                server_id=server.id,
                captured_at=now - timedelta(hours=hours),
                method=ProtectionMethod.VM_IMAGE,
                consistency=Consistency.CRASH,
                size_bytes=40 << 30,
            )
            point.copies = [
                RestorePointCopy(
                    location=CopyLocation.REPOSITORY, reference="m1", size_bytes=3 << 30
                ),
                RestorePointCopy(
                    location=CopyLocation.REPOSITORY, reference="m2", size_bytes=1 << 30
                ),
            ]
            s.add(point)
    html = admin_client.get("/restore-points").text
    groups = html.split('<tbody class="server-group">')[1:]
    assert [g.split("</a>")[0].rsplit(">", 1)[1] for g in groups] == ["EXCH-A", "EXCH-B"]
    captured = [
        re.findall(r'row-name nowrap" href="/restore-points/\d+">([^<]+)<', g) for g in groups
    ]
    assert all(times == sorted(times, reverse=True) and len(times) == 2 for times in captured)
    first = groups[0].split("</tr>")[1]
    assert first.count('<span class="tag">Repository (off-host)</span>') == 1  # one badge a place
    assert "4.0 GiB" in first and "of 40.0 GiB" in first  # stored beside provisioned
