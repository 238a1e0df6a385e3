"""Accessibility in CI (issue #12 part 8): axe-core in Chromium over every page state of every role.

The demo (console/demo.py) is seeded and its staff work through it in one headless Chromium
against one live server: sign-in (with its errors and the authenticator step), every role's home
page, the counter flow (search, a number not found, the customer, a case before verification, the
slips shown on their fields, verified, an unlock, the close confirmation, the closed case with its
receipt actions, a case closed without action), the phone flow (code sent, a wrong code, verified),
a hold and its release filed for a supervisor, the supervisor's approvals and risk alerts, the
auditor's search, event, dashboard, chain and audit browser, every Flask-Admin page (with the
row confirmation and the hand-over slip), the public receipt check, error pages, and a few pages
in English.

On every page state axe-core (axe-playwright-python's bundled copy) must report no critical and
no serious violation; moderate and minor ones are printed (``pytest -rP`` or ``-s`` shows them),
not failed on. Also: the active navigation link carries ``aria-current="page"``, an error is tied
to its field with ``aria-describedby``, the dashboard's charts have text alternatives, and the
desk search, the case page and the audit search reflow at 320 CSS pixels (WCAG 1.4.10).
One browser, one live server; one backend is enough for what a browser sees (SQLite).
"""
from __future__ import annotations

import logging
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from console import boundary, demo
from console.extensions import db
from console.services.actor import Actor

from .browser import CHROMIUM_ARGS, LiveServer, chromium_or_skip, shot
from .conftest import StaffHandle, make_staff, totp_code

pytestmark = [pytest.mark.browser, pytest.mark.sqlite_only]

FAILING_IMPACTS = ("critical", "serious")
REFLOW_WIDTH, REFLOW_TOLERANCE = 320, 2
VIEWPORT = {"width": 1366, "height": 768}
# axe-core's default rules, and three it leaves off: WCAG 2.2's target size (24 px, or room around
# it) and duplicate ids (deprecated in axe, but a duplicate id still breaks a label or an error's tie).
AXE_OPTIONS = {"resultTypes": ["violations", "incomplete"],
               "rules": {rule: {"enabled": True} for rule in ("target-size", "duplicate-id", "duplicate-id-active")}}


def axe_source() -> str:
    import axe_playwright_python

    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")


class Accessibility:
    """Runs axe-core on the page as it is now and keeps what it finds, with the page state's name."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.script = axe_source()
        self.failures: list[str] = []  # critical and serious violations, and failed checks
        self.notes: list[str] = []  # moderate and minor violations: printed, not failed on
        self.by_impact: Counter = Counter()  # (impact, rule) -> page states
        self.review: Counter = Counter()  # rules axe-core could not decide ("incomplete") -> page states
        self.states: list[str] = []
        self.seconds = 0.0

    def __call__(self, page, state: str, *, current: str | None = None, reflow: bool = False) -> None:
        """Check the page: axe-core, the current navigation link (its href), reflow at 320 px."""
        started = time.monotonic()
        page.wait_for_load_state("load")
        self.states.append(state)
        shot(page, "a11y-" + re.sub(r"[^a-z0-9]+", "-", state.lower()).strip("-"))
        if not page.evaluate("typeof window.axe === 'object'"):
            page.evaluate(self.script)
        results = page.evaluate("options => axe.run(document, options)", AXE_OPTIONS)
        where = page.url.replace(self.base_url, "") or "/"
        for undecided in results["incomplete"]:
            self.review[f"{undecided['id']} ({undecided.get('impact') or 'minor'})"] += 1
            for node in undecided["nodes"][:4]:
                why = "; ".join(c.get("message", "") for c in node.get("any", []) + node.get("all", []) if c.get("message"))
                self.notes.append(f"[{state}] {where}: needs review: {undecided['id']} — {' '.join(map(str, node['target']))}: {why}")
        for violation in results["violations"]:
            impact = violation.get("impact") or "minor"
            self.by_impact[(impact, violation["id"])] += 1
            targets = "; ".join(" ".join(map(str, node["target"])) for node in violation["nodes"][:6])
            more = len(violation["nodes"]) - 6
            line = (f"[{state}] {where}: {violation['id']} ({impact}) {violation['help']} — "
                    f"{targets}{f' (+{more} more)' if more > 0 else ''}")
            (self.failures if impact in FAILING_IMPACTS else self.notes).append(line)
        if current is not None:
            marked = page.eval_on_selector_all("nav.mainnav [aria-current=page]", "els => els.map(e => e.getAttribute('href'))")
            if marked != [current]:
                self.failures.append(f"[{state}] {where}: aria-current=page on {marked}, expected on the link to {current}")
        if reflow:
            self.reflow(page, state, where)
        self.seconds += time.monotonic() - started

    def expect(self, ok, state: str, what: str) -> None:
        if not ok:
            self.failures.append(f"[{state}] {what}")

    def reflow(self, page, state: str, where: str) -> None:
        page.set_viewport_size({"width": REFLOW_WIDTH, "height": 640})
        try:
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > REFLOW_WIDTH + REFLOW_TOLERANCE:
                wide = page.evaluate("""() => [...document.querySelectorAll('body *')]
                    .filter(e => e.getBoundingClientRect().right > innerWidth + 2 && e.getClientRects().length)
                    .slice(-4).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
                                        (e.className && typeof e.className === 'string' ? '.' + e.className.trim().split(/\\s+/).join('.') : ''))""")
                self.failures.append(f"[{state}] {where}: at {REFLOW_WIDTH} px the page is {width} px wide "
                                     f"(scrolls sideways); widest: {wide}")
            shot(page, "a11y-320-" + re.sub(r"[^a-z0-9]+", "-", state.lower()).strip("-"))
        finally:
            page.set_viewport_size(VIEWPORT)

    def report(self) -> str:
        lines = [f"axe-core over {len(self.states)} page states ({self.seconds:.1f} s in checks):"]
        for impact in ("critical", "serious", "moderate", "minor"):
            rules = {rule: n for (i, rule), n in self.by_impact.items() if i == impact}
            lines.append(f"  {impact}: {sum(rules.values())} rule×page"
                         + (" — " + ", ".join(f"{rule} ×{n}" for rule, n in sorted(rules.items())) if rules else ""))
        if self.review:
            lines.append("  needs review (axe-core could not decide; not failed on): "
                         + ", ".join(f"{rule} ×{n}" for rule, n in sorted(self.review.items())))
        if self.notes:
            lines.append("Moderate and minor (not failed on):")
            lines.extend("  " + note for note in self.notes)
        return "\n".join(lines)


def described_error(page, field_id: str) -> str:
    """The text of the error tied to a field by aria-describedby ('' when none is tied)."""
    return page.evaluate("""id => {
        const f = document.getElementById(id);
        const ids = (f && f.getAttribute('aria-describedby') || '').split(/\\s+/).filter(Boolean);
        return f && f.getAttribute('aria-invalid') === 'true'
            ? ids.map(i => (document.getElementById(i) || {}).textContent || '').join(' ').trim() : '';
    }""", field_id)


def _handle(staff: demo.DemoStaff) -> StaffHandle:
    from console.models.staff import Staff

    row = db.session.query(Staff).filter_by(employee_no=staff.employee_no).one()
    handle = StaffHandle(row.id, staff.employee_no, staff.password, staff.totp_secret, staff.role, staff.branch_code)
    db.session.rollback()  # no read left open: SQLite's writer lock must stay free for the server
    return handle


def _submit(page, selector: str) -> None:
    with page.expect_navigation():
        page.click(selector)


def _sign_in(page, handle: StaffHandle, check=None) -> None:
    page.goto(page.base_url + "/auth/login")
    if check:
        check(page, "sign-in")
        page.fill("#employee_no", handle.employee_no)
        page.fill("#password", "not-the-password")
        _submit(page, "main button[type=submit]")
        check(page, "sign-in: wrong password")
    page.fill("#employee_no", handle.employee_no)
    page.fill("#password", handle.password)
    _submit(page, "main button[type=submit]")
    page.wait_for_url("**/auth/totp")
    if check:
        check(page, "sign-in: authenticator code")
        page.fill("#code", "12345")
        _submit(page, "main button[type=submit]")
        check(page, "sign-in: authenticator code malformed")
        check.expect(described_error(page, "code"), "sign-in", "the code's error is not tied to its field")
    page.fill("#code", totp_code(handle))
    _submit(page, "main button[type=submit]")
    page.wait_for_url(page.base_url + "/")


def _language(page, lang: str) -> None:
    _submit(page, f".langswitch button[value={lang}]")


def _find(page, kind: str, value: str) -> None:
    page.goto(page.base_url + "/desk/")
    page.select_option("#kind", kind)
    page.fill("#value", value)
    _submit(page, "form.searchbar button[type=submit]")


def _open_case(page) -> str:
    _submit(page, "form[action$='/cases'] button[type=submit]")
    page.wait_for_url("**/desk/cases/*")
    return page.url.split("#")[0].rsplit("/", 1)[1]


def _operate(page, operation: str, reason: str) -> None:
    details = page.locator(f"details:has(form[action$='/{operation}'])")
    if details.get_attribute("open") is None:
        details.locator("summary").click()
    form = details.locator("form")
    form.locator("select[name$='reason_code']").select_option(reason)
    form.locator("input[type=checkbox][name$='confirm']").check()
    with page.expect_navigation():
        form.locator("button[type=submit]").click()


def _verify_at_counter(page, id_number: str) -> None:
    page.fill("#id_number", id_number)
    page.check("#photo_matches")
    _submit(page, "form[action$='/verify/counter'] button[type=submit]")


def _sms_code() -> str:
    from console.models.notification import Notification
    from console.services.notifications import message_text

    sent = db.session.query(Notification).filter_by(kind="verification_code").order_by(Notification.id.desc()).first()
    code = re.search(r"验证码为(\d{6})", message_text(sent)).group(1)
    db.session.rollback()
    return code


def test_every_page_state_of_every_role_passes_axe(app, caplog):
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    from console.models.audit import AuditEvent
    from console.services import receipts

    caplog.set_level(logging.WARNING, logger="werkzeug")  # the report, not every request, in the output
    started = time.monotonic()
    data = boundary.perform(Actor.operator(), demo.seed, commit=boundary.commit_now)
    staff = {s.employee_no: _handle(s) for s in data.staff}
    wallets = {w.state: w for w in data.wallets}
    mobiles = {name: mobile for name, _born, mobile, _state in demo.DEMO_CUSTOMERS}

    with LiveServer(app) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        check = Accessibility(server.url)

        def tab():
            context = browser.new_context(viewport=VIEWPORT, locale="zh-CN")
            page = context.new_page()
            page.base_url = server.url
            page.console_errors = []
            page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
            return page

        # --- A teller at the counter -------------------------------------------------------------
        page = tab()
        page.goto(server.url + "/nowhere")
        check(page, "404 signed out")
        _sign_in(page, staff["T1001"], check)
        check(page, "teller home", current="/")
        page.keyboard.press("Tab")
        check(page, "teller home: skip link focused", current="/")
        page.evaluate("document.getElementById('idle-warning').hidden = false")
        check(page, "teller home: idle warning shown", current="/")
        page.goto(server.url + "/desk/")
        check(page, "desk search (counter)", current="/desk/", reflow=True)
        _find(page, "mobile", "139")
        check(page, "desk search: malformed number", current="/desk/")
        check.expect(described_error(page, "value"), "desk search", "the search's error is not tied to its field")
        _find(page, "mobile", "13900000000")
        check(page, "desk search: no customer", current="/desk/", reflow=True)
        locked = wallets["locked_until_unlock"]
        _find(page, "wallet_no", locked.wallet_no)
        page.wait_for_url("**/desk/customers/*")
        check(page, "customer", current="/desk/", reflow=True)
        case_no = _open_case(page)
        check(page, "counter case before verification", current="/desk/", reflow=True)
        typo = locked.id_number[:-1] + ("1" if locked.id_number[-1] != "1" else "2")
        page.fill("#id_number", typo)  # the photo box left unticked: two slips
        _submit(page, "form[action$='/verify/counter'] button[type=submit]")
        check(page, "counter case: verification slips", current="/desk/", reflow=True)
        check.expect(described_error(page, "id_number") and described_error(page, "photo_matches"), "counter case",
                     "a slip is not tied to its field with aria-describedby")
        _verify_at_counter(page, locked.id_number)
        check(page, "counter case verified", current="/desk/", reflow=True)
        page.evaluate("document.querySelectorAll('details.op').forEach(d => { d.open = true; })")
        check(page, "counter case verified: every operation opened", current="/desk/", reflow=True)
        page.reload()
        _operate(page, "unlock", "locked_after_wrong_passwords")
        check(page, "counter case: wallet unlocked", current="/desk/")
        page.goto(server.url + f"/desk/cases/{case_no}/close")
        check(page, "close confirmation", current="/desk/", reflow=True)
        _submit(page, "#confirm-close button[type=submit]")
        check(page, "closed case with receipt actions", current="/desk/", reflow=True)
        receipt_no = re.search(r"R\d{14}", page.inner_text("#receipt")).group(0)

        # A hold placed, its release filed for a supervisor; a case closed without action.
        held = wallets["active_without_2fa"]
        _find(page, "wallet_no", held.wallet_no)
        hold_case = _open_case(page)
        _verify_at_counter(page, held.id_number)
        _operate(page, "place_hold", "suspected_fraud")
        _operate(page, "release_hold", "customer_request")
        check(page, "case with a request waiting for a supervisor", current="/desk/")
        page.goto(server.url + f"/desk/cases/{hold_case}/close")
        check(page, "close confirmation with a pending request", current="/desk/")
        _find(page, "wallet_no", wallets["locked_30_minutes"].wallet_no)
        empty_case = _open_case(page)
        page.goto(server.url + f"/desk/cases/{empty_case}/close")
        check(page, "close confirmation of an empty case", current="/desk/")
        page.goto(server.url + "/audit/events")
        check(page, "teller's own audit trail", current="/audit/events")
        page.goto(server.url + "/audit/chain")
        check(page, "403 page")
        page.goto(server.url + "/desk/customers/C999999999")
        check(page, "404 page (signed in)")
        # In English: home, search, a case.
        page.goto(server.url + "/")
        _language(page, "en")
        assert page.get_attribute("html", "lang") == "en"
        check(page, "teller home (English)", current="/")
        page.goto(server.url + "/desk/")
        check(page, "desk search (English)", current="/desk/", reflow=True)
        page.goto(server.url + f"/desk/cases/{hold_case}")
        check(page, "case (English)", current="/desk/", reflow=True)
        page.goto(server.url + f"/desk/cases/{case_no}/close")
        _language(page, "zh_CN")
        teller_errors = page.console_errors
        page.context.close()

        # --- The public receipt check --------------------------------------------------------------
        page = tab()
        page.goto(server.url + f"/receipts/check/{receipt_no}?c={receipts.check_code(receipt_no)}")
        check(page, "receipt check (public)")
        page.goto(server.url + f"/receipts/check/{receipt_no}?c=wrong")
        check(page, "receipt check: not found")
        page.context.close()

        # --- An agent on the hotline ---------------------------------------------------------------
        page = tab()
        _sign_in(page, staff["A2001"])
        check(page, "agent home", current="/")
        page.goto(server.url + "/desk/")
        check(page, "desk search (hotline)", current="/desk/")
        _find(page, "mobile", mobiles[wallets["active"].name])
        page.wait_for_url("**/desk/customers/*")
        _open_case(page)
        check(page, "phone case before verification", current="/desk/")
        _submit(page, "form[action$='/verify/phone'] button[type=submit]")
        check(page, "phone case: code sent", current="/desk/", reflow=True)
        code = _sms_code()
        answers = dict(demo.DEMO_SECURITY_ANSWERS)
        page.fill("#code", str((int(code) + 1) % 1_000_000).zfill(6))
        for question, answer in answers.items():
            page.fill(f"#answer_{question}", answer)
        _submit(page, "form[action$='/verify/phone/check'] button[type=submit]")
        check(page, "phone case: wrong code", current="/desk/")
        page.fill("#code", code)
        for question, answer in answers.items():
            page.fill(f"#answer_{question}", answer)
        _submit(page, "form[action$='/verify/phone/check'] button[type=submit]")
        check(page, "phone case verified", current="/desk/")
        _operate(page, "reset_password", "forgot_password")
        check(page, "phone case: password reset", current="/desk/")
        agent_errors = page.console_errors
        page.context.close()

        # --- A supervisor: approvals and risk alerts ---------------------------------------------------
        page = tab()
        _sign_in(page, staff["S3001"])
        check(page, "supervisor home", current="/")
        page.goto(server.url + "/desk/approvals")
        check(page, "approvals", current="/desk/approvals")
        _submit(page, "main a[href*='/desk/approvals/']")
        check(page, "one approval", current="/desk/approvals")
        _submit(page, "main form button[type=submit]")  # no decision chosen: an error
        check(page, "one approval: no decision chosen", current="/desk/approvals")
        page.goto(server.url + "/alerts/")
        check(page, "risk alerts")
        _submit(page, "main a[href*='/alerts/']")
        check(page, "one risk alert")
        _submit(page, "main form button[type=submit]")  # no note: an error
        check(page, "one risk alert: note missing")
        check.expect(described_error(page, "note"), "risk alert", "the note's error is not tied to its field")
        _submit(page, "main a[href*='/desk/customers/']")
        check(page, "customer with a risk alert", current="/desk/")
        page.select_option("#field", "mobile")
        page.fill("#reason", "核对号码")
        _submit(page, "form[action$='/reveal'] button[type=submit]")
        check(page, "customer: mobile revealed", current="/desk/")
        page.goto(server.url + "/audit/dashboard")
        check(page, "dashboard (branch)", current="/audit/dashboard")
        page.goto(server.url + "/desk/approvals")
        _submit(page, "main a[href*='/desk/approvals/']")
        page.check("input[name=decision][value=approve]")
        page.fill("#note", "已电话核实")
        _submit(page, "main form button[type=submit]")
        check(page, "approvals after a decision", current="/desk/approvals")
        page.goto(server.url + "/desk/approvals/1")
        check(page, "one approval: decided", current="/desk/approvals")
        supervisor_errors = page.console_errors
        page.context.close()

        # --- The auditor ---------------------------------------------------------------------------------
        seq = db.session.query(db.func.max(AuditEvent.seq)).filter(AuditEvent.action == "wallet.unlock").scalar()
        db.session.rollback()
        page = tab()
        _sign_in(page, staff["U4001"])
        check(page, "auditor home", current="/")
        page.goto(server.url + "/audit/events")
        check(page, "audit events", current="/audit/events", reflow=True)
        page.goto(server.url + "/audit/events?channel=counter&outcome=failed&action=verification.")
        check(page, "audit events: filtered", current="/audit/events", reflow=True)
        page.goto(server.url + "/audit/events?start=2024-13-45&wallet=abc")
        check(page, "audit events: filter errors", current="/audit/events", reflow=True)
        check.expect(described_error(page, "f-start"), "audit events", "the filter's error is not tied to its field")
        page.goto(server.url + f"/audit/events/{seq}")
        check(page, "audit event", current="/audit/events")
        page.goto(server.url + "/audit/dashboard?days=7")
        check(page, "dashboard", current="/audit/dashboard")
        charts = page.evaluate("""[...document.querySelectorAll('svg.chart')].map(svg => ({
            role: svg.getAttribute('role'), named: !!(svg.getAttribute('aria-label') || svg.getAttribute('aria-labelledby')),
            table: !!svg.parentElement.querySelector('table')}))""")
        check.expect(charts and all(c["role"] == "img" and c["named"] and c["table"] for c in charts), "dashboard",
                     f"a chart without a text alternative (role=img, a name, a table): {charts}")
        page.goto(server.url + "/audit/chain")
        check(page, "audit chain", current="/audit/chain")
        _submit(page, "main form button[type=submit]")
        check(page, "audit chain verified", current="/audit/chain")
        page.goto(server.url + "/audit/browse/audit_browser_events/")
        check(page, "audit browser", current="/audit/browse/audit_browser_events/")
        _submit(page, "table.model-list tbody tr >> nth=0 >> a.icon >> nth=0")
        check(page, "audit browser: event details")
        page.goto(server.url + "/audit/events")
        _language(page, "en")
        check(page, "audit events (English)", current="/audit/events")
        page.goto(server.url + "/audit/dashboard")
        check(page, "dashboard (English)", current="/audit/dashboard")
        auditor_errors = page.console_errors
        page.context.close()

        # --- The administrator: every Flask-Admin page -----------------------------------------------------
        page = tab()
        _sign_in(page, staff["M5001"])
        check(page, "admin home", current="/")
        page.goto(server.url + "/admin/")
        check(page, "admin index", current="/admin/")
        page.goto(server.url + "/admin/staff_admin/")
        check(page, "admin: staff list", current="/admin/staff_admin/")
        page.check(f"input.action-checkbox[value='{staff['S3002'].id}']")
        page.click("a[data-toggle=dropdown]:has-text('批量操作'), a[data-toggle=dropdown] >> nth=0")
        check(page, "admin: staff list, bulk actions open", current="/admin/staff_admin/")
        page.goto(server.url + "/admin/staff_admin/new/")
        check(page, "admin: new staff", current="/admin/staff_admin/")
        page.evaluate("document.querySelectorAll('[required]').forEach(e => e.removeAttribute('required'))")
        _submit(page, "form.admin-form input[type=submit] >> nth=0")  # nothing filled in: the server's errors
        check(page, "admin: new staff with errors", current="/admin/staff_admin/")
        page.goto(server.url + f"/admin/staff_admin/edit/?id={staff['S3002'].id}")
        check(page, "admin: edit staff", current="/admin/staff_admin/")
        page.goto(server.url + f"/admin/staff_admin/account/reset_password/?id={staff['S3002'].id}")
        check(page, "admin: confirm a row action", current="/admin/staff_admin/")
        _submit(page, "form.confirm-form button[type=submit]")
        assert page.locator(".handover .slip").count() == 1
        check(page, "admin: hand-over slip", current="/admin/staff_admin/")
        page.goto(server.url + "/admin/branch_admin/")
        check(page, "admin: branches", current="/admin/branch_admin/")
        page.goto(server.url + "/admin/branch_admin/new/")
        check(page, "admin: new branch", current="/admin/branch_admin/")
        page.goto(server.url + "/admin/branch_admin/edit/?id=1")
        check(page, "admin: edit branch", current="/admin/branch_admin/")
        _language(page, "en")
        check(page, "admin: edit branch (English)", current="/admin/branch_admin/")
        page.goto(server.url + "/admin/staff_admin/")
        check(page, "admin: staff list (English)", current="/admin/staff_admin/")
        page.goto(server.url + "/desk/")
        check(page, "403 page (English)")
        admin_errors = page.console_errors
        page.context.close()

        # --- The maker sees the decision; a new teller's first sign-in -------------------------------------
        page = tab()
        _sign_in(page, staff["T1001"])
        check(page, "teller home with a decision", current="/")
        page.goto(server.url + f"/desk/cases/{hold_case}")
        check(page, "case with a decided request", current="/desk/")
        page.context.close()
        newcomer = make_staff("teller", enrolled=False, must_change=True, password="Initial-pass-0001")
        page = tab()
        page.goto(server.url + "/auth/login")
        page.fill("#employee_no", newcomer.employee_no)
        page.fill("#password", newcomer.password)
        _submit(page, "main button[type=submit]")
        page.wait_for_url("**/auth/change-password")
        check(page, "first sign-in: choose a password")
        page.fill("#new_password", "short")
        page.fill("#confirm", "other")
        _submit(page, "main button[type=submit]")
        check(page, "first sign-in: password refused")
        check.expect(described_error(page, "new_password") or described_error(page, "confirm"), "first sign-in",
                     "the password's error is not tied to its field")
        page.fill("#new_password", "Brand-new-pass-2468")
        page.fill("#confirm", "Brand-new-pass-2468")
        _submit(page, "main button[type=submit]")
        page.wait_for_url("**/auth/enrol")
        check(page, "first sign-in: set up the authenticator")
        newcomer_errors = page.console_errors
        page.context.close()

        # The check itself: it does find what it looks for.
        page = tab()
        page.set_content('<html><body><main><img src="/static/favicon.svg"><p style="color:#bbb">faint</p>'
                         '<svg role="img" viewBox="0 0 9 9"></svg></main></body></html>')
        control = Accessibility(server.url)
        control(page, "control", current="/")
        found = " ".join(control.failures)
        assert all(rule in found for rule in ("image-alt", "color-contrast", "svg-img-alt", "html-has-lang",
                                              "aria-current=page")), control.failures
        page.context.close()
        browser.close()

    print(check.report())
    print(f"test runtime {time.monotonic() - started:.1f} s")
    assert not check.failures, (f"{len(check.failures)} accessibility failure(s) (critical/serious axe-core "
                                "violations, aria-current, reflow):\n" + "\n".join(check.failures))
    for role, errors in (("teller", teller_errors), ("agent", agent_errors), ("supervisor", supervisor_errors),
                         ("auditor", auditor_errors), ("admin", admin_errors), ("newcomer", newcomer_errors)):
        # A page answered with an error status (a form's slips are a 422) is logged as a failed load.
        assert [e for e in errors if not re.search(r"status of (4\d\d)", e)] == [], (role, errors)


def test_charts_have_a_name_and_a_table_of_their_numbers():
    from console.services.audit_dashboard import bar_chart_svg, hbar_svg

    days = bar_chart_svg({"2026-11-20": {"success": 3, "denied": 1}, "2026-11-21": {"failed": 2}},
                         outcome_words={"success": "成功", "denied": "拒绝", "failed": "失败"},
                         title='每日事件 "<数>"', day_word="日期")
    assert days.startswith('<svg') and 'role="img"' in days
    assert 'aria-label="每日事件 &quot;&lt;数&gt;&quot;"' in days and "<title>每日事件" in days
    table = days.split("</svg>", 1)[1]
    assert table.startswith('<table class="visually-hidden"><caption>每日事件')
    assert '<th scope="col">日期</th><th scope="col">成功</th><th scope="col">拒绝</th><th scope="col">失败</th>' in table
    assert '<tr><th scope="row">2026-11-20</th><td>3</td><td>1</td><td>0</td></tr>' in table
    ranked = hbar_svg([("解锁钱包", 7), ("<x>", 2)], title="按操作", headers=("操作", "事件数"))
    assert 'aria-label="按操作"' in ranked
    assert '<th scope="col">操作</th><th scope="col">事件数</th>' in ranked
    assert '<tr><th scope="row">解锁钱包</th><td>7</td></tr><tr><th scope="row">&lt;x&gt;</th><td>2</td></tr>' in ranked
