"""The operator's pages at 1280 px in Chromium: the state at a glance, users and tokens.

Screenshots of the overview, a server, a restore point and the repositories page are saved
in test-output/e2e/ (CI keeps them as artefacts)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from app.db.models import RestorePoint
from app.db.session import Database
from tests.e2e.conftest import browser_page, sign_in

pytestmark = pytest.mark.e2e
WIDTH = 1280


@pytest.fixture
def narrow_admin(browser, server):
    with browser_page(browser, server.url) as page:
        page.set_viewport_size({"width": WIDTH, "height": 800})
        sign_in(page)
        yield page


def fits(page: Page) -> None:
    """Nothing wider than the window: no sideways scrolling at 1280 px."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= WIDTH, f"{page.url} is {width} px wide"


def shot(page: Page, screenshots, name: str) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def test_the_state_of_protection_at_1280_px(narrow_admin: Page, server, estate, screenshots):
    page = narrow_admin
    page.goto("/")
    counts = page.locator(".protection-counts")
    expect(counts).to_contain_text("Protected")
    expect(counts).to_contain_text("Unprotected")
    fits(page)
    shot(page, screenshots, "1280-overview")

    page.goto("/servers")
    # The session's estate is shared with other browser tests, which add policies: the
    # state is whichever applies, but always one of the overview's words.
    row = page.locator("tr", has=page.get_by_role("link", name="EXCH-MBX01"))
    states = "Unprotected|No restore point yet|Within objective|Near the objective|breached"
    expect(row.locator(".protection")).to_contain_text(re.compile(states))
    expect(row.locator(".last-backup")).to_contain_text(re.compile("Running|Succeeded|Failed"))
    fits(page)

    page.goto(f"/servers/{estate['mbx2']}")
    expect(page.get_by_role("heading", name="EXCH-MBX02", level=1)).to_be_visible()
    fits(page)
    shot(page, screenshots, "1280-server")

    db = Database(server.database_url)
    with db.session() as s:
        point_id = s.query(RestorePoint.id).filter_by(server_id=estate["mbx2"]).first()[0]
    db.dispose()
    page.goto(f"/restore-points/{point_id}")
    expect(page.locator("h1")).to_contain_text("Restore point")
    fits(page)
    shot(page, screenshots, "1280-restore-point")

    page.goto("/repositories")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Repositories")
    fits(page)
    shot(page, screenshots, "1280-repositories")


def test_users_and_tokens_in_the_browser(narrow_admin: Page, screenshots):
    page = narrow_admin
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    page.get_by_role("link", name="Add a user").click()
    page.get_by_label("User name").fill("night-operator")
    page.get_by_label("Password").fill("night-operator-1")
    page.get_by_role("radio", name=re.compile("^Operator")).check()
    page.get_by_role("button", name="Add user").click()
    expect(page.get_by_role("status")).to_contain_text("User 'night-operator' created")
    shot(page, screenshots, "1280-user")

    page.get_by_label("User menu for admin").click()
    page.get_by_role("link", name="My account and API tokens").click()
    page.get_by_label("What it is for").fill("grafana")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("code.secret")
    expect(secret).to_contain_text("bwk_")
    token = secret.inner_text()
    fits(page)
    page.reload()
    expect(page.locator("code.secret")).to_have_count(0)  # shown once
    expect(page.locator("table.tokens")).to_contain_text("grafana")
    assert token not in page.content()

    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.locator("tr", has_text="grafana").get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status")).to_contain_text("revoked")
    expect(page.locator("tr", has_text="grafana")).to_contain_text("Revoked")
    assert asked == ["Revoke token grafana? Systems using it stop at once."]
