"""The array's dashboard page through Starlette's TestClient: who may read it, who may act,
CSRF on every action; against a real btrfs array."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.accounts import create_user
from app.adapters.arrays import derived_naa
from app.security.roles import Role
from tests.web.conftest import SETUP, USER_PASSWORD, csrf_from, sign_in

NAA = derived_naa("pages/db")


def add_array(client, admin, array) -> int:
    array.create_volume("G", NAA, 1024 * 1024)
    r = client.post(
        "/api/v1/connections",
        json={
            "name": "arr",
            "kind": "array",
            "options": {"driver": "btrfs", "path": str(array.root)},
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def signed_in_as(app, role: Role) -> TestClient:
    with app.state.runtime.db.session() as session:
        create_user(session, SETUP, f"page-{role}", USER_PASSWORD, role)
    other = TestClient(app)
    assert sign_in(other, f"page-{role}", USER_PASSWORD).status_code == 303
    return other


def test_operator_lists_volumes_with_csrf_and_auditor_only_reads(app, client, admin, array):
    cid = add_array(client, admin, array)
    operator = signed_in_as(app, Role.OPERATOR)
    page = operator.get(f"/arrays/{cid}")
    assert page.status_code == 200
    assert "No volumes listed yet" in page.text
    token = csrf_from(page.text)
    assert operator.post(f"/arrays/{cid}/sync", data={}).status_code == 403  # no CSRF token
    done = operator.post(f"/arrays/{cid}/sync", data={"csrf_token": token})
    assert done.status_code == 200 and "reported 1 volume(s)" in done.text
    assert NAA in done.text
    # Testing the array is for administrators.
    assert operator.post(f"/arrays/{cid}/test", data={"csrf_token": token}).status_code == 403

    auditor = signed_in_as(app, Role.AUDITOR)
    page = auditor.get(f"/arrays/{cid}")
    assert page.status_code == 200 and NAA in page.text
    assert "List volumes now" not in page.text
    assert (
        auditor.post(f"/arrays/{cid}/sync", data={"csrf_token": csrf_from(page.text)}).status_code
        == 403
    )


def test_an_unreachable_array_says_so_on_its_page(app, client, admin, array):
    cid = add_array(client, admin, array)
    r = client.patch(
        f"/api/v1/connections/{cid}",
        json={"options": {"driver": "btrfs", "path": str(array.root / "gone")}},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    other = signed_in_as(app, Role.ADMIN)
    page = other.get(f"/arrays/{cid}")
    assert page.status_code == 200
    assert "The array did not answer" in page.text and "does not exist" in page.text
    r = other.post(f"/arrays/{cid}/test", data={"csrf_token": csrf_from(page.text)})
    assert "Test failed" in r.text
    assert other.get("/arrays/99999").status_code == 404
