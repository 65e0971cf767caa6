"""A job keeps its handler's result and names the job that queued it (``jobs.parent_id``)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete

from app.accounts import create_user
from app.audit import Actor
from app.db.models import Job
from app.domain.jobs import JobKind
from app.jobs.context import JobResult
from tests.jobs.conftest import add_job, load_job, make_worker
from tests.web.conftest import sign_in


def test_the_handlers_result_is_stored_on_success_only(db, registry):
    when = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    registry.register(
        JobKind.VERIFY,
        lambda ctx: JobResult(message="checked 3 blocks", details={"blocks": 3, "at": when}),
    )
    registry.register(JobKind.EXPIRE, lambda ctx: None)

    def broken(ctx):
        raise RuntimeError("disk gone")

    registry.register(JobKind.SYNC, broken)
    verify = add_job(db, JobKind.VERIFY)
    expire = add_job(db, JobKind.EXPIRE)
    sync = add_job(db, JobKind.SYNC, max_attempts=1)
    worker = make_worker(db, "w", registry)
    while worker.run_once() is not None:
        pass

    assert load_job(db, verify).result == {
        "partial": False,
        "message": "checked 3 blocks",
        "details": {"blocks": 3, "at": str(when)},  # kept as JSON: the date as text
    }
    assert load_job(db, expire).result == {"partial": False, "message": "", "details": {}}
    failed = load_job(db, sync)
    assert failed.state == "failed" and failed.result is None


def test_api_links_parent_and_children(client, admin, db):
    parent = add_job(db, JobKind.BACKUP)
    first = add_job(db, JobKind.BACKUP, parent_id=parent)
    second = add_job(db, JobKind.BACKUP, parent_id=parent)
    add_job(db, JobKind.BACKUP)  # unrelated

    body = client.get(f"/api/v1/jobs/{parent}", headers=admin).json()
    assert body["parent_id"] is None
    assert [c["id"] for c in body["children"]] == [first, second]
    assert body["children"][0]["kind"] == "backup" and body["children"][0]["state"] == "queued"

    child = client.get(f"/api/v1/jobs/{first}", headers=admin).json()
    assert child["parent_id"] == parent and child["children"] == []

    listed = client.get(f"/api/v1/jobs?parent_id={parent}", headers=admin).json()
    assert sorted(j["id"] for j in listed["items"]) == [first, second]


def test_job_page_lists_children_and_links_the_parent(app, client, db):
    with app.state.runtime.db.session() as session:
        create_user(session, Actor("test-setup", "system"), "ops", "long-password-123", "operator")
    assert sign_in(client, "ops", "long-password-123").status_code == 303
    parent = add_job(db, JobKind.BACKUP)
    child = add_job(db, JobKind.BACKUP, parent_id=parent)
    page = client.get(f"/jobs/{parent}")
    assert page.status_code == 200
    assert f'href="/jobs/{child}"' in page.text and "Jobs it started" in page.text
    page = client.get(f"/jobs/{child}")
    assert f'class="parent-job" href="/jobs/{parent}"' in page.text


def test_removing_a_parent_keeps_its_children(db):
    parent = add_job(db, JobKind.BACKUP)
    child = add_job(db, JobKind.BACKUP, parent_id=parent)
    with db.session() as session:
        session.execute(delete(Job).where(Job.id == parent))
    assert load_job(db, child).parent_id is None
