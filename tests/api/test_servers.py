from __future__ import annotations

from app.db.models import Connection, VirtualDisk, VirtualMachine
from tests.api.conftest import assert_problem


def _vcenter(client, admin) -> int:
    return client.post(
        "/api/v1/connections", json={"name": "vc", "kind": "vcenter"}, headers=admin
    ).json()["id"]


def _synced_vm(app, connection_id: int) -> None:
    """An inventory row as a sync would leave it: one disk of each backing."""
    with app.state.runtime.db.session() as session:
        assert session.get(Connection, connection_id)
        vm = VirtualMachine(connection_id=connection_id, moref="vm-42", name="EXCH-MBX01")
        vm.disks = [
            VirtualDisk(device_key=2000, label="Hard disk 1", backing="flat"),
            VirtualDisk(
                device_key=2001,
                label="Hard disk 2",
                backing="rdm-physical",
                lun_uuid="0200000000600a0b80",
            ),
            VirtualDisk(device_key=2002, label="Hard disk 3", backing="rdm-virtual"),
        ]
        session.add(vm)


def test_layout_follows_from_disk_backing(app, client, admin):
    cid = _vcenter(client, admin)
    _synced_vm(app, cid)
    r = client.post(
        "/api/v1/servers",
        headers=admin,
        json={
            "name": "EXCH-MBX01",
            "connection_id": cid,
            "vm_moref": "vm-42",
            "databases": [
                {"name": "DB01", "database_disk_key": 2000},
                {"name": "DB02", "database_disk_key": 2001, "log_disk_key": 2002},
                {"name": "DB03", "database_disk_key": 2002},
            ],
        },
    )
    assert r.status_code == 201, r.text
    layouts = {d["name"]: d["layout"] for d in r.json()["databases"]}
    assert layouts == {"DB01": "vmdk", "DB02": "rdm_physical", "DB03": "rdm_virtual"}


def test_stated_layout_must_agree_with_the_disk(app, client, admin):
    cid = _vcenter(client, admin)
    _synced_vm(app, cid)
    r = client.post(
        "/api/v1/servers",
        headers=admin,
        json={
            "name": "EXCH-MBX01",
            "connection_id": cid,
            "vm_moref": "vm-42",
            "databases": [{"name": "DB01", "database_disk_key": 2001, "layout": "vmdk"}],
        },
    )
    assert_problem(r, 422, "rdm_physical")
    r = client.post(
        "/api/v1/servers",
        headers=admin,
        json={
            "name": "EXCH-MBX01",
            "connection_id": cid,
            "vm_moref": "vm-42",
            "databases": [{"name": "DB01", "database_disk_key": 9999}],
        },
    )
    assert_problem(r, 422, "no disk with key 9999")


def test_server_without_inventory_needs_explicit_layout(client, admin):
    r = client.post(
        "/api/v1/servers", headers=admin, json={"name": "EXCH-X", "databases": [{"name": "DB01"}]}
    )
    assert_problem(r, 422, "layout")
    r = client.post(
        "/api/v1/servers",
        headers=admin,
        json={"name": "EXCH-X", "databases": [{"name": "DB01", "layout": "vmdk"}]},
    )
    assert r.status_code == 201


def test_database_crud_and_duplicates(client, admin):
    sid = client.post("/api/v1/servers", headers=admin, json={"name": "EXCH-A"}).json()["id"]
    r = client.post(
        f"/api/v1/servers/{sid}/databases",
        headers=admin,
        json={"name": "DB01", "layout": "rdm_virtual"},
    )
    assert r.status_code == 201
    dbid = r.json()["id"]
    assert_problem(
        client.post(
            f"/api/v1/servers/{sid}/databases",
            headers=admin,
            json={"name": "DB01", "layout": "vmdk"},
        ),
        409,
    )
    r = client.patch(
        f"/api/v1/servers/{sid}/databases/{dbid}", headers=admin, json={"name": "DB01-renamed"}
    )
    assert r.status_code == 200 and r.json()["name"] == "DB01-renamed"
    assert r.json()["layout"] == "rdm_virtual"
    assert (
        client.delete(f"/api/v1/servers/{sid}/databases/{dbid}", headers=admin).status_code == 204
    )
    assert client.get(f"/api/v1/servers/{sid}", headers=admin).json()["databases"] == []


def test_server_bad_references_and_duplicates(client, admin):
    assert_problem(
        client.post("/api/v1/servers", headers=admin, json={"name": "S", "connection_id": 999}),
        422,
        "does not exist",
    )
    repo = client.post(
        "/api/v1/connections", json={"name": "r", "kind": "repository"}, headers=admin
    ).json()["id"]
    assert_problem(
        client.post("/api/v1/servers", headers=admin, json={"name": "S", "connection_id": repo}),
        422,
        "not a vCenter",
    )
    client.post("/api/v1/servers", headers=admin, json={"name": "S"})
    assert_problem(client.post("/api/v1/servers", headers=admin, json={"name": "S"}), 409)
    assert_problem(
        client.post(
            "/api/v1/servers", headers=admin, json={"name": "S2", "vm_moref": "vm 1; drop"}
        ),
        422,
    )


def test_list_servers_filters(client, admin):
    for n in ("EXCH-A", "EXCH-B", "OTHER"):
        client.post("/api/v1/servers", headers=admin, json={"name": n})
    assert client.get("/api/v1/servers?q=EXCH", headers=admin).json()["total"] == 2
    names = [
        s["name"] for s in client.get("/api/v1/servers?sort=-name", headers=admin).json()["items"]
    ]
    assert names == ["OTHER", "EXCH-B", "EXCH-A"]


def test_advice_per_database(app, client, admin):
    cid = _vcenter(client, admin)
    _synced_vm(app, cid)
    sid = client.post(
        "/api/v1/servers",
        headers=admin,
        json={
            "name": "EXCH-MBX01",
            "connection_id": cid,
            "vm_moref": "vm-42",
            "databases": [
                {"name": "DB01", "database_disk_key": 2000},
                {"name": "DB02", "database_disk_key": 2001},
            ],
        },
    ).json()["id"]
    advice = client.get(f"/api/v1/servers/{sid}/advice", headers=admin).json()
    assert [o["method"] for o in advice["application"]] == ["vm_image"]
    by_db = {d["name"]: {o["method"]: o for o in d["options"]} for d in advice["databases"]}
    assert by_db["DB01"]["mailbox"]["applies"]
    assert not by_db["DB02"]["vmfs_snapshot"]["applies"]
    assert "VMFS cannot snapshot" in by_db["DB02"]["vmfs_snapshot"]["reason"]


def test_advice_and_policies_look_at_the_log_disk(app, client, admin):
    cid = _vcenter(client, admin)
    _synced_vm(app, cid)
    server = client.post(
        "/api/v1/servers",
        headers=admin,
        json={
            "name": "EXCH-MBX01",
            "connection_id": cid,
            "vm_moref": "vm-42",
            # Database on a VMDK, its logs on a physical-mode RDM.
            "databases": [{"name": "DB01", "database_disk_key": 2000, "log_disk_key": 2001}],
        },
    ).json()
    advice = client.get(f"/api/v1/servers/{server['id']}/advice", headers=admin).json()
    options = {o["method"]: o for o in advice["databases"][0]["options"]}
    assert not options["vmfs_snapshot"]["applies"]
    assert "logs are on a physical-mode RDM" in options["vmfs_snapshot"]["reason"]
    # The agent stream fits the layout, but only once an agent is enrolled and online.
    assert not options["agent_stream"]["applies"]
    assert "no agent is enrolled on EXCH-MBX01" in options["agent_stream"]["reason"]
    code = client.post(f"/api/v1/servers/{server['id']}/agent/enrollments", headers=admin)
    assert code.status_code == 201, code.text
    enrolled = client.post("/api/v1/agent/enroll", json={"code": code.json()["code"]})
    assert enrolled.status_code == 200, enrolled.text
    again = client.post("/api/v1/agent/enroll", json={"code": code.json()["code"]})
    assert again.status_code == 401  # one time only
    advice = client.get(f"/api/v1/servers/{server['id']}/advice", headers=admin).json()
    options = {o["method"]: o for o in advice["databases"][0]["options"]}
    assert options["agent_stream"]["applies"]
    r = client.post(
        "/api/v1/policies",
        headers=admin,
        json={
            "name": "db01",
            "method": "vmfs_snapshot",
            "consistency": "hot_application",
            "rpo_minutes": 60,
            "targets": [{"server_id": server["id"], "database_id": server["databases"][0]["id"]}],
        },
    )
    assert_problem(r, 422, "EXCH-MBX01/DB01: the logs are on a physical-mode RDM")
