"""The dashboard speaks the operator's words: reasons without exception class names, VMware
enums in words, a job's first attempt counted from one, raw JSON behind a toggle."""

from __future__ import annotations

from app.db.models import Job
from app.domain.jobs import JobKind, JobState
from app.web.labels import plain_error, tools


def test_error_banners_carry_the_reason_not_the_exception_class():
    assert plain_error("CertificateUntrusted: the certificate of vc-1 changed") == (
        "the certificate of vc-1 changed"
    )
    assert plain_error("PermanentError: ObjectNotFound: snapshot-153 is gone") == (
        "snapshot-153 is gone"
    )
    assert plain_error("connection refused: port 8443") == "connection refused: port 8443"
    assert plain_error("ValueError") == "ValueError"  # nothing else to say: kept
    assert plain_error("DB01: log disk full") == "DB01: log disk full"  # not a class name
    assert tools("toolsOk") == "Running" and tools("toolsNotRunning") == "Not running"
    assert tools(None) == "—"


def test_a_failed_job_page_shows_the_reason_and_tucks_raw_json_away(app, admin_client):
    with app.state.runtime.db.session() as s:
        failed = Job(
            kind=JobKind.VERIFY,
            state=JobState.FAILED,
            attempts=3,
            max_attempts=3,
            params={"sample": 1, "gc_window": "x"},
            error="PermanentError: CertificateUntrusted: the certificate of vc-1 changed",
            created_by="test",
        )
        queued = Job(kind=JobKind.VERIFY, max_attempts=3, created_by="test")
        s.add_all([failed, queued])
        s.flush()
        failed_id, queued_id = failed.id, queued.id
    page = admin_client.get(f"/jobs/{failed_id}").text
    assert "<strong>Error:</strong> the certificate of vc-1 changed" in page
    assert "PermanentError" not in page and "CertificateUntrusted" not in page
    assert '<details class="raw"><summary>2 parameters</summary>' in page
    assert "3 of 3" in page
    page = admin_client.get(f"/jobs/{queued_id}").text
    assert "not started yet · up to 3" in page and "0 of 3" not in page
    assert f'data-confirm="Cancel verify job #{queued_id}?' in page  # cancelling asks first


def test_the_queued_notice_goes_when_the_job_ends(app, admin_client):
    with app.state.runtime.db.session() as s:
        job = Job(kind=JobKind.VERIFY, max_attempts=3, created_by="test")
        s.add(job)
        s.flush()
        job_id = job.id
    htmx = {"HX-Request": "true"}
    live = admin_client.get(f"/jobs/{job_id}", headers=htmx)
    assert live.status_code == 200 and 'id="flashes"' not in live.text
    with app.state.runtime.db.session() as s:
        s.get(Job, job_id).state = JobState.SUCCEEDED
    done = admin_client.get(f"/jobs/{job_id}", headers=htmx)
    assert done.status_code == 286
    assert '<div id="flashes" hx-swap-oob="true"></div>' in done.text
