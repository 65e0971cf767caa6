"""Connections through the dashboard: the API's validation, roles, CSRF, write-only secrets."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app.db.models import AuditEvent, Connection, Policy
from app.domain.protection import Consistency, ProtectionMethod
from app.security.roles import Role
from tests.web.conftest import form_token

SECRET = "Vc-Secret-Pass-1!"


def vcenter_form(token: str, **changes) -> dict[str, str]:
    return {
        "csrf_token": token,
        "name": "vc-lab",
        "kind": "vcenter",
        "host": "vcsa.lab.example",
        "port": "443",
        "username": "administrator@vsphere.local",
        "password": SECRET,
        "verify_tls": "on",
        "trusted_thumbprint": "",
        "options": "",
        "description": "",
        **changes,
    }


def create(client, **changes) -> int:
    token = form_token(client, "/connections/new")
    response = client.post(
        "/connections/new", data=vcenter_form(token, **changes), follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


def field_error(html: str, field: str) -> str:
    match = re.search(rf'id="err-{field}">([^<]*)<', html)
    return match.group(1) if match else ""


def test_create_through_the_form(app, admin_client):
    cid = create(admin_client, options='datacenter = DC1\ninsecure_port = 8080\ntags = ["a"]')
    page = admin_client.get(f"/connections/{cid}")
    assert page.status_code == 200
    assert "vc-lab" in page.text and "Untested" in page.text
    assert "added" in page.text  # the one-time notice
    with app.state.runtime.db.session() as session:
        conn = session.get(Connection, cid)
        assert conn.options == {"datacenter": "DC1", "insecure_port": 8080, "tags": ["a"]}
        assert conn.has_secret and SECRET.encode() not in conn.secret_ciphertext
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "connection.create"))
    assert event.actor == "admin" and event.actor_kind == "user" and event.detail["secret_set"]


def test_invalid_input_is_shown_next_to_the_fields(app, admin_client):
    token = form_token(admin_client, "/connections/new")
    response = admin_client.post(
        "/connections/new",
        data=vcenter_form(token, name="bad name!", port="99999", options="no equals sign"),
    )
    assert response.status_code == 422
    assert "letters, digits" in field_error(response.text, "name")
    assert "65535" in field_error(response.text, "port")
    assert "Line 1" in field_error(response.text, "options")
    assert 'value="bad name!"' in response.text  # what was typed is kept …
    assert SECRET not in response.text  # … except the password
    with app.state.runtime.db.session() as session:
        assert session.scalar(select(Connection.id)) is None


def test_secret_looking_options_are_refused_by_the_api_rule(admin_client):
    token = form_token(admin_client, "/connections/new")
    response = admin_client.post(
        "/connections/new", data=vcenter_form(token, options="api_token = abc")
    )
    assert response.status_code == 422
    assert "looks secret" in field_error(response.text, "options")


def test_duplicate_name_is_a_conflict(admin_client):
    create(admin_client)
    token = form_token(admin_client, "/connections/new")
    response = admin_client.post("/connections/new", data=vcenter_form(token))
    assert response.status_code == 409
    assert "already exists" in response.text
    assert SECRET not in response.text


def test_post_without_csrf_token_is_refused(app, admin_client):
    form_token(admin_client, "/connections/new")
    data = vcenter_form("")
    del data["csrf_token"]
    response = admin_client.post("/connections/new", data=data)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "reload the page" in response.text
    response = admin_client.post("/connections/new", data=vcenter_form("wrong-token"))
    assert response.status_code == 403
    with app.state.runtime.db.session() as session:
        assert session.scalar(select(Connection.id)) is None


def test_csrf_token_may_come_as_the_htmx_header(admin_client):
    token = form_token(admin_client, "/connections/new")
    data = vcenter_form("")
    del data["csrf_token"]
    response = admin_client.post(
        "/connections/new", data=data, headers={"X-CSRF-Token": token}, follow_redirects=False
    )
    assert response.status_code == 303


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.OPERATOR, Role.RESTORE_OPERATOR])
def test_only_admins_manage_connections(app, admin_client, client_as, role):
    cid = create(admin_client)
    other = client_as(role)
    listing = other.get("/connections")
    assert listing.status_code == 200 and "vc-lab" in listing.text
    assert "Add connection" not in listing.text
    assert f"/connections/{cid}/edit" not in listing.text
    assert f"/connections/{cid}/delete" not in listing.text
    assert "Edit" not in other.get(f"/connections/{cid}").text

    for path in ("/connections/new", f"/connections/{cid}/edit", f"/connections/{cid}/delete"):
        response = other.get(path)
        assert response.status_code == 403, path
        assert "does not allow this" in response.text

    token = form_token(other, "/connections")
    response = other.post("/connections/new", data=vcenter_form(token, name="sneaky"))
    assert response.status_code == 403
    response = other.post(f"/connections/{cid}/delete", data={"csrf_token": token})
    assert response.status_code == 403
    with app.state.runtime.db.session() as session:
        assert session.scalars(select(Connection.name)).all() == ["vc-lab"]


def test_edit_keeps_the_password_when_left_blank(app, admin_client):
    cid = create(admin_client)
    page = admin_client.get(f"/connections/{cid}/edit")
    assert "Stored — leave blank to keep it." in page.text
    assert SECRET not in page.text
    token = form_token(admin_client, f"/connections/{cid}/edit")
    response = admin_client.post(
        f"/connections/{cid}/edit",
        data=vcenter_form(token, host="vcsa2.lab.example", password=""),
        follow_redirects=False,
    )
    assert response.status_code == 303
    with app.state.runtime.db.session() as session:
        conn = session.get(Connection, cid)
        assert conn.host == "vcsa2.lab.example"
        assert app.state.runtime.secrets.open(conn.secret_ciphertext, "connection") == SECRET
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "connection.update"))
    assert event.detail["fields"] == ["host"]  # only what changed


def test_edit_replaces_the_password_when_given(app, admin_client):
    cid = create(admin_client)
    token = form_token(admin_client, f"/connections/{cid}/edit")
    admin_client.post(
        f"/connections/{cid}/edit", data=vcenter_form(token, password="New-Secret-2?")
    )
    with app.state.runtime.db.session() as session:
        conn = session.get(Connection, cid)
        assert app.state.runtime.secrets.open(conn.secret_ciphertext, "connection") == (
            "New-Secret-2?"
        )
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "connection.update"))
    assert event.detail["fields"] == ["password"]


def test_an_unchanged_form_changes_nothing(app, admin_client):
    cid = create(admin_client)
    token = form_token(admin_client, f"/connections/{cid}/edit")
    response = admin_client.post(f"/connections/{cid}/edit", data=vcenter_form(token, password=""))
    assert "Nothing changed." in response.text
    with app.state.runtime.db.session() as session:
        assert (
            session.scalar(select(AuditEvent).where(AuditEvent.action == "connection.update"))
            is None
        )


def test_edit_errors_keep_the_entered_values(admin_client):
    cid = create(admin_client)
    create(admin_client, name="vc-other")
    token = form_token(admin_client, f"/connections/{cid}/edit")
    response = admin_client.post(
        f"/connections/{cid}/edit", data=vcenter_form(token, name="vc-other", host="typed.example")
    )
    assert response.status_code == 409
    assert "already exists" in response.text and 'value="typed.example"' in response.text
    assert SECRET not in response.text


def test_a_stored_password_never_appears_in_any_page(admin_client):
    cid = create(admin_client)
    pages = [
        "/",
        "/connections",
        "/connections?kind=vcenter",
        f"/connections/{cid}",
        f"/connections/{cid}/edit",
        f"/connections/{cid}/delete",
        "/audit",
        "/policies/new",
    ]
    for path in pages:
        response = admin_client.get(path)
        assert response.status_code == 200, path
        assert SECRET not in response.text, path


def test_delete_asks_then_deletes(app, admin_client):
    cid = create(admin_client)
    page = admin_client.get(f"/connections/{cid}/delete")
    assert "Delete connection “vc-lab”?" in page.text
    assert "This cannot be undone." in page.text
    token = form_token(admin_client, f"/connections/{cid}/delete")
    response = admin_client.post(
        f"/connections/{cid}/delete", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/connections"
    assert "deleted" in admin_client.get("/connections").text
    assert admin_client.get(f"/connections/{cid}").status_code == 404


def test_a_repository_in_use_is_not_deleted(app, admin_client):
    rid = create(admin_client, name="repo", kind="repository", host="", port="", password="")
    with app.state.runtime.db.session() as session:
        session.add(
            Policy(
                name="nightly",
                method=ProtectionMethod.VM_IMAGE,
                consistency=Consistency.CRASH,
                schedule_cron="0 2 * * *",
                repository_id=rid,
            )
        )
    token = form_token(admin_client, f"/connections/{rid}/delete")
    response = admin_client.post(f"/connections/{rid}/delete", data={"csrf_token": token})
    assert response.status_code == 409
    assert "is the repository of policies: nightly" in response.text
    with app.state.runtime.db.session() as session:
        assert session.get(Connection, rid) is not None


def test_list_filters_by_kind(admin_client):
    create(admin_client)
    create(admin_client, name="repo", kind="repository", host="", port="", password="")
    page = admin_client.get("/connections?kind=repository")
    assert ">repo<" in page.text and ">vc-lab<" not in page.text
    everything = admin_client.get("/connections?kind=bogus")  # unknown filter: no filter
    assert ">repo<" in everything.text and ">vc-lab<" in everything.text


def test_deleting_a_vcenter_lists_the_servers_and_policies_that_depend_on_it(app, admin_client):
    from app.db.models import Connection, ExchangeServer, Policy, PolicyTarget
    from app.domain.connections import ConnectionKind
    from app.domain.protection import Consistency, ProtectionMethod

    with app.state.runtime.db.session() as s:
        vc = Connection(name="vc-east", kind=ConnectionKind.VCENTER, host="vc.example", port=443)
        s.add(vc)
        s.flush()
        server = ExchangeServer(name="EXCH-EAST1", connection_id=vc.id)
        s.add(server)
        s.flush()
        policy = Policy(
            name="east-nightly",
            method=ProtectionMethod.VMFS_SNAPSHOT,
            consistency=Consistency.COLD,
            rpo_minutes=60,
        )
        policy.targets = [PolicyTarget(server_id=server.id)]
        s.add(policy)
        s.flush()
        vc_id, server_id, policy_id = vc.id, server.id, policy.id
    page = admin_client.get(f"/connections/{vc_id}/delete").text
    assert "These depend on it:" in page
    assert f'<a href="/servers/{server_id}">EXCH-EAST1</a>' in page
    assert f'<a href="/policies/{policy_id}">east-nightly</a>' in page
