"""Approvals in a real browser (Debian's Chromium through Playwright) against a real `careops
serve`: an approver decides from their queue; another decides from the signed link sent to them,
which then refuses a second use and refuses a colleague; a requester cannot approve their own
request."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from careops.approvals.requests import LINK_PATH, request_in
from careops.approvals.store import activate_directory, shipped_directory
from careops.db import Database
from careops.demo.seed import seed_demo
from careops.domain.automation import QueuedMessage
from careops.governance.keys import load_field_keys
from careops.governance.users import create_user
from careops.migrate import upgrade
from careops.settings import Settings
from tests.approvals.test_requests import replenishment
from tests.e2e.test_console_browser import PASSWORD, _log_in, browser
from tests.e2e.test_crash_recovery import CAREOPS, free_port, wait_for_health

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
__all__ = ["browser"]  # the fixture, used by the tests below


@pytest.fixture
def approvals(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A served database with the shipped policies, three buyers, and two requests: one by pat
    (a buyer too), one by the workflows; with the decision link sent to bo for the second."""
    url = f"sqlite:///{tmp_path / 'approvals.db'}"
    settings = Settings(database_url=url)
    upgrade(url)
    db = Database(url)
    load_field_keys(db, settings)
    seed_demo(db)
    activate_directory(db, shipped_directory(), actor="test", reason="browser test")
    ids = {
        name: create_user(db, settings, name, PASSWORD, ["procurement"], actor="test").id
        for name in ("pat", "bea", "bo")
    }
    with db.transaction() as session:
        mine = request_in(
            session, "replenishment", replenishment(db, 32), "replenishment", actor=ids["pat"]
        ).id
    with db.transaction() as session:
        other = request_in(
            session, "replenishment", replenishment(db, 40), "replenishment", actor="automation:x"
        ).id
    with db.sessions() as session:
        body = session.scalars(
            select(QueuedMessage.body)
            .where(QueuedMessage.recipient == "user:bo")
            .order_by(QueuedMessage.created_at)
        ).all()[-1]
    db.dispose()
    port = free_port()
    process = subprocess.Popen(
        [CAREOPS, "serve", "--port", str(port)],
        env={**os.environ, "CAREOPS_DATABASE_URL": url},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_health(base)
    link = LINK_PATH + body.split(LINK_PATH, 1)[1].split()[0]
    yield base, {"mine": mine, "other": other, "link": link}
    process.terminate()
    process.wait(30)


def _decide(page: Page, decision: str) -> None:
    page.get_by_label(decision).check()
    page.get_by_role("button", name="Confirm the decision").click()


def test_decide_from_the_queue_and_from_a_link_but_never_ones_own(
    approvals: tuple[str, dict[str, str]], browser: Browser
) -> None:
    base, made = approvals
    pat = browser.new_page()
    _log_in(pat, base, "pat")
    pat.goto(f"{base}/console/approvals/{made['mine']}")
    _decide(pat, "Approve")
    expect(pat.get_by_text("nobody decides on an approval they requested")).to_be_visible()

    bea = browser.new_page()
    _log_in(bea, base, "bea")
    bea.goto(f"{base}/console/approvals")
    waiting = bea.locator("#waiting tbody tr")
    expect(waiting).to_have_count(2)
    bea.locator("#waiting").get_by_role("link", name=made["mine"][-8:]).click()
    _decide(bea, "Approve")
    expect(bea.locator("#status")).to_have_text("approved")
    bea.goto(f"{base}{made['link']}")  # bo's link
    expect(bea.get_by_text("sent to someone else")).to_be_visible()

    bo = browser.new_page()
    _log_in(bo, base, "bo")
    bo.goto(f"{base}{made['link']}")
    expect(bo.locator("#status")).to_have_text("pending")  # opening the link decided nothing
    _decide(bo, "Approve")
    expect(bo.locator("#status")).to_have_text("approved")
    bo.goto(f"{base}{made['link']}")
    expect(bo.get_by_text("used already")).to_be_visible()
