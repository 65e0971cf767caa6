"""The dashboard in a real browser: sign in, create, validate, delete, live updates."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from app.db.models import Job
from app.db.session import Database
from app.db.types import utcnow
from app.domain.jobs import JobKind, JobState
from tests.e2e.conftest import ADMIN_PASSWORD, sign_in

pytestmark = pytest.mark.e2e


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def shot(page: Page, screenshots, name: str, full_page: bool = True) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=full_page)


def test_sign_in_lands_on_the_overview(page: Page, server, estate, screenshots):
    page.goto("/connections")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fconnections$"))
    shot(page, screenshots, "01-login", full_page=False)

    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(server.url + "/connections")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    expect(page.locator("#recent-jobs")).to_contain_text("EXCH-MBX01")
    expect(page.get_by_role("region", name="Proxies")).to_contain_text("proxy-01")
    shot(page, screenshots, "02-overview")

    page.get_by_label("User menu for admin").click()
    expect(page.get_by_text("Administrator")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("status")).to_contain_text("signed out")


def test_wrong_password_shows_an_error(page: Page, server, screenshots):
    page.goto("/login")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    expect(page.get_by_label("Password")).to_have_value("")
    expect(page.get_by_label("User name")).to_have_value("admin")
    shot(page, screenshots, "03-login-wrong-password", full_page=False)


def test_create_a_vcenter_connection(admin_page: Page, screenshots):
    page = admin_page
    name = unique("vc-lab")
    page.goto("/connections")
    page.get_by_role("link", name="Add connection").click()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Kind", exact=True).select_option("vcenter")
    page.get_by_label("Host").fill("vcsa.lab.example")
    page.get_by_label("Port").fill("443")
    page.get_by_label(re.compile(r"^User name")).fill("administrator@vsphere.local")
    page.get_by_label(re.compile(r"^Password")).fill("Vc-Secret-Pass-1!")
    shot(page, screenshots, "04-connection-form")
    page.get_by_role("button", name="Add connection").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    expect(page.get_by_role("status").first).to_contain_text("added")
    expect(page.locator("main")).to_contain_text("stored, encrypted")
    assert "Vc-Secret-Pass-1!" not in page.content()
    shot(page, screenshots, "05-connection-detail")

    page.get_by_role("link", name="Edit").click()
    expect(page.get_by_label(re.compile(r"^Password"))).to_have_value("")
    expect(page.get_by_text("Stored — leave blank to keep it.")).to_be_visible()
    page.get_by_label("Host").fill("vcsa2.lab.example")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("main")).to_contain_text("vcsa2.lab.example:443")
    expect(page.locator("main")).to_contain_text("stored, encrypted")

    page.goto("/connections?kind=vcenter")
    expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    shot(page, screenshots, "06-connections-list")


def test_create_a_policy(admin_page: Page, estate, screenshots):
    page = admin_page
    name = unique("Nightly image")
    page.goto("/policies/new")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Protection method").select_option("vm_image")
    page.get_by_label("Consistency").select_option("crash")
    # The RPO field appears only when the RPO schedule is chosen.
    expect(page.get_by_label("RPO (minutes)")).to_be_hidden()
    page.get_by_label("Meet a recovery point objective").check()
    expect(page.get_by_label("Cron expression")).to_be_hidden()
    page.get_by_label("RPO (minutes)").fill("240")
    page.get_by_label("Repository").select_option(label="repo-san")
    page.get_by_label("Snapshots kept on primary").fill("0")  # an image keeps none
    page.get_by_label("Daily").fill("14")
    page.get_by_label("Legal retention (days)").fill("2555")
    page.get_by_label("EXCH-MBX01 (whole server)").check()
    shot(page, screenshots, "07-policy-form")
    page.get_by_role("button", name="Create policy").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    main = page.locator("main")
    expect(main).to_contain_text("RPO 240 min")
    expect(main).to_contain_text("repo-san")
    expect(main).to_contain_text("2555 days")
    expect(main).to_contain_text("EXCH-MBX01")
    shot(page, screenshots, "08-policy-detail")

    page.get_by_role("button", name="Back up now").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Backup job #")
    expect(page.get_by_role("status").first).to_contain_text(f"Backup of '{name}' queued.")
    expect(page.locator("main")).to_contain_text(name)


def test_invalid_forms_show_messages_next_to_fields(admin_page: Page, screenshots):
    page = admin_page
    page.goto("/policies/new")
    page.get_by_label("Name", exact=True).fill(unique("bad"))
    page.get_by_label("Cron expression").fill("every night")
    page.get_by_label("Keep last").fill("-1")
    page.get_by_role("button", name="Create policy").click()

    cron_error = page.locator("#err-schedule_cron")
    expect(cron_error).to_contain_text("not a valid cron expression")
    expect(page.get_by_label("Cron expression")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Cron expression")).to_have_value("every night")
    expect(page.locator("#err-keep_last")).to_contain_text("greater than or equal to 0")
    shot(page, screenshots, "09-policy-invalid")

    page.goto("/connections/new")
    page.get_by_label("Name", exact=True).fill("bad name!")
    page.get_by_label("Port").fill("99999")
    page.get_by_label(re.compile(r"^Password")).fill("never-echoed-secret")
    page.get_by_role("button", name="Add connection").click()
    expect(page.locator("#err-name")).to_contain_text("letters, digits")
    expect(page.locator("#err-port")).to_contain_text("less than or equal to 65535")
    expect(page.get_by_label(re.compile(r"^Password"))).to_have_value("")
    assert "never-echoed-secret" not in page.content()
    shot(page, screenshots, "10-connection-invalid")


def test_delete_asks_for_confirmation(admin_page: Page, screenshots):
    page = admin_page
    name = unique("old-mail")
    page.goto("/connections/new?kind=mail")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Host").fill("imap.corp.example")
    page.get_by_role("button", name="Add connection").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)

    page.get_by_role("link", name="Delete").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Delete connection “{name}”?")
    expect(page.locator("main")).to_contain_text("This cannot be undone.")
    shot(page, screenshots, "11-delete-confirm")
    page.get_by_role("button", name="Delete connection").click()

    expect(page).to_have_url(re.compile(r"/connections$"))
    expect(page.get_by_role("status").first).to_contain_text(f"'{name}' deleted")
    expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)


def test_a_repository_in_use_cannot_be_deleted(admin_page: Page, estate):
    page = admin_page
    name = unique("keep")
    page.goto("/policies/new")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Protection method").select_option("vm_image")
    page.get_by_label("Repository").select_option(label="repo-san")
    page.get_by_role("button", name="Create policy").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)

    page.goto(f"/connections/{estate['repository']}/delete")
    page.get_by_role("button", name="Delete connection").click()
    expect(page.get_by_role("alert")).to_contain_text("is the repository of policies")
    page.goto("/connections")
    expect(page.get_by_role("link", name="repo-san", exact=True)).to_be_visible()


def test_overview_jobs_refresh_without_reload(admin_page: Page, server, estate):
    page = admin_page
    page.goto("/")
    page.evaluate("window.__marker = 'same page'")
    db = Database(server.database_url)
    try:
        with db.session() as s:
            job = Job(
                kind=JobKind.RESTORE,
                state=JobState.RUNNING,
                server_id=estate["mbx2"],
                progress_percent=10,
                current_step="mount",
                created_at=utcnow(),
            )
            s.add(job)
            s.flush()
            job_id = job.id
    finally:
        db.dispose()
    row = page.locator("#recent-jobs tr", has_text=f"#{job_id}")
    expect(row).to_contain_text("Running", timeout=12_000)
    assert page.evaluate("window.__marker") == "same page"


def test_policy_toggle_swaps_the_row(admin_page: Page, estate):
    page = admin_page
    name = unique("toggle")
    page.goto("/policies/new")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Protection method").select_option("array_snapshot")
    page.get_by_label("Consistency").select_option("hot_application")
    page.get_by_role("button", name="Create policy").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)

    page.goto("/policies")
    page.evaluate("window.__marker = 'same page'")
    row = page.locator("tr", has_text=name)
    expect(row).to_contain_text("Enabled")
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    row.get_by_role("button", name=f"Disable {name}").click()
    expect(row).to_contain_text("Enabled")  # disabling asks first; dismissed, nothing changes
    assert asked and f"Disable policy {name}?" in asked[0]
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Disable {name}").click()
    expect(row).to_contain_text("Disabled")
    expect(row.get_by_role("button", name=f"Enable {name}")).to_be_visible()
    assert page.evaluate("window.__marker") == "same page"


def test_auditor_sees_no_change_buttons(page: Page, server, estate, screenshots):
    from app.accounts import create_user
    from app.audit import Actor
    from app.security.roles import Role

    db = Database(server.database_url)
    try:
        with db.session() as s:
            create_user(
                s, Actor("e2e", "system"), "auditor-e2e", "auditor-password-123", Role.AUDITOR
            )
    finally:
        db.dispose()
    sign_in(page, "auditor-e2e", "auditor-password-123")
    page.goto("/connections")
    expect(page.get_by_role("link", name="vc-prod", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Add connection")).to_have_count(0)
    expect(page.get_by_role("link", name="Audit log")).to_be_visible()
    page.goto("/connections/new")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    page.goto("/audit")
    expect(page.locator("main")).to_contain_text("auth.sign_in")
    shot(page, screenshots, "12-audit-log")


def test_pages_on_a_narrow_screen(browser, server, estate, screenshots):
    context = browser.new_context(base_url=server.url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        sign_in(page)
        page.goto("/")
        shot(page, screenshots, "13-mobile-overview")
        page.goto("/connections")
        # Rows stack into cards: the column name is shown beside each value.
        status = page.locator("td[data-label='Status']").first
        expect(status).to_be_visible()
        label = status.evaluate("e => getComputedStyle(e, '::before').content")
        assert label == '"Status"'
        shot(page, screenshots, "14-mobile-connections")
    finally:
        context.close()


def test_other_pages_render(admin_page: Page, estate, screenshots):
    page = admin_page
    for path, heading, name in (
        ("/servers", "Exchange servers", "15-servers"),
        ("/jobs", "Jobs", "16-jobs"),
        (f"/jobs/{estate['running_job']}", "Backup job", "17-job"),
        (f"/servers/{estate['mbx1']}", "EXCH-MBX01", "20-server"),
        ("/restore-points", "Restore points", "18-restore-points"),
    ):
        page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
        shot(page, screenshots, name)
    page.goto("/no-such-page")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    shot(page, screenshots, "19-not-found", full_page=False)


def test_dark_colour_scheme(browser, server, estate, screenshots):
    context = browser.new_context(
        base_url=server.url, viewport={"width": 1360, "height": 900}, color_scheme="dark"
    )
    page = context.new_page()
    try:
        sign_in(page)
        page.goto("/")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(13, 19, 32)"
        shot(page, screenshots, "21-overview-dark")
        page.goto(f"/servers/{estate['mbx1']}")
        expect(page.get_by_role("heading", level=1)).to_have_text("EXCH-MBX01")
        shot(page, screenshots, "22-server-dark")
    finally:
        context.close()
