"""Read-only pages, error pages, navigation by role, and the overview's query count."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, select

from app.db.models import (
    Connection,
    ExchangeDatabase,
    ExchangeServer,
    Job,
    JobEvent,
    Policy,
    Proxy,
    RestorePoint,
)
from app.db.types import utcnow
from app.domain.connections import ConnectionKind, ConnectionStatus
from app.domain.jobs import JobKind, JobState
from app.domain.protection import (
    Consistency,
    DatabaseLayout,
    ProtectionMethod,
    Verification,
)
from app.security.roles import Role
from tests.web.conftest import form_token


def add_estate(app, jobs: int = 3) -> dict[str, int]:
    now = utcnow()
    with app.state.runtime.db.session() as session:
        vc = Connection(name="vc-prod", kind=ConnectionKind.VCENTER, status=ConnectionStatus.OK)
        session.add(vc)
        session.flush()
        server = ExchangeServer(name="EXCH-MBX01", connection_id=vc.id, vm_moref="vm-1")
        server.databases = [ExchangeDatabase(name="DB01", layout=DatabaseLayout.RDM_VIRTUAL)]
        policy = Policy(
            name="nightly",
            method=ProtectionMethod.VMFS_SNAPSHOT,
            consistency=Consistency.WARM,
            schedule_cron="0 2 * * *",
        )
        session.add_all([server, policy])
        session.add(Proxy(name="proxy-01", hostname="p1", capabilities=["vsphere"]))
        session.flush()
        made = []
        for i in range(jobs):
            job = Job(
                kind=JobKind.BACKUP,
                state=JobState.RUNNING if i == 0 else JobState.SUCCEEDED,
                policy_id=policy.id,
                server_id=server.id,
                progress_percent=37.0,
                current_step="copy",
                created_at=now - timedelta(minutes=i),
            )
            session.add(job)
            made.append(job)
        session.flush()
        session.add(JobEvent(job_id=made[0].id, step="snapshot", message="snapshot taken"))
        session.add(
            RestorePoint(
                policy_id=policy.id,
                server_id=server.id,
                database_id=server.databases[0].id,
                method=ProtectionMethod.VMFS_SNAPSHOT,
                consistency=Consistency.WARM,
                capabilities=["whole_database"],
                size_bytes=5 << 30,
                verification=Verification.VERIFIED,
                captured_at=now - timedelta(hours=1),
            )
        )
        return {"job": made[0].id, "finished_job": made[-1].id, "policy": policy.id}


def test_overview_shows_counts_jobs_and_proxies(app, admin_client):
    add_estate(app)
    page = admin_client.get("/")
    assert page.status_code == 200
    html = page.text
    for text in ("EXCH-MBX01", "nightly", "proxy-01", "Virtual-mode RDM", "Running", "37 %"):
        assert text in html, text
    assert 'hx-get="/partials/recent-jobs"' in html and 'hx-trigger="every 5s"' in html
    partial = admin_client.get("/partials/recent-jobs", headers={"HX-Request": "true"})
    assert partial.status_code == 200 and "<html" not in partial.text
    assert "EXCH-MBX01" in partial.text


def count_queries(app, client, path: str) -> int:
    statements: list[str] = []
    engine = app.state.runtime.db.engine

    def _count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", _count)
    try:
        assert client.get(path).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", _count)
    return len(statements)


@pytest.mark.parametrize("path", ["/", "/jobs", "/policies", "/restore-points", "/servers"])
def test_pages_do_not_query_per_row(app, admin_client, path):
    add_estate(app, jobs=2)
    few = count_queries(app, admin_client, path)
    add_estate_more(app, 20)
    many = count_queries(app, admin_client, path)
    assert many == few, (path, few, many)
    assert few <= 15, (path, few)  # the overview's 15th: repositories locking copies


def add_estate_more(app, n: int) -> None:
    with app.state.runtime.db.session() as session:
        policy = session.query(Policy).first()
        server = session.query(ExchangeServer).first()
        for i in range(n):
            extra = Policy(
                name=f"extra-{i}",
                method=ProtectionMethod.VMFS_SNAPSHOT,
                consistency=Consistency.WARM,
                rpo_minutes=60,
            )
            other = ExchangeServer(name=f"EXCH-X{i:02d}")
            other.databases = [ExchangeDatabase(name="DB", layout=DatabaseLayout.VMDK)]
            session.add_all([extra, other])
            session.add(Job(kind=JobKind.VERIFY, policy_id=policy.id, server_id=server.id))
            session.add(
                RestorePoint(
                    policy_id=policy.id,
                    server_id=server.id,
                    method=ProtectionMethod.VMFS_SNAPSHOT,
                    consistency=Consistency.WARM,
                )
            )


def test_read_only_pages_show_the_database(app, admin_client):
    ids = add_estate(app)
    servers = admin_client.get("/servers").text
    assert "EXCH-MBX01" in servers and "vc-prod" in servers and "DB01" in servers
    jobs = admin_client.get("/jobs?state=running").text
    assert f"#{ids['job']}" in jobs and f"#{ids['finished_job']}<" not in jobs
    assert 'hx-trigger="every 5s"' in jobs
    assert "No jobs match" in admin_client.get("/jobs?kind=restore").text
    points = admin_client.get("/restore-points?verification=verified").text
    assert "5.0 GiB" in points and "Verified" in points and "Whole database" in points
    assert (
        "No restore points match" in admin_client.get("/restore-points?verification=damaged").text
    )
    job = admin_client.get(f"/jobs/{ids['job']}").text
    assert "snapshot taken" in job and "every 3s" in job


def test_job_polling_stops_when_the_job_is_finished(app, admin_client):
    ids = add_estate(app)
    running = admin_client.get(f"/jobs/{ids['job']}", headers={"HX-Request": "true"})
    assert running.status_code == 200 and "<html" not in running.text
    finished = admin_client.get(f"/jobs/{ids['finished_job']}", headers={"HX-Request": "true"})
    assert finished.status_code == 286  # htmx stops polling on 286


def test_lists_are_paginated(app, admin_client):
    add_estate(app, jobs=30)
    first = admin_client.get("/jobs").text
    assert "1–25 of 30 jobs" in first and "Page 1 of 2" in first
    second = admin_client.get("/jobs?page=2").text
    assert "26–30 of 30 jobs" in second


def test_audit_log_is_for_roles_that_may_read_it(admin_client, client_as):
    page = admin_client.get("/audit?action=auth.")
    assert page.status_code == 200 and "auth.sign_in" in page.text
    assert 'href="/audit"' in admin_client.get("/").text

    auditor = client_as(Role.AUDITOR)
    assert 'href="/audit"' in auditor.get("/").text
    assert auditor.get("/audit").status_code == 200

    operator = client_as(Role.OPERATOR)
    assert 'href="/audit"' not in operator.get("/").text
    response = operator.get("/audit")
    assert response.status_code == 403 and "Not allowed" in response.text


def test_user_menu_shows_the_role(client_as):
    page = client_as(Role.RESTORE_OPERATOR).get("/").text
    assert "user-restore-operator" in page and "Restore operator" in page


def test_unknown_pages_are_html_404s_but_the_api_keeps_problem_json(admin_client):
    for path in ("/no-such-page", "/connections/999", "/policies/999/edit", "/jobs/abc"):
        response = admin_client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html"), path
        assert "Not found" in response.text
    api = admin_client.get("/api/v1/no-such-thing")
    assert api.status_code == 404
    assert api.headers["content-type"].startswith("application/problem+json")
    assert admin_client.get("/static/css/bulwark.css").status_code == 200
    assert admin_client.get("/static/nope.css").status_code == 404


def test_anonymous_404_has_no_navigation(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert "Sign in" in response.text and "Sign out" not in response.text


def test_pages_carry_security_headers_and_local_assets(admin_client):
    response = admin_client.get("/")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert "http://" not in response.text and "https://" not in response.text
    assert '<script src="/static/vendor/htmx.min.js' in response.text
    assert "X-CSRF-Token" in response.text  # hx-headers on <body>
    htmx = admin_client.get("/static/vendor/htmx.min.js")
    assert htmx.status_code == 200 and "htmx" in htmx.text[:200]


def test_server_page_shows_the_advisor(app, admin_client):
    with app.state.runtime.db.session() as session:
        server = ExchangeServer(name="EXCH-MBX09")
        server.databases = [ExchangeDatabase(name="DB-P", layout=DatabaseLayout.RDM_PHYSICAL)]
        session.add(server)
        session.flush()
        sid = server.id
    assert f'href="/servers/{sid}"' in admin_client.get("/servers").text
    page = admin_client.get(f"/servers/{sid}")
    assert page.status_code == 200
    html = page.text
    assert "DB-P" in html and "Physical-mode RDM" in html
    assert "Array snapshot" in html and "Fits" in html and "Not possible" in html
    assert "VMFS cannot snapshot it" in html  # the declaration's own reason
    assert "it is not protected" in html
    assert admin_client.get("/servers/999").status_code == 404


def test_back_up_now_and_cancel(app, admin_client, client_as):
    ids = add_estate(app, jobs=1)
    page = admin_client.get(f"/policies/{ids['policy']}")
    assert "Back up now" in page.text
    token = form_token(admin_client, f"/policies/{ids['policy']}")
    response = admin_client.post(
        f"/policies/{ids['policy']}/run", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    job_id = int(response.headers["location"].rsplit("/", 1)[1])
    with app.state.runtime.db.session() as session:
        job = session.get(Job, job_id)
        assert (job.kind, job.state, job.policy_id) == (
            JobKind.BACKUP,
            JobState.QUEUED,
            ids["policy"],
        )
        assert job.created_by == "admin"

    job_page = admin_client.get(f"/jobs/{job_id}")
    assert "queued" in job_page.text and "Cancel job" in job_page.text
    response = admin_client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert response.status_code == 200 and "Job cancelled." in response.text
    with app.state.runtime.db.session() as session:
        assert session.get(Job, job_id).state == JobState.CANCELLED
    again = admin_client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert again.status_code == 409 and "already cancelled" in again.text

    auditor = client_as(Role.AUDITOR)
    assert "Back up now" not in auditor.get(f"/policies/{ids['policy']}").text
    token = form_token(auditor, "/")
    assert (
        auditor.post(f"/policies/{ids['policy']}/run", data={"csrf_token": token}).status_code
        == 403
    )
    with app.state.runtime.db.session() as session:
        assert len(session.scalars(select(Job.id).where(Job.kind == JobKind.BACKUP)).all()) == 2
