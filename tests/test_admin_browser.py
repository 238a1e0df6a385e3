"""The administration in headless Chromium: the console's frame (language, landmarks, current page),
a per-row action confirmed on a page that names the account, the hand-over slip printed alone,
and the auditor's audit browser in Chinese and Beijing time. No script or CSP errors anywhere."""
import re

import pytest

from console.extensions import db
from console.services import audit
from console.services.actor import Actor

from .browser import CHROMIUM_ARGS, LiveServer, chromium_or_skip, shot
from .conftest import make_staff, totp_code

pytestmark = [pytest.mark.browser, pytest.mark.sqlite_only]


@pytest.fixture
def page(app, backend):
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with LiveServer(app) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
        tab = context.new_page()
        tab.base_url = server.url
        tab.console_errors = []
        tab.on("console", lambda msg: tab.console_errors.append(msg.text) if msg.type == "error" else None)
        yield tab
        context.close()
        browser.close()


def _sign_in(page, handle):
    page.goto(page.base_url + "/auth/login")
    page.fill("#employee_no", handle.employee_no)
    page.fill("#password", handle.password)
    page.keyboard.press("Enter")
    page.wait_for_url("**/auth/totp")
    page.fill("#code", totp_code(handle))
    page.keyboard.press("Enter")
    page.wait_for_url(page.base_url + "/")


def _frame_is_the_consoles(page, current: str | None):
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert page.locator("header.topbar").count() == 1 and page.locator("main#main").count() == 1
    assert page.locator("nav.mainnav").count() == 1
    if current:
        assert page.inner_text("nav.mainnav [aria-current=page]").strip() == current


def test_admin_pages_row_action_and_hand_over_slip(page, app):
    _sign_in(page, make_staff("admin", branch_code="HO-000"))
    other = make_staff("teller")
    page.goto(page.base_url + "/admin/")
    _frame_is_the_consoles(page, "概览")
    shot(page, "30-admin-index")

    page.goto(page.base_url + "/admin/staff_admin/")
    _frame_is_the_consoles(page, "员工")
    assert page.locator("th", has_text="角色").count() == 1
    row = page.locator("tr", has_text=other.employee_no)
    assert "柜员" in row.inner_text()
    shot(page, "31-admin-staff-list")

    # Per row: the confirmation page names the account; Cancel changes nothing, the button does it.
    row.get_by_role("link", name=re.compile("重置密码")).click()
    page.wait_for_load_state()
    assert f"测试teller（{other.employee_no}）" in page.inner_text("h1")
    shot(page, "32-admin-confirm-reset")
    page.get_by_role("button", name=re.compile("重置密码")).click()
    page.wait_for_load_state()
    slip = page.locator(".handover .slip")
    assert slip.count() == 1 and other.employee_no in slip.inner_text() and "测试teller" in slip.inner_text()
    password = "".join(slip.locator(".otp span").all_inner_texts())
    assert len(password) == 16 and not set(password) & set("Il1Oo0")
    shot(page, "33-admin-hand-over-slip")
    page.emulate_media(media="print")
    if __import__("os").environ.get("CONSOLE_SCREENSHOTS"):
        page.pdf(path=__import__("os").path.join(__import__("os").environ["CONSOLE_SCREENSHOTS"], "34-slip-print.pdf"))
    assert page.locator(".topbar").evaluate("e => getComputedStyle(e).visibility") == "hidden"
    assert slip.evaluate("e => getComputedStyle(e).visibility") == "visible"
    page.emulate_media(media="screen")

    # Shown once: the next page has no slip.
    page.goto(page.base_url + "/admin/staff_admin/")
    assert page.locator(".handover").count() == 0 and password not in page.content()

    page.goto(page.base_url + "/admin/staff_admin/new/")
    _frame_is_the_consoles(page, "员工")
    options = page.locator("select#role option").all_inner_texts()
    assert "柜员" in options and "teller" not in options
    shot(page, "35-admin-new-staff")
    page.goto(page.base_url + "/admin/branch_admin/")
    _frame_is_the_consoles(page, "网点")
    shot(page, "36-admin-branches")
    assert page.console_errors == []


def test_auditor_browses_in_chinese_and_beijing_time(page, app):
    actor = Actor(kind="staff", employee_no="T1001", role="teller", branch_code="BJ-001", channel="counter")
    for i in range(6):
        audit.record(db.session, actor, "wallet.unlock" if i % 2 else "access.denied",
                     outcome="success" if i % 2 else "denied", customer_ref="C000000007")
    db.session.commit()
    _sign_in(page, make_staff("auditor", branch_code="HO-000"))
    page.goto(page.base_url + "/audit/browse/audit_browser_events/")
    _frame_is_the_consoles(page, "审计事件")
    headers = page.locator("table.model-list th").all_inner_texts()
    assert any("时间" in h for h in headers) and not any("Occurred" in h for h in headers)
    body = page.inner_text("table.model-list tbody")
    assert "柜员" in body and "teller" not in body
    shot(page, "37-audit-browser")
    page.locator("table.model-list tbody tr").first.locator("a.icon").first.click()
    page.wait_for_load_state()
    assert "UTC" in page.content()
    shot(page, "38-audit-browser-event")
    assert page.console_errors == []
