"""A real browser (Debian's Chromium through Playwright) against a real `careops serve`: the partner
form, console login with a wrong then a right password, masking by role, a reveal with a reason,
logout. Without Debian's Chromium the fixture installs it (apt-get, as `.ci/run` does), so that the
README's test command runs these tests on a fresh machine; where it cannot, the test fails: it
never skips."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from careops.db import Database
from careops.demo.seed import seed_demo
from careops.governance.keys import load_field_keys
from careops.governance.tokens import create_token
from careops.governance.users import create_user
from careops.migrate import upgrade
from careops.settings import Settings
from tests.automation.test_engine import go_live
from tests.conftest import referral
from tests.e2e.test_crash_recovery import CAREOPS, free_port, wait_for_health

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PASSWORD = "a long enough passphrase 7"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A real ``careops serve`` on a database set up in this process (migrated, the demo, four
    console users and a partner token: what the CLI's commands would do, without paying for a
    CLI start-up each)."""
    url = f"sqlite:///{tmp_path / 'console.db'}"
    env = {**os.environ, "CAREOPS_DATABASE_URL": url}
    settings = Settings(database_url=url)
    upgrade(url)
    db = Database(url)
    load_field_keys(db, settings)
    seed_demo(db)
    go_live(db)
    for name, role in (
        ("cora", "intake_coordinator"),
        ("carl", "compliance_officer"),
        ("ian", "integration_engineer"),
        ("ada", "administrator"),
    ):
        create_user(db, settings, name, PASSWORD, [role], actor="test")
    token, _ = create_token(db, "partner", ["intake:write"], actor="test")
    db.dispose()
    port = free_port()
    process = subprocess.Popen([CAREOPS, "serve", "--port", str(port)], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wait_for_health(base)
    (tmp_path / "partner-token").write_text(token)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as api:
        incomplete = {**referral(service_code="NO-SUCH-SCAN"), "external_id": "BROWSER-EXC"}
        assert api.post("/api/v1/referrals", json=incomplete).status_code == 202
        broken = api.post(
            "/api/v1/referrals", content=b'{"broken', headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 422
    yield base
    process.terminate()
    process.wait(30)


def chromium() -> str:
    """Debian's Chromium, installed with apt-get when it is missing (as root, or through sudo)."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run([*sudo, *step], env=environment, capture_output=True, text=True, check=False)
        assert done.returncode == 0, (
            f"could not install Debian's chromium ({' '.join(step)}):\n{done.stderr[-2000:]}"
        )
    return shutil.which("chromium") or CHROMIUM


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A browser for one test (Playwright's sync API holds an event loop while it runs: kept for
    the whole session, it would stop the later tests' asyncio.run)."""
    executable = chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


def _log_in(page: Page, base: str, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/console")
    expect(page).to_have_url(f"{base}/console/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_partner_form_then_console_masking_reveal_and_logout(server: str, browser: Browser) -> None:
    form = browser.new_page()
    form.goto(f"{server}/refer/north")
    form.get_by_label("Given name").fill("Alexandra")
    form.get_by_label("Family name").fill("Example")
    form.get_by_label("Date of birth").fill("12/04/1980")
    form.get_by_label("Hospital or NHS number").fill("MRN-BROWSER-1")
    form.get_by_label("Service").select_option("XRAY-CHEST")
    form.get_by_label("Referrer code").fill("GP-001")
    form.get_by_label("Payer").select_option("NHS")
    form.get_by_label("Member or policy number").fill("943 476 5919")
    form.get_by_role("button", name="Send referral").click()
    expect(form.get_by_role("heading", name="Referral received")).to_be_visible()
    assert len(form.locator("#reference").inner_text()) == 32

    coordinator = browser.new_page()
    _log_in(coordinator, server, "cora", "not the password")
    expect(coordinator.get_by_role("alert")).to_contain_text("wrong")
    _log_in(coordinator, server, "cora")
    expect(coordinator).to_have_url(f"{server}/console/work")
    coordinator.get_by_role("navigation", name="Main").get_by_role("link", name="Cases").click()
    expect(coordinator.get_by_role("cell", name="Alexandra Example")).to_be_visible()  # clear for this role

    officer = browser.new_page()
    _log_in(officer, server, "carl")
    officer.goto(f"{server}/console/cases")
    expect(officer.get_by_role("cell", name="A**** E****")).to_be_visible()
    officer.get_by_role("link", name=officer.locator("tbody a").first.inner_text()).click()
    expect(officer.locator("#patient-mrn")).to_have_text("***-**-SER1")
    officer.get_by_label("Why do you need to see the masked details?").fill(
        "complaint 5512, checking identity"
    )
    officer.get_by_role("button", name="Reveal").click()
    expect(officer.get_by_role("status")).to_contain_text("recorded in the audit log")
    expect(officer.locator("#patient-name")).to_have_text("Alexandra Example")
    expect(officer.locator("#patient-mrn")).to_have_text("MRN-BROWSER-1")
    officer.get_by_role("button", name="Log out").click()
    expect(officer).to_have_url(f"{server}/console/login")
    officer.goto(f"{server}/console/cases")
    expect(officer).to_have_url(f"{server}/console/login")  # the session ended


@pytest.fixture
def partner(server: str, tmp_path: Path) -> Iterator[httpx.Client]:
    """The API, as the partner whose token the server fixture made."""
    token = (tmp_path / "partner-token").read_text()
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"}) as api:
        yield api


def test_work_an_exception_into_a_case_move_it_and_give_up_a_quarantined_payload(
    server: str, browser: Browser, partner: httpx.Client
) -> None:
    coordinator = browser.new_page()
    errors: list[str] = []
    coordinator.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    _log_in(coordinator, server, "cora")
    intake = coordinator.get_by_role("row").filter(has_text="intake")
    expect(intake.get_by_role("cell").nth(1)).to_have_text("1")
    intake.get_by_role("link", name="intake").click()
    rows = coordinator.locator("#rows tr")
    expect(rows).to_have_count(1)
    partner.post("/api/v1/referrals", json=referral(service_code="NO-SUCH-SCAN"))
    expect(rows).to_have_count(2, timeout=15_000)  # appeared without a reload
    rows.nth(1).get_by_role("checkbox").check()
    coordinator.get_by_label("Give the selected items to").select_option("ian")
    coordinator.get_by_role("button", name="Assign selected").click()
    expect(coordinator.locator("#rows tr").nth(1)).to_contain_text("ian")
    coordinator.locator("tbody a").first.click()
    coordinator.get_by_role("button", name="Claim").click()
    expect(coordinator.locator("#assignee")).to_have_text("cora")
    coordinator.get_by_label("service_code").fill("XRAY-CHEST")
    coordinator.get_by_role("button", name="Resolve and create the case").click()
    expect(coordinator.get_by_role("heading", name=re.compile("^Case"))).to_contain_text("ready_to_schedule")
    coordinator.get_by_role("button", name="Book the first free slot").click()
    expect(coordinator.get_by_role("heading", name=re.compile("^Case"))).to_contain_text("scheduled")
    expect(coordinator.locator(".timeline")).to_contain_text("appointment.booked")
    coordinator.get_by_role("button", name=re.compile("^Complete the appointment")).click()
    # A chest X-ray needs no result, and its NHS checklist passes: the billing check makes it ready.
    expect(coordinator.get_by_role("heading", name=re.compile("^Case"))).to_contain_text("billing_ready")
    assert errors == []  # htmx runs under the console's Content-Security-Policy without complaint

    engineer = browser.new_page()
    _log_in(engineer, server, "ian")
    engineer.get_by_role("link", name="Quarantine").first.click()
    engineer.locator("tbody a").first.click()
    engineer.get_by_role("button", name="Replay through its channel").click()
    expect(engineer.get_by_role("alert")).to_contain_text("still rejected")
    engineer.get_by_label("Why give it up?").fill("partner test message, resent correctly")
    engineer.get_by_role("button", name="Discard").click()
    expect(engineer).to_have_url(f"{server}/console/quarantine")
    expect(engineer.get_by_role("cell", name="Nothing in quarantine.")).to_be_visible()


def test_a_coordinator_maps_an_unknown_code_and_the_item_becomes_a_case(
    server: str, browser: Browser, partner: httpx.Client
) -> None:
    local = {**referral(service_code="LOCAL-CXR-PA"), "service_text": "Chest X-ray PA view"}
    assert partner.post("/api/v1/referrals", json=local).status_code == 202
    coordinator = browser.new_page()
    _log_in(coordinator, server, "cora")
    coordinator.goto(f"{server}/console/exceptions?reason=unknown_service_code")
    coordinator.locator("#rows a").last.click()
    section = coordinator.locator("section.mapping")
    expect(section).to_contain_text("LOCAL-CXR-PA")
    expect(section.locator("ol.suggestions li").first).to_contain_text("XRAY-CHEST")
    expect(coordinator.get_by_label("careops service it stands for")).to_have_value("XRAY-CHEST")
    coordinator.get_by_role("button", name="Map it for this and every later message").click()
    expect(coordinator.get_by_role("heading", name=re.compile("^Case"))).to_contain_text("ready_to_schedule")
    again = partner.post("/api/v1/referrals", json={**referral(service_code="local-cxr-pa")})
    assert again.status_code == 201  # a later referral with the code goes straight to a case
    admin = browser.new_page()
    _log_in(admin, server, "ian")
    admin.goto(f"{server}/console/admin/reference?kind=mappings")
    expect(admin.locator("tbody")).to_contain_text("LOCAL-CXR-PA")


def test_an_administrator_creates_then_revokes_a_token(server: str, browser: Browser) -> None:
    admin = browser.new_page()
    _log_in(admin, server, "ada")
    admin.get_by_role("link", name="API tokens").click()
    admin.get_by_label("Who or what will use it").fill("browser-lab")
    admin.get_by_label("cases:read").check()
    admin.get_by_role("button", name="Create token").click()
    secret = admin.locator("#secret").inner_text()
    assert secret.startswith("cop_")
    bearer = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(f"{server}/api/v1/cases", headers=bearer).status_code == 200
    admin.get_by_role("button", name="Revoke browser-lab").click()
    expect(admin.get_by_role("row").filter(has_text="browser-lab")).to_contain_text("revoked")
    expect(admin.locator("#secret")).to_have_count(0)  # shown once only


AXE = Path(__file__).parent / "vendor" / "axe.min.js"
# With CAREOPS_SCREENSHOTS=1 the accessibility test also refreshes the screenshots docs/console.md shows.
SCREENSHOTS = Path(__file__).parents[2] / "docs" / "screenshots"


def _serious_violations(page: Page) -> list[str]:
    """What axe-core finds on the page, serious or critical only."""
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{page.url}: {v['id']} ({v['impact']}) {v['help']}: {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_every_console_page_passes_axe_without_serious_violations(
    server: str, browser: Browser, partner: httpx.Client, tmp_path: Path
) -> None:
    shots = SCREENSHOTS if os.environ.get("CAREOPS_SCREENSHOTS") == "1" else tmp_path
    assert partner.post("/api/v1/referrals", json=referral()).status_code == 201  # a case to open
    context = browser.new_context()
    context.add_init_script(path=str(AXE))  # through the browser, not the page: the CSP stays as it is
    page = context.new_page()
    found: list[str] = []
    page.goto(f"{server}/console/login")
    found += _serious_violations(page)
    page.goto(f"{server}/refer/north")
    found += _serious_violations(page)
    _log_in(page, server, "ada")
    for path in (
        "/console/work", "/console/dashboard", "/console/flow", "/console/cases", "/console/patients",
        "/console/exceptions",
        "/console/quarantine", "/console/admin/tokens", "/console/admin/users", "/console/admin/connectors",
        "/console/admin/audit", "/console/admin/reference", "/console/board?location=north",
        "/console/availability?service=XRAY-CHEST&location=north", "/console/authorisations",
        "/console/results", "/console/billing", "/console/stock?location=south", "/console/staffing",
        "/console/automation", "/console/automation/stock-replenishment?location=south", "/console/approvals",
    ):  # fmt: skip
        page.goto(f"{server}{path}")
        page.wait_for_load_state()
        found += _serious_violations(page)
        page.screenshot(path=shots / f"{path.rsplit('/', 1)[1].split('?')[0]}.png", full_page=True)
        if path in ("/console/exceptions", "/console/quarantine", "/console/cases"):
            listed = page.url
            page.locator("tbody a").first.click()  # the first item's own page
            page.wait_for_url(lambda url, listed=listed: url != listed)
            page.wait_for_load_state()
            found += _serious_violations(page)
            page.screenshot(path=shots / f"{path.rsplit('/', 1)[1]}-item.png", full_page=True)
    assert found == []
    assert (shots / "dashboard.png").stat().st_size > 10_000
