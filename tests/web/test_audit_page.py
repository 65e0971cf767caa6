"""The audit log page names what each event is about and exports what it shows as CSV."""

from __future__ import annotations

import csv
import io

from app.security.roles import Role
from tests.web.conftest import form_token


def _make_connection(admin_client, name: str) -> None:
    token = form_token(admin_client, "/connections/new")
    r = admin_client.post(
        "/connections/new",
        data={"csrf_token": token, "name": name, "kind": "repository", "path": "/srv/repo-a"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def test_audit_log_shows_names_beside_ids_and_exports_the_filtered_log(admin_client, client_as):
    _make_connection(admin_client, "disk-library-east")
    page = admin_client.get("/audit?action=connection.").text
    assert "<strong>disk-library-east</strong>" in page
    assert 'href="/audit/export.csv?action=connection."' in page

    r = admin_client.get("/audit/export.csv?action=connection.")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "bulwark-audit-" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["action"] for row in rows] == ["connection.create"]
    assert rows[0]["object_name"] == "disk-library-east" and rows[0]["actor"] == "admin"
    everything = list(csv.DictReader(io.StringIO(admin_client.get("/audit/export.csv").text)))
    assert {"auth.sign_in", "connection.create"} <= {row["action"] for row in everything}

    # Who may read the log may export it; who may not, may not.
    assert client_as(Role.AUDITOR).get("/audit/export.csv").status_code == 200
    assert client_as(Role.OPERATOR).get("/audit/export.csv").status_code == 403
    exports = list(
        csv.DictReader(io.StringIO(admin_client.get("/audit/export.csv?action=audit.").text))
    )
    assert len(exports) == 4  # each export is itself audited
