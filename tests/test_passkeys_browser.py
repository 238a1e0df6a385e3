"""Security keys in headless Chromium with its virtual authenticator (DevTools protocol, CTAP2):
enrol a key from the profile page, sign out, sign in with password + key; a role the policy binds
to keys enrols one before its first session. Real ceremonies: the
browser's authenticator signs, the server's ``webauthn`` library verifies. WebAuthn takes no IP
address as relying party, so the live server is opened as http://localhost:PORT."""
import pytest

from console.extensions import db
from console.models.staff import Staff
from console.services import passkeys

from .browser import CHROMIUM_ARGS, LiveServer, chromium_or_skip, shot
from .conftest import audit_events, make_staff, totp_code
from .test_accessibility import Accessibility

pytestmark = [pytest.mark.browser, pytest.mark.sqlite_only]


@pytest.fixture
def page(app, backend):
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with LiveServer(app) as server, sync_playwright() as pw:
        base_url = f"http://localhost:{server.server.server_port}"
        app.config["WEBAUTHN_ORIGINS"] = (base_url,)
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
        tab = context.new_page()
        tab.base_url = base_url
        tab.console_errors = []
        tab.on("console", lambda msg: tab.console_errors.append(msg.text) if msg.type == "error" else None)
        cdp = context.new_cdp_session(tab)
        cdp.send("WebAuthn.enable", {"enableUI": False})
        tab.authenticator = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "usb", "hasResidentKey": True, "hasUserVerification": True,
            "isUserVerified": True, "automaticPresenceSimulation": True}})["authenticatorId"]
        tab.cdp = cdp
        yield tab
        context.close()
        browser.close()


def _password(page, handle, then):
    page.goto(page.base_url + "/auth/login")
    page.fill("#employee_no", handle.employee_no)
    page.fill("#password", handle.password)
    page.keyboard.press("Enter")
    page.wait_for_url(f"**{then}")


def test_enrol_a_key_then_sign_in_with_it(page, app):
    handle = make_staff("supervisor")
    _password(page, handle, "/auth/totp")
    page.fill("#code", totp_code(handle))
    page.keyboard.press("Enter")
    page.wait_for_url(page.base_url + "/")

    page.get_by_role("link", name="安全密钥").click()
    page.wait_for_url("**/profile/keys/")
    shot(page, "60-keys-empty")
    a11y = Accessibility(page.base_url)
    # A refusal in the browser (the PIN not given) is said in words, and nothing is enrolled.
    page.cdp.send("WebAuthn.setUserVerified", {"authenticatorId": page.authenticator, "isUserVerified": False})
    page.fill("#name", "柜台 USB 密钥")
    page.fill("#password", handle.password)
    page.get_by_role("button", name="登记安全密钥").click()
    status = page.locator("[data-webauthn-status]")
    status.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('[data-webauthn-status]').className === 'error'")
    assert "未使用安全密钥" in status.inner_text()
    shot(page, "61-keys-cancelled")
    a11y(page, "keys page, the browser refused")
    page.cdp.send("WebAuthn.setUserVerified", {"authenticatorId": page.authenticator, "isUserVerified": True})
    page.get_by_role("button", name="登记安全密钥").click()
    page.wait_for_selector("td strong:has-text('柜台 USB 密钥')")
    shot(page, "62-keys-enrolled")
    a11y(page, "keys page, one key", reflow=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    db.session.expire_all()
    assert [k.name for k in passkeys.passkeys_of(db.session, db.session.get(Staff, handle.id))] == ["柜台 USB 密钥"]
    db.session.rollback()

    page.get_by_role("button", name="退出").click()
    page.wait_for_url("**/auth/login")
    _password(page, handle, "/auth/key")
    shot(page, "63-signin-key")
    a11y(page, "sign-in, security key step")
    page.get_by_role("button", name="使用我的安全密钥").click()
    page.wait_for_url(page.base_url + "/")
    assert audit_events("staff.passkey_assert")[-1].outcome == "success"
    assert audit_events("staff.signin")[-1].outcome == "success"
    db.session.rollback()  # end the read: SQLite's writer (the server) must not wait for it

    # A role the policy binds to keys, without one yet: the code this once, then a key before the session.
    app.config["STAFF_KEY_REQUIRED_ROLES"] = ("auditor",)
    page.get_by_role("button", name="退出").click()
    page.wait_for_url("**/auth/login")
    auditor = make_staff("auditor", branch_code="HO-000")
    _password(page, auditor, "/auth/totp")
    page.fill("#code", totp_code(auditor))
    page.keyboard.press("Enter")
    page.wait_for_url("**/auth/key/enrol")
    shot(page, "64-signin-enrol-required")
    a11y(page, "sign-in, key required, enrol")
    page.fill("#name", "审计员密钥")
    page.get_by_role("button", name="登记并登录").click()
    page.wait_for_url(page.base_url + "/")
    assert audit_events("staff.passkey_enrol")[-1].actor_employee_no == auditor.employee_no
    assert page.console_errors == []
    assert a11y.failures == []
