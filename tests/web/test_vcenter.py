"""vCenter connections in the dashboard: guest credentials, test, trusting a certificate, and
syncing the inventory — against the vSphere lab where vCenter has to answer."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from app.db.models import AuditEvent, Connection, ExchangeServer, VirtualMachine
from app.domain.connections import ConnectionStatus
from app.security.roles import Role
from tests.web.conftest import form_token
from tests.web.test_connections import create, vcenter_form

GUEST_SECRET = "Guest-Secret-9!"


def lab_connection(client, lab, **changes) -> int:
    """The lab's vCenter, added through the form, its certificate not trusted yet."""
    return create(
        client,
        name="lab-vc",
        host=lab.host,
        port=str(lab.port),
        username=lab.username,
        password=lab.password,
        **changes,
    )


def audit(app, action: str) -> list[AuditEvent]:
    with app.state.runtime.db.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_guest_credentials_are_stored_write_only(app, admin_client):
    cid = create(admin_client, guest_username=r"CORP\svc-backup", guest_password=GUEST_SECRET)
    page = admin_client.get(f"/connections/{cid}")
    assert r"CORP\svc-backup" in page.text and "password stored, encrypted" in page.text
    edit = admin_client.get(f"/connections/{cid}/edit")
    assert 'name="guest_password"' in edit.text and GUEST_SECRET not in edit.text
    assert "Stored — leave blank to keep it." in edit.text
    with app.state.runtime.db.session() as session:
        conn = session.get(Connection, cid)
        assert conn.guest_username == r"CORP\svc-backup"
        assert app.state.runtime.secrets.open(conn.guest_secret_ciphertext, "guest") == (
            GUEST_SECRET
        )

    token = form_token(admin_client, f"/connections/{cid}/edit")
    response = admin_client.post(
        f"/connections/{cid}/edit",
        data=vcenter_form(token, password="", guest_username=r"CORP\svc-backup2"),
        follow_redirects=False,
    )
    assert response.status_code == 303
    response = admin_client.post(
        f"/connections/{cid}/edit",
        data=vcenter_form(
            token, password="", guest_username=r"CORP\svc-backup2", guest_password="New-Guest-1"
        ),
        follow_redirects=False,
    )
    assert response.status_code == 303
    with app.state.runtime.db.session() as session:
        conn = session.get(Connection, cid)
        assert conn.guest_username == r"CORP\svc-backup2"
        assert app.state.runtime.secrets.open(conn.guest_secret_ciphertext, "guest") == (
            "New-Guest-1"
        )
    fields = [e.detail["fields"] for e in audit(app, "connection.update")]
    assert fields == [["guest_username"], ["guest_password"]]
    for path in (f"/connections/{cid}", f"/connections/{cid}/edit", "/audit"):
        assert GUEST_SECRET not in admin_client.get(path).text
        assert "New-Guest-1" not in admin_client.get(path).text


def test_guest_fields_are_offered_for_vcenter_only(admin_client):
    rid = create(admin_client, name="repo", kind="repository", host="", port="", password="")
    assert 'name="guest_username"' not in admin_client.get(f"/connections/{rid}/edit").text
    assert "Guest account" not in admin_client.get(f"/connections/{rid}").text
    new = admin_client.get("/connections/new").text
    assert 'class="form-section when-vcenter"' in new


@pytest.mark.lab
def test_untrusted_certificate_then_trust_it_then_ok(app, admin_client, lab):
    cid = lab_connection(admin_client, lab)
    page = admin_client.get(f"/connections/{cid}")
    assert "Test connection" in page.text
    token = form_token(admin_client, f"/connections/{cid}")
    response = admin_client.post(
        f"/connections/{cid}/test", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    page = admin_client.get(response.headers["location"])
    assert "The test failed." in page.text and "not trusted" in page.text
    assert f'id="presented-thumbprint">{lab.thumbprint}<' in page.text
    assert "Trust this certificate…" in page.text
    with app.state.runtime.db.session() as session:
        assert session.get(Connection, cid).status == ConnectionStatus.FAILED

    confirm = admin_client.get(f"/connections/{cid}/trust")
    assert confirm.status_code == 200
    html = confirm.text
    assert f'id="trust-thumbprint">{lab.thumbprint}<' in html
    assert f"{lab.host}:{lab.port}" in html and "audit log" in html
    assert "nothing: no certificate is trusted for it yet" in html

    # Only the certificate the test was shown can be trusted, whatever the form says.
    other = "AB:" * 31 + "CD"
    refused = admin_client.post(
        f"/connections/{cid}/trust", data={"csrf_token": token, "thumbprint": other}
    )
    assert refused.status_code == 409 and "nothing was trusted" in refused.text
    with app.state.runtime.db.session() as session:
        assert session.get(Connection, cid).trusted_thumbprint is None

    response = admin_client.post(
        f"/connections/{cid}/trust",
        data={"csrf_token": token, "thumbprint": lab.thumbprint.lower().replace(":", "")},
        follow_redirects=False,
    )
    assert response.status_code == 303
    page = admin_client.get(response.headers["location"])
    assert "is now trusted" in page.text and "Signed in" in page.text
    assert "Trust this certificate…" not in page.text
    with app.state.runtime.db.session() as session:
        conn = session.get(Connection, cid)
        assert conn.trusted_thumbprint == lab.thumbprint
        assert conn.status == ConnectionStatus.OK
    trusted = audit(app, "connection.trust_certificate")
    assert [(e.actor, e.detail["thumbprint"]) for e in trusted] == [("admin", lab.thumbprint)]
    assert [e.outcome for e in audit(app, "connection.test")] == ["failure", "success"]


def test_trust_needs_a_test_first(admin_client):
    cid = create(admin_client)
    page = admin_client.get(f"/connections/{cid}/trust")
    assert page.status_code == 200 and "No certificate to trust" in page.text
    token = form_token(admin_client, f"/connections/{cid}")
    response = admin_client.post(
        f"/connections/{cid}/trust", data={"csrf_token": token, "thumbprint": "AB" * 32}
    )
    assert response.status_code == 409 and "nothing was trusted" in response.text


def test_a_failed_test_shows_the_error(app, admin_client):
    cid = create(admin_client, host="127.0.0.1", port="1")
    token = form_token(admin_client, f"/connections/{cid}")
    page = admin_client.post(f"/connections/{cid}/test", data={"csrf_token": token})
    assert page.status_code == 200
    assert "The test failed." in page.text and "127.0.0.1:1" in page.text
    assert "Trust this certificate" not in page.text


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.AUDITOR, Role.RESTORE_OPERATOR])
def test_only_admins_test_and_trust(app, admin_client, client_as, role):
    cid = create(admin_client)
    other = client_as(role)
    assert "Test connection" not in other.get(f"/connections/{cid}").text
    token = form_token(other, f"/connections/{cid}")
    assert other.post(f"/connections/{cid}/test", data={"csrf_token": token}).status_code == 403
    assert other.get(f"/connections/{cid}/trust").status_code == 403
    response = other.post(
        f"/connections/{cid}/trust", data={"csrf_token": token, "thumbprint": "AB" * 32}
    )
    assert response.status_code == 403
    assert audit(app, "connection.test") == []


def test_test_and_trust_need_the_csrf_token(app, admin_client):
    cid = create(admin_client)
    for path in (
        f"/connections/{cid}/test",
        f"/connections/{cid}/trust",
        f"/connections/{cid}/sync",
    ):
        response = admin_client.post(path, data={"thumbprint": "AB" * 32})
        assert response.status_code == 403, path
        assert "reload the page" in response.text
    assert audit(app, "connection.test") == [] and audit(app, "inventory.sync") == []


@pytest.mark.lab
def test_sync_now_shows_what_was_read(app, admin_client, lab):
    cid = lab_connection(admin_client, lab, trusted_thumbprint=lab.thumbprint)
    token = form_token(admin_client, f"/connections/{cid}")
    page = admin_client.post(f"/connections/{cid}/sync", data={"csrf_token": token})
    assert page.status_code == 200, page.text
    html = page.text
    assert "Inventory synced" in html
    estate = lab.estate
    assert re.search(rf">\s*{estate['vm_count_total']} <small>", html)
    tagged = sorted(vm["name"] for vm in estate["exchange_vms"] if vm["custom_attribute"])
    with app.state.runtime.db.session() as session:
        servers = dict(session.execute(select(ExchangeServer.name, ExchangeServer.id)).all())
        vms = session.scalar(select(func.count(VirtualMachine.id)))
    assert sorted(servers) == tagged and vms == estate["vm_count_total"]
    for name in tagged:
        assert f'href="/servers/{servers[name]}">{name}<' in html
    assert f'href="/inventory?connection={cid}"' in html

    detail = admin_client.get(f"/connections/{cid}").text
    assert "Last sync" in detail and "never" not in detail.split("Last sync", 1)[1][:200]
    inventory = admin_client.get(f"/inventory?connection={cid}&q=EXCH-MBX0").text
    assert "EXCH-MBX06" in inventory and "Protect EXCH-MBX06 as Exchange server" in inventory


def test_sync_failure_is_shown_not_raised(app, admin_client):
    cid = create(admin_client, host="127.0.0.1", port="1")
    token = form_token(admin_client, f"/connections/{cid}")
    page = admin_client.post(f"/connections/{cid}/sync", data={"csrf_token": token})
    assert page.status_code == 502
    assert "Inventory sync failed" in page.text and "127.0.0.1:1" in page.text
    with app.state.runtime.db.session() as session:
        assert session.get(Connection, cid).status == ConnectionStatus.FAILED
    assert [e.outcome for e in audit(app, "inventory.sync")] == ["failure"]


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.RESTORE_OPERATOR])
def test_sync_needs_the_backup_permission(app, admin_client, client_as, role):
    cid = create(admin_client)
    other = client_as(role)
    assert "Sync inventory now" not in other.get(f"/connections/{cid}").text
    token = form_token(other, f"/connections/{cid}")
    assert other.post(f"/connections/{cid}/sync", data={"csrf_token": token}).status_code == 403
    assert audit(app, "inventory.sync") == []
