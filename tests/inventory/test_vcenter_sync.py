"""vCenter connections, inventory sync and Exchange discovery against the vSphere lab."""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_problem

pytestmark = pytest.mark.lab
LAYOUT = {"flat": "vmdk", "rdm-physical": "rdm_physical", "rdm-virtual": "rdm_virtual"}


def _add_vcenter(client, admin, lab, **over) -> dict:
    body = {
        "name": "lab-vc",
        "kind": "vcenter",
        "host": lab.host,
        "port": lab.port,
        "username": lab.username,
        "password": lab.password,
        "trusted_thumbprint": lab.thumbprint,
        **over,
    }
    r = client.post("/api/v1/connections", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return r.json()


def test_certificate_is_verified_until_its_thumbprint_is_trusted(client, admin, lab):
    conn = _add_vcenter(client, admin, lab, trusted_thumbprint=None)
    result = client.post(f"/api/v1/connections/{conn['id']}/test", headers=admin).json()
    assert result["ok"] is False and "not trusted" in result["message"]
    assert result["presented_thumbprint"] == lab.thumbprint
    assert (
        client.get(f"/api/v1/connections/{conn['id']}", headers=admin).json()["status"] == "failed"
    )
    r = client.post(
        f"/api/v1/connections/{conn['id']}/trust",
        headers=admin,
        json={"fingerprint": result["presented_thumbprint"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["trusted_thumbprint"] == lab.thumbprint
    result = client.post(f"/api/v1/connections/{conn['id']}/test", headers=admin).json()
    assert result["ok"] is True, result
    assert client.get(f"/api/v1/connections/{conn['id']}", headers=admin).json()["status"] == "ok"
    trusted = client.get(
        "/api/v1/audit-events?action=connection.trust_certificate", headers=admin
    ).json()
    assert trusted["total"] == 1


def test_a_wrong_thumbprint_is_refused(client, admin, lab):
    conn = _add_vcenter(client, admin, lab, trusted_thumbprint="00" * 32)
    result = client.post(f"/api/v1/connections/{conn['id']}/test", headers=admin).json()
    assert result["ok"] is False and result["presented_thumbprint"] == lab.thumbprint


def test_wrong_password_and_unreachable_host_give_clear_errors(client, admin, lab):
    conn = _add_vcenter(client, admin, lab, password="not-the-password")
    result = client.post(f"/api/v1/connections/{conn['id']}/test", headers=admin).json()
    assert result["ok"] is False
    assert "user name or password" in result["message"]
    assert "not-the-password" not in result["message"]
    r = client.post(f"/api/v1/connections/{conn['id']}/sync", headers=admin)
    assert_problem(r, 502, "user name or password")

    gone = _add_vcenter(client, admin, lab, name="gone", port=1)
    result = client.post(f"/api/v1/connections/{gone['id']}/test", headers=admin).json()
    assert result["ok"] is False and f"{lab.host}:1" in result["message"]


def test_sync_reads_the_estate_and_discovers_exchange_servers(client, admin, lab):
    conn = _add_vcenter(client, admin, lab)
    summary = client.post(f"/api/v1/connections/{conn['id']}/sync", headers=admin).json()
    estate = lab.estate
    assert summary["vms"] == estate["vm_count_total"]
    assert summary["hosts"] == len(estate["hosts"])
    tagged = {vm["name"] for vm in estate["exchange_vms"] if vm["custom_attribute"]}
    assert set(summary["servers_discovered"]) == tagged
    assert summary["problems"] == []

    for expected in estate["exchange_vms"]:
        page = client.get(
            "/api/v1/inventory/vms", params={"q": expected["name"]}, headers=admin
        ).json()
        vm = next(v for v in page["items"] if v["name"] == expected["name"])
        assert vm["moref"] == expected["moref"]
        assert vm["cbt_enabled"] == expected["cbt_enabled"]
        got = {d["device_key"]: d for d in vm["disks"]}
        assert set(got) == {d["key"] for d in expected["disks"]}
        for d in expected["disks"]:
            assert got[d["key"]]["backing"] == d["backing"], (expected["name"], d["key"])
            assert got[d["key"]]["capacity_bytes"] == d["capacity_bytes"]
            if d["backing"].startswith("rdm"):
                assert got[d["key"]]["lun_uuid"] == d["lun_uuid"]
                assert got[d["key"]]["device_name"].endswith(d["canonical_name"])

    servers = {
        s["name"]: s for s in client.get("/api/v1/servers?limit=100", headers=admin).json()["items"]
    }
    for expected in estate["exchange_vms"]:
        if not expected["custom_attribute"]:
            assert expected["name"] not in servers
            continue
        got = {d["name"]: d for d in servers[expected["name"]]["databases"]}
        for db in expected["databases"]:
            assert got[db["name"]]["layout"] == LAYOUT[db["layout"]]
            assert got[db["name"]]["database_disk_key"] == db["disk"]
            assert got[db["name"]]["log_disk_key"] == db["logs"]

    rdm_vms = client.get("/api/v1/inventory/vms?backing=rdm-physical", headers=admin).json()
    assert rdm_vms["total"] == sum(
        any(d["backing"] == "rdm-physical" for d in vm["disks"]) for vm in estate["exchange_vms"]
    )
    non_exchange = client.get("/api/v1/inventory/vms?exchange=false&limit=1", headers=admin)
    assert non_exchange.json()["total"] == estate["vm_count_total"] - len(tagged)


def test_resync_keeps_servers_and_hand_mapping(client, admin, lab):
    conn = _add_vcenter(client, admin, lab)
    client.post(f"/api/v1/connections/{conn['id']}/sync", headers=admin)
    before = client.get("/api/v1/servers?limit=100", headers=admin).json()["items"]

    # The server without the attribute is mapped by hand; the layout follows from the disk.
    untagged = next(vm for vm in lab.estate["exchange_vms"] if not vm["custom_attribute"])
    db = untagged["databases"][0]
    r = client.post(
        "/api/v1/servers",
        headers=admin,
        json={
            "name": untagged["name"],
            "connection_id": conn["id"],
            "vm_moref": untagged["moref"],
            "databases": [
                {"name": db["name"], "database_disk_key": db["disk"], "log_disk_key": db["logs"]}
            ],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["databases"][0]["layout"] == LAYOUT[db["layout"]]

    again = client.post(f"/api/v1/connections/{conn['id']}/sync", headers=admin).json()
    assert again["servers_discovered"] == []
    after = client.get("/api/v1/servers?limit=100", headers=admin).json()["items"]
    assert {s["id"] for s in before} < {s["id"] for s in after}
    assert len(after) == len(before) + 1
    vms = client.get("/api/v1/inventory/vms?limit=1", headers=admin).json()
    assert vms["total"] == lab.estate["vm_count_total"]  # replaced, not duplicated


def test_advisor_on_discovered_servers(client, admin, lab):
    conn = _add_vcenter(client, admin, lab)
    client.post(f"/api/v1/connections/{conn['id']}/sync", headers=admin)
    servers = client.get("/api/v1/servers?limit=100", headers=admin).json()["items"]
    seen_layouts = set()
    for server in servers:
        advice = client.get(f"/api/v1/servers/{server['id']}/advice", headers=admin).json()
        for db in advice["databases"]:
            seen_layouts.add(db["layout"])
            applies = {o["method"] for o in db["options"] if o["applies"]}
            expected = {
                # agent_stream too, once an agent is enrolled and online (none here)
                "vmdk": {"vmfs_snapshot", "mailbox"},
                "rdm_physical": {"array_snapshot"},
                "rdm_virtual": {"vmfs_snapshot"},
            }[db["layout"]]
            assert applies == expected, (server["name"], db["name"], applies)
    assert seen_layouts == {"vmdk", "rdm_physical", "rdm_virtual"}


def test_trusting_needs_the_fingerprint_the_server_presents(client, admin, lab):
    conn = _add_vcenter(client, admin, lab, trusted_thumbprint=None)
    url = f"/api/v1/connections/{conn['id']}"
    # PATCH can no longer trust a pasted fingerprint: it points at the checked way.
    r = client.patch(url, headers=admin, json={"trusted_thumbprint": lab.thumbprint})
    assert_problem(r, 422, "/trust")
    other = ":".join(["AB"] * 32)
    r = client.post(f"{url}/trust", headers=admin, json={"fingerprint": other})
    assert_problem(r, 409, lab.thumbprint)  # names what the server really presents
    assert client.get(url, headers=admin).json()["trusted_thumbprint"] is None
    r = client.post(f"{url}/trust", headers=admin, json={"fingerprint": "not-hex"})
    assert_problem(r, 422, "fingerprint")
    r = client.post(
        f"{url}/trust", headers=admin, json={"fingerprint": lab.thumbprint.replace(":", "")}
    )
    assert r.status_code == 200, r.text
    assert client.post(f"{url}/test", headers=admin).json()["ok"] is True
    audit = client.get(
        "/api/v1/audit-events?action=connection.trust_certificate", headers=admin
    ).json()
    assert [e["outcome"] for e in audit["items"]] == ["success", "failure"]
    # Clearing is still a PATCH; afterwards the certificate is verified again (and refused).
    r = client.patch(url, headers=admin, json={"trusted_thumbprint": None})
    assert r.status_code == 200 and r.json()["trusted_thumbprint"] is None
    assert client.post(f"{url}/test", headers=admin).json()["ok"] is False
