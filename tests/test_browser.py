"""End to end in headless Chromium: sign in with password + TOTP and reach the role home page."""
import pyotp
import pytest

from .browser import CHROMIUM_ARGS, LiveServer, chromium_or_skip, shot
from .conftest import make_staff, totp_code

pytestmark = [pytest.mark.browser, pytest.mark.sqlite_only]


@pytest.fixture
def browser_page(app, backend):
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with LiveServer(app) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
        page = context.new_page()
        page.base_url = server.url
        errors = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.console_errors = errors
        yield page
        context.close()
        browser.close()


def test_teller_signs_in_with_password_and_totp(browser_page, app):
    page = browser_page
    handle = make_staff("teller")
    page.goto(page.base_url + "/")
    assert "/auth/login" in page.url
    shot(page, "01-login")
    page.fill("#employee_no", handle.employee_no)
    page.fill("#password", handle.password)
    page.keyboard.press("Enter")
    page.wait_for_url("**/auth/totp")
    shot(page, "02-totp")
    page.fill("#code", totp_code(handle))
    page.keyboard.press("Enter")
    page.wait_for_url(page.base_url + "/")
    assert "您的角色可以办理" in page.content()
    assert "柜员" in page.inner_text(".hero")
    shot(page, "03-teller-home")
    assert page.console_errors == []  # no CSP violations or script errors


def test_first_sign_in_enrols_the_authenticator_from_the_qr_page(browser_page, app):
    page = browser_page
    handle = make_staff("auditor", enrolled=False, branch_code="HO-000")
    page.goto(page.base_url + "/auth/login")
    page.fill("#employee_no", handle.employee_no)
    page.fill("#password", handle.password)
    page.click("button[type=submit].btn-primary")
    page.wait_for_url("**/auth/enrol")
    assert page.locator("img[alt]").first.is_visible()
    shot(page, "04-enrol")
    secret = page.inner_text("code.secret").replace(" ", "")
    page.fill("#code", pyotp.TOTP(secret).now())
    page.keyboard.press("Enter")
    page.wait_for_url(page.base_url + "/")
    assert "审计员" in page.inner_text(".hero")
    page.click("text=English")
    page.wait_for_load_state()
    assert "What your role can do" in page.content()
    shot(page, "05-auditor-home-en")
    assert page.console_errors == []


def test_admin_reaches_flask_admin_without_csp_errors(browser_page, app):
    page = browser_page
    _sign_in(page, make_staff("admin", branch_code="HO-000"))
    other = make_staff("teller")
    page.goto(page.base_url + "/admin/staff_admin/")
    assert "员工" in page.content()
    shot(page, "06-admin-staff")
    # A bulk action runs under the CSP (no inline handlers): reset another teller's password.
    page.check(f"input.action-checkbox[value='{other.id}']")
    page.click("text=所选操作" if page.locator("text=所选操作").count() else "[data-toggle=dropdown] >> nth=0")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-model-action=reset_password]")
    page.wait_for_load_state()
    assert "一次性初始密码" in page.content()
    shot(page, "06b-admin-one-time-password")
    page.goto(page.base_url + "/admin/staff_admin/new/")
    shot(page, "07-admin-new-staff")
    assert page.console_errors == []


def _sign_in(page, handle):
    page.goto(page.base_url + "/auth/login")
    page.fill("#employee_no", handle.employee_no)
    page.fill("#password", handle.password)
    page.keyboard.press("Enter")
    page.wait_for_url("**/auth/totp")
    page.fill("#code", totp_code(handle))
    page.keyboard.press("Enter")
    page.wait_for_url(page.base_url + "/")


def _focused(page) -> str:
    return page.evaluate("(() => { const a = document.activeElement; return a.id || a.name || a.textContent.trim(); })()")


def test_teller_flow_by_keyboard_from_search_to_next_customer(browser_page, app):
    """The counter flow with the keyboard only: each step lands on the next form; a typo and a
    missing photo tick are slips shown on their fields; closing asks first; then the receipt and
    the next customer, with the focus back in the search box."""
    from .conftest import ID_NUMBERS, get_wallet, make_wallet, sign_in_wallet

    page = browser_page
    wallet_no = make_wallet(name="李娜")
    for _ in range(5):
        sign_in_wallet(wallet_no, "wrong-password")
    from console.extensions import db

    db.session.commit()
    _sign_in(page, make_staff("teller"))
    page.keyboard.press("Tab")
    assert _focused(page) == "跳到主要内容"  # the skip link comes first
    page.keyboard.press("/")  # "/" finds a customer from any page
    page.wait_for_url("**/desk/")
    assert _focused(page) == "value" and page.get_attribute("nav a[href='/desk/']", "aria-current") == "page"
    page.keyboard.type(" ".join(wallet_no[i:i + 4] for i in range(0, len(wallet_no), 4)))
    shot(page, "10-desk-search")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_url("**/desk/customers/*")  # one match: the customer at once
    assert "李*" in page.content() and wallet_no not in page.url and "连续 5 次密码错误" in page.content()
    shot(page, "12-customer")
    with page.expect_navigation():
        page.keyboard.press("Enter")  # the focus is on "open a case"
    page.wait_for_url("**/desk/cases/*")
    assert _focused(page) == "id_number"
    shot(page, "13-case-verify")
    right = ID_NUMBERS[wallet_no]
    page.keyboard.type(right[:-1] + ("1" if right[-1] != "1" else "2"))  # a typo; the photo box left unticked
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.is_visible("#id_number-error") and page.is_visible("#photo_matches-error")
    assert page.input_value("#id_number") != ""  # what was typed is kept
    shot(page, "13b-case-slips")
    page.fill("#id_number", right)
    page.focus("#photo_matches")
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_load_state("load")
    assert "已通过证件核验身份" in page.content() and "/verify" not in page.url
    prefix = f"w{get_wallet(wallet_no).id}-unlock"
    db.session.commit()  # no read left open: SQLite's writer lock must stay free for the server
    page.wait_for_function(f"document.activeElement.id === '{prefix}-confirm'")  # the reason is chosen already
    assert page.input_value(f"#{prefix}-reason_code") == "locked_after_wrong_passwords"
    assert page.evaluate(f"document.getElementById('{prefix}-confirm').getBoundingClientRect().bottom") < 860
    shot(page, "14-case-verified")
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "已办理：解锁钱包" in page.content()
    page.wait_for_function("document.activeElement.href && document.activeElement.href.endsWith('/close')")
    shot(page, "15-case-unlocked")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "办结 李* 的受理单？" in page.content() and "解锁钱包" in page.inner_text("#confirm-close")
    shot(page, "15b-close-confirm")
    with page.expect_navigation():
        page.keyboard.press("Enter")  # "close and issue the receipt" has the focus
    assert "已生成业务回单" in page.content()
    page.wait_for_function("document.activeElement.textContent.trim() === '打印业务回单'")
    shot(page, "16-case-closed")
    with page.context.expect_page() as receipt:
        page.keyboard.press("Enter")
    receipt.value.close()
    page.wait_for_function("document.activeElement.id === 'next-customer'")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_url("**/desk/")
    assert _focused(page) == "value"
    assert get_wallet(wallet_no).lock_kind is None
    db.session.commit()
    # The slips' page is answered 422 (Chrome logs that as a failed load); nothing else.
    assert [e for e in page.console_errors if "status of 422" not in e] == []


def test_idle_warning_keeps_the_session_or_returns_to_the_page_with_the_note(browser_page, app):
    """Warned before the idle timeout; "stay signed in" keeps the session. Left alone, the console
    signs out; signing in again returns to the case with the typed note (never a number)."""
    from datetime import timedelta

    from console import timeutil
    from console.extensions import db

    from .conftest import get_wallet, make_wallet

    page = browser_page
    handle = make_staff("teller")
    customer_no = get_wallet(make_wallet()).customer.customer_no
    db.session.commit()  # no read left open: SQLite's writer lock must stay free for the server
    page.clock.install()
    _sign_in(page, handle)
    page.goto(page.base_url + f"/desk/customers/{customer_no}")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    case_url = page.url
    assert not page.is_visible("#idle-warning")
    page.clock.run_for("13:01")  # two minutes before the 15-minute idle timeout
    page.wait_for_selector("#idle-warning", state="visible")
    assert _focused(page).startswith("保持登录") or page.evaluate("document.activeElement.hasAttribute('data-stay-signed-in')")
    shot(page, "17-idle-warning")
    with page.expect_response("**/auth/keep-alive") as kept:
        page.keyboard.press("Enter")
    assert kept.value.status == 200
    page.wait_for_selector("#idle-warning", state="hidden")

    page.fill("#text", "客户稍后再来")  # a case note: kept
    page.fill("#id_number", "110105")  # an ID number: never kept
    timeutil.set_offset(timedelta(minutes=16))  # the server's session ends too
    with page.expect_navigation():
        page.clock.run_for("15:01")
    page.wait_for_url("**/auth/login?next=*")
    assert "next=%2Fdesk%2Fcases%2F" in page.url
    page.fill("#employee_no", handle.employee_no)
    page.fill("#password", handle.password)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.fill("#code", totp_code(handle))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_url(case_url.split("#")[0] + "*")
    assert page.input_value("#text") == "客户稍后再来" and page.input_value("#id_number") == ""
    assert page.console_errors == []


def test_supervisor_sees_the_approval_queue(browser_page, app):
    page = browser_page
    _sign_in(page, make_staff("supervisor"))
    page.click("text=授权审批")
    page.wait_for_url("**/desk/approvals")
    assert "暂无待审批申请" in page.content()
    shot(page, "17-approvals-empty")
    assert page.console_errors == []


def test_auditor_pages_render_without_errors(browser_page, app):
    from console.extensions import db
    from console.services import audit
    from console.services.actor import Actor

    actor = Actor(kind="staff", employee_no="T1001", role="teller", branch_code="BJ-001", channel="counter")
    for i in range(30):
        audit.record(db.session, actor, "wallet.unlock" if i % 3 else "access.denied",
                     outcome="success" if i % 3 else "denied", customer_ref="C000000007")
    db.session.commit()
    page = browser_page
    _sign_in(page, make_staff("auditor", branch_code="HO-000"))
    for path, name in (("/audit/events", "20-audit-search"), ("/audit/events/3", "21-audit-event"),
                       ("/audit/dashboard", "22-audit-dashboard"), ("/audit/chain", "23-audit-chain"),
                       ("/audit/browse/audit_browser_events/", "24-audit-browser")):
        page.goto(page.base_url + path)
        shot(page, name)
        assert "错误 500" not in page.content(), path
    assert page.console_errors == []


def test_teller_sees_and_clears_an_interrupted_sign_in(browser_page, app):
    """A sign-in whose worker died shows on the customer page; the teller clears it with the keyboard."""
    from datetime import timedelta

    from console import faults, timeutil
    from console.extensions import db
    from console.services import wallet_signin

    from .conftest import WALLET_PASSWORD, get_wallet, make_wallet

    class Died(BaseException):
        pass

    def die(point):
        raise Died(point)

    wallet_no = make_wallet()
    with faults.installed("signin.checked", die), pytest.raises(Died):
        wallet_signin.authenticate(db.session, wallet_no, WALLET_PASSWORD, commit=db.session.commit,
                                   source_ip="198.51.100.7")
    db.session.remove()
    timeutil.set_offset(timedelta(seconds=app.config["WALLET_CLAIM_TTL_SECONDS"] + 1))
    customer_no = get_wallet(wallet_no).customer.customer_no
    page = browser_page
    _sign_in(page, make_staff("teller"))
    page.goto(page.base_url + f"/desk/customers/{customer_no}")
    assert "1 笔已中断" in page.content()
    shot(page, "06-interrupted-sign-in")
    page.focus("text=立即清除中断的登录")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "已清除 1 笔中断的登录" in page.content()
    assert "立即清除中断的登录" not in page.content()
    shot(page, "07-interrupted-sign-in-cleared")
    assert page.console_errors == []
