"""A server's page: mapping databases to the VM's disks through the API, the advisor, and its
restore points."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app.db.models import (
    AuditEvent,
    ExchangeDatabase,
    ExchangeServer,
    Policy,
    PolicyTarget,
    RestorePoint,
    RestorePointCopy,
)
from app.domain.protection import (
    Consistency,
    CopyLocation,
    DatabaseLayout,
    ProtectionMethod,
)
from app.security.roles import Role
from tests.web.conftest import form_token
from tests.web.inventory_data import add_exchange_vm, add_vcenter


@pytest.fixture
def server(app, client) -> int:
    """An Exchange server whose VM is in the inventory, no databases mapped yet."""
    with app.state.runtime.db.session() as session:
        vc = add_vcenter(session)
        vm = add_exchange_vm(session, vc.id)
        server = ExchangeServer(name="EXCH-MBX07", connection_id=vc.id, vm_moref=vm.moref)
        session.add(server)
        session.flush()
        return server.id


def databases(app, server_id: int) -> dict[str, tuple]:
    with app.state.runtime.db.session() as session:
        rows = session.scalars(
            select(ExchangeDatabase).where(ExchangeDatabase.server_id == server_id)
        ).all()
        return {d.name: (d.database_disk_key, d.log_disk_key, d.layout) for d in rows}


def add(client, server_id: int, **fields):
    token = form_token(client, f"/servers/{server_id}")
    return client.post(
        f"/servers/{server_id}/databases",
        data={"csrf_token": token, **fields},
        follow_redirects=False,
    )


def test_the_page_offers_the_vms_disks(admin_client, server):
    html = admin_client.get(f"/servers/{server}").text
    assert "No databases mapped yet." in html and "Add a database" in html
    # Each disk is offered with its backing, so the layout is visible before saving.
    assert re.search(
        r'<option value="2017" data-backing="rdm-physical">Hard disk 3 · key 2017', html
    )
    assert 'data-backing="rdm-virtual"' in html and "Same disk as the database" in html
    assert "Disks of the VM" in html and "no mapped database" in html


@pytest.mark.parametrize(
    ("disk", "layout"),
    [
        ("2016", DatabaseLayout.VMDK),
        ("2017", DatabaseLayout.RDM_PHYSICAL),
        ("2018", DatabaseLayout.RDM_VIRTUAL),
    ],
)
def test_the_layout_follows_from_the_disk(app, admin_client, server, disk, layout):
    response = add(admin_client, server, name="DB01", database_disk_key=disk, log_disk_key="2032")
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith(f"/servers/{server}#db-")
    assert databases(app, server) == {"DB01": (int(disk), 2032, layout)}
    page = admin_client.get(f"/servers/{server}").text
    assert "Database DB01 mapped" in page
    assert "DB01 database" in page and "DB01 logs" in page  # the disks table says who uses them
    # The advisor now speaks about DB01.
    assert 'aria-label="Advice for DB01"' in page


def test_edit_moves_a_database_and_its_layout_changes(app, admin_client, server):
    add(admin_client, server, name="DB01", database_disk_key="2016", log_disk_key="")
    db_id = _db_id(app, server, "DB01")
    token = form_token(admin_client, f"/servers/{server}")
    response = admin_client.post(
        f"/servers/{server}/databases/{db_id}",
        data={
            "csrf_token": token,
            "name": "DB01",
            "database_disk_key": "2018",
            "log_disk_key": "2032",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert databases(app, server) == {"DB01": (2018, 2032, DatabaseLayout.RDM_VIRTUAL)}
    with app.state.runtime.db.session() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "database.update"))
    assert event.detail["fields"] == ["database_disk_key", "log_disk_key"]

    same = admin_client.post(
        f"/servers/{server}/databases/{db_id}",
        data={
            "csrf_token": token,
            "name": "DB01",
            "database_disk_key": "2018",
            "log_disk_key": "2032",
        },
    )
    assert "Nothing changed for DB01." in same.text


def test_errors_show_next_to_the_form_they_belong_to(app, admin_client, server):
    response = add(admin_client, server, name="DB01", database_disk_key="4242")
    assert response.status_code == 422
    assert 'id="db-new-err-database_disk_key"' in response.text
    assert "has no disk with key 4242" in response.text
    response = add(admin_client, server, name="", database_disk_key="2016")
    assert response.status_code == 422 and 'id="db-new-err-name"' in response.text
    response = add(admin_client, server, name="DB01")
    assert response.status_code == 422 and "Say which disk holds the database" in response.text
    add(admin_client, server, name="DB01", database_disk_key="2016")
    response = add(admin_client, server, name="DB01", database_disk_key="2017")
    assert response.status_code == 409 and "already has a database" in response.text
    assert list(databases(app, server)) == ["DB01"]


def test_without_the_vm_in_the_inventory_the_layout_is_stated(app, admin_client):
    with app.state.runtime.db.session() as session:
        lone = ExchangeServer(name="EXCH-OLD")
        session.add(lone)
        session.flush()
        sid = lone.id
    page = admin_client.get(f"/servers/{sid}").text
    assert "The VM is not in the inventory" in page and 'name="layout"' in page
    response = add(admin_client, sid, name="DB09", database_disk_key="2016")
    assert response.status_code == 422 and "give the layout explicitly" in response.text
    response = add(admin_client, sid, name="DB09", database_disk_key="2016", layout="rdm_physical")
    assert response.status_code == 303
    assert databases(app, sid) == {"DB09": (2016, None, DatabaseLayout.RDM_PHYSICAL)}


def test_remove_asks_first(app, admin_client, server):
    add(admin_client, server, name="DB01", database_disk_key="2016")
    db_id = _db_id(app, server, "DB01")
    with app.state.runtime.db.session() as session:
        policy = Policy(
            name="db-snap",
            method=ProtectionMethod.VMFS_SNAPSHOT,
            consistency=Consistency.COLD,
            schedule_cron="0 2 * * *",
        )
        policy.targets = [PolicyTarget(server_id=server, database_id=db_id)]
        session.add(policy)
    confirm = admin_client.get(f"/servers/{server}/databases/{db_id}/delete")
    assert confirm.status_code == 200
    assert "Remove database “DB01”?" in confirm.text
    assert "stop doing so: db-snap" in confirm.text and "not touched" in confirm.text
    assert list(databases(app, server)) == ["DB01"]
    token = form_token(admin_client, f"/servers/{server}")
    response = admin_client.post(
        f"/servers/{server}/databases/{db_id}/delete",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert databases(app, server) == {}
    assert "Database DB01 removed" in admin_client.get(f"/servers/{server}").text


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.RESTORE_OPERATOR])
def test_mapping_needs_the_protection_permission(app, admin_client, client_as, server, role):
    add(admin_client, server, name="DB01", database_disk_key="2016")
    db_id = _db_id(app, server, "DB01")
    other = client_as(role)
    page = other.get(f"/servers/{server}").text
    assert "Add a database" not in page and "Save DB01" not in page and "Remove DB01" not in page
    token = form_token(other, f"/servers/{server}")
    assert add(other, server, name="DB02", database_disk_key="2017").status_code == 403
    edit = other.post(
        f"/servers/{server}/databases/{db_id}",
        data={"csrf_token": token, "name": "DB01", "database_disk_key": "2017"},
    )
    assert edit.status_code == 403
    assert other.get(f"/servers/{server}/databases/{db_id}/delete").status_code == 403
    gone = other.post(f"/servers/{server}/databases/{db_id}/delete", data={"csrf_token": token})
    assert gone.status_code == 403
    assert databases(app, server) == {"DB01": (2016, None, DatabaseLayout.VMDK)}


def test_mapping_needs_the_csrf_token(app, admin_client, server):
    response = admin_client.post(
        f"/servers/{server}/databases", data={"name": "DB01", "database_disk_key": "2016"}
    )
    assert response.status_code == 403 and databases(app, server) == {}


def test_an_operator_maps_databases(app, client_as, server):
    operator = client_as(Role.OPERATOR)
    assert add(operator, server, name="DB01", database_disk_key="2017").status_code == 303


def test_the_advisor_explains_each_database(app, admin_client, server):
    add(admin_client, server, name="DB-V", database_disk_key="2018")
    add(admin_client, server, name="DB-P", database_disk_key="2017")
    html = admin_client.get(f"/servers/{server}").text
    advice = html.split('id="advice"', 1)[1].split('id="restore-points"', 1)[0]
    # What each method needs for each consistency, in words, not only in a tooltip.
    assert "if pre- and post-snapshot scripts quiesce and resume the database" in advice
    assert "if an Exchange-aware agent runs inside the VM" in advice
    # Why the others are ruled out, in the declarations' (the whitepaper's) words.
    assert "VMFS cannot snapshot it" in advice
    assert "Ruled out" in advice and "Not possible" in advice
    assert "Instant recovery (snapshots kept on primary)" in advice


def test_restore_points_show_quiesce_window_copies_and_revert(app, admin_client, server):
    with app.state.runtime.db.session() as session:
        for seconds in (3.2, 17.5):
            point = RestorePoint(
                server_id=server,
                method=ProtectionMethod.VMFS_SNAPSHOT,
                consistency=Consistency.HOT_CRASH_SCRIPTED,
                details={"quiesce_window_s": seconds},
            )
            point.copies = [RestorePointCopy(location=CopyLocation.VM_SNAPSHOT, reference="snap-1")]
            session.add(point)
    html = admin_client.get(f"/servers/{server}").text
    points = html.split('id="restore-points"', 1)[1]
    assert "3.2 s" in points and "17.5 s · near the 20 s limit" in points
    assert "VM snapshot (primary storage)" in points
    assert points.count("Revert…") == 2
    auditor_page = _auditor(app, admin_client)
    assert "Revert…" not in auditor_page.get(f"/servers/{server}").text


def _auditor(app, admin_client):
    from fastapi.testclient import TestClient

    from app.accounts import create_user
    from tests.web.conftest import SETUP, USER_PASSWORD, sign_in

    with app.state.runtime.db.session() as session:
        create_user(session, SETUP, "auditor-s", USER_PASSWORD, Role.AUDITOR)
    other = TestClient(app)
    assert sign_in(other, "auditor-s", USER_PASSWORD).status_code == 303
    return other


def _db_id(app, server_id: int, name: str) -> int:
    with app.state.runtime.db.session() as session:
        return session.scalar(
            select(ExchangeDatabase.id).where(
                ExchangeDatabase.server_id == server_id, ExchangeDatabase.name == name
            )
        )


def test_the_page_creates_an_enrollment_code_and_shows_the_agent(admin_client, server):
    html = admin_client.get(f"/servers/{server}").text
    assert "No agent is enrolled" in html and "Create an enrollment code" in html
    token = form_token(admin_client, f"/servers/{server}")
    page = admin_client.post(f"/servers/{server}/agent/enroll", data={"csrf_token": token})
    assert page.status_code == 200
    code = re.search(r"One-time code <strong><code>([0-9A-F-]+)</code>", page.text).group(1)
    assert "bulwark agent enroll --url https://" in page.text and f"--code {code}" in page.text
    enrolled = admin_client.post(
        "/api/v1/agent/enroll", json={"code": code, "hostname": "mbx01", "version": "0.1.0"}
    )
    assert enrolled.status_code == 200
    html = admin_client.get(f"/servers/{server}").text
    assert "Online" in html and "mbx01" in html and "0.1.0" in html
