"""The inventory pages: filters, disk backings, paging in SQL, and protecting a VM."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import event, select

from app.db.models import AuditEvent, ExchangeServer
from app.security.roles import Role
from tests.web.conftest import form_token
from tests.web.inventory_data import NAA_P, NAA_V, add_exchange_vm, add_many_vms, add_vcenter


@pytest.fixture
def inventory(app, client) -> dict[str, int]:
    with app.state.runtime.db.session() as session:
        vc = add_vcenter(session)
        other = add_vcenter(session, "vc-dr")
        vm = add_exchange_vm(session, vc.id)
        protected = add_exchange_vm(session, vc.id, "EXCH-MBX01")
        session.add(
            ExchangeServer(name="EXCH-MBX01", connection_id=vc.id, vm_moref=protected.moref)
        )
        add_many_vms(session, vc.id, 12)
        add_many_vms(session, other.id, 3, start=100)
        return {"vc": vc.id, "dr": other.id, "vm": vm.id, "protected": protected.id}


def test_vms_with_their_disks_and_backings(admin_client, inventory):
    page = admin_client.get("/inventory")
    assert page.status_code == 200
    html = page.text
    assert "EXCH-MBX07" in html and "WEB-00001" in html and "WEB-00100" in html
    assert "1–17 of 17 VMs" in html
    for badge in ("VMDK", "Physical RDM", "Virtual RDM"):
        assert f">{badge}</span>" in html
    assert f"LUN {NAA_P}" in html and f"LUN {NAA_V}" in html  # RDMs show their LUN
    assert "VMFS-EXCH-DB-01" in html  # VMDKs show their datastore
    assert "independent persistent" in html
    assert "Protect EXCH-MBX07 as Exchange server" in html
    # A VM that is already a server links to it instead.
    assert "Protect EXCH-MBX01 as Exchange server" not in html
    assert 'href="/servers/' in html


@pytest.mark.parametrize(
    ("query", "present", "absent"),
    [
        ("q=mbx", ["EXCH-MBX07", "EXCH-MBX01"], ["WEB-00001"]),
        ("backing=rdm-physical", ["EXCH-MBX07"], ["WEB-00001"]),
        ("backing=rdm-virtual", ["EXCH-MBX01"], ["WEB-00002"]),
        ("exchange=yes", ["EXCH-MBX01"], ["EXCH-MBX07", "WEB-00001"]),
        ("exchange=no", ["EXCH-MBX07", "WEB-00001"], ["/servers/"]),
        ("power=poweredOff", ["WEB-00000", "WEB-00010"], ["WEB-00001", "EXCH-MBX07"]),
        ("backing=bogus&exchange=maybe", ["EXCH-MBX07", "WEB-00001"], []),
    ],
)
def test_filters(admin_client, inventory, query, present, absent):
    html = admin_client.get(f"/inventory?{query}").text
    for text in present:
        assert text in html, (query, text)
    for text in absent:
        assert text not in html, (query, text)


def test_filter_by_vcenter(admin_client, inventory):
    html = admin_client.get(f"/inventory?connection={inventory['dr']}").text
    assert "1–3 of 3 VMs" in html and "WEB-00100" in html and "EXCH-MBX07" not in html
    assert "1–17 of 17" in admin_client.get("/inventory?connection=abc").text


def test_five_thousand_vms_page_fast_without_a_query_per_row(app, admin_client):
    with app.state.runtime.db.session() as session:
        vc = add_vcenter(session)
        add_many_vms(session, vc.id, 5000)
        add_exchange_vm(session, vc.id)

    statements: list[str] = []
    engine = app.state.runtime.db.engine

    def _count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", _count)
    try:
        started = time.perf_counter()
        first = admin_client.get("/inventory")
        elapsed = time.perf_counter() - started
        first_count = len(statements)
        statements.clear()
        last = admin_client.get("/inventory?page=101&backing=flat")
        last_count = len(statements)
    finally:
        event.remove(engine, "before_cursor_execute", _count)
    assert first.status_code == 200 and "1–50 of 5001 VMs" in first.text
    assert "Page 1 of 101" in first.text
    assert "5001–5001 of 5001 VMs" in last.text
    assert first_count == last_count and first_count <= 10, (first_count, last_count)
    assert elapsed < 2.0, elapsed


def test_vm_page_and_protect_as_exchange_server(app, admin_client, inventory):
    page = admin_client.get(f"/inventory/vms/{inventory['vm']}")
    assert page.status_code == 200
    assert "Protect as Exchange server" in page.text and NAA_P in page.text
    assert "Physical-mode RDM" in page.text  # what a database on that disk would be
    token = form_token(admin_client, f"/inventory/vms/{inventory['vm']}")
    response = admin_client.post(
        f"/inventory/vms/{inventory['vm']}/protect",
        data={"csrf_token": token, "name": "EXCH-MBX07", "description": "hub site"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    server_id = int(response.headers["location"].split("/")[2].split("#")[0])
    with app.state.runtime.db.session() as session:
        server = session.get(ExchangeServer, server_id)
        assert (server.name, server.connection_id, server.vm_moref) == (
            "EXCH-MBX07",
            inventory["vc"],
            "vm-exch-mbx07",
        )
        event_ = session.scalar(select(AuditEvent).where(AuditEvent.action == "server.create"))
        assert event_.actor == "admin"
    page = admin_client.get(response.headers["location"])
    assert "is now an Exchange server" in page.text and "Add a database" in page.text
    assert (
        "Open Exchange server EXCH-MBX07"
        in admin_client.get(f"/inventory/vms/{inventory['vm']}").text
    )


def test_protect_refuses_a_taken_or_invalid_name(app, admin_client, inventory):
    token = form_token(admin_client, f"/inventory/vms/{inventory['vm']}")
    taken = admin_client.post(
        f"/inventory/vms/{inventory['vm']}/protect",
        data={"csrf_token": token, "name": "EXCH-MBX01"},
    )
    assert taken.status_code == 409 and "already exists" in taken.text
    bad = admin_client.post(
        f"/inventory/vms/{inventory['vm']}/protect",
        data={"csrf_token": token, "name": "bad/name"},
    )
    assert bad.status_code == 422 and 'id="err-name"' in bad.text
    with app.state.runtime.db.session() as session:
        assert session.scalars(select(ExchangeServer.name)).all() == ["EXCH-MBX01"]


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.RESTORE_OPERATOR])
def test_protect_needs_the_protection_permission(app, client_as, inventory, role):
    other = client_as(role)
    page = other.get("/inventory")
    assert page.status_code == 200 and "Protect as Exchange server" not in page.text
    token = form_token(other, "/inventory")
    response = other.post(
        f"/inventory/vms/{inventory['vm']}/protect", data={"csrf_token": token, "name": "X1"}
    )
    assert response.status_code == 403
    with app.state.runtime.db.session() as session:
        assert session.scalar(select(ExchangeServer).where(ExchangeServer.name == "X1")) is None


def test_protect_needs_the_csrf_token(app, admin_client, inventory):
    response = admin_client.post(f"/inventory/vms/{inventory['vm']}/protect", data={"name": "X"})
    assert response.status_code == 403
    assert admin_client.get("/inventory/vms/99999").status_code == 404


def test_an_operator_may_protect(app, client_as, inventory):
    operator = client_as(Role.OPERATOR)
    token = form_token(operator, "/inventory")
    response = operator.post(
        f"/inventory/vms/{inventory['vm']}/protect",
        data={"csrf_token": token, "name": "EXCH-MBX07"},
        follow_redirects=False,
    )
    assert response.status_code == 303


def test_empty_inventory_says_what_to_do(admin_client):
    html = admin_client.get("/inventory").text
    assert "The inventory is empty." in html and "/connections/new?kind=vcenter" in html
