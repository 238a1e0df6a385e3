"""Issue #11 parts 5 and 6: limits per person and per address across channels, the SMS cap per
customer, the phone-verification permission, and own-case / same-branch scope."""
import json
import re
from datetime import timedelta

import pytest

from console import timeutil
from console.extensions import db
from console.models.notification import Notification
from console.models.service import Case, CaseNote, Receipt, Verification

from .conftest import (IsolatedClient, audit_events, csrf_token, make_staff, make_wallet, post_form, sign_in,
                       totp_code)
from console import create_app

API = "/api/v1"
ADDRESS_A = {"REMOTE_ADDR": "192.0.2.10"}
ADDRESS_B = {"REMOTE_ADDR": "192.0.2.20"}


@pytest.fixture
def limited(database_url, tmp_path):
    """An app with limits on; each test sets the numbers it exercises."""
    def build(**limits):
        settings = {"DATABASE_URL": database_url, "SERVER_NAME": None, "RATELIMIT_ENABLED": True,
                    "LIMIT_STAFF_SIGNIN": "100 per minute", "LIMIT_SEARCH": "100 per minute",
                    "LIMIT_OTP_SEND": "100 per 10 minutes", "LIMIT_OTP_PER_CUSTOMER": "100 per 10 minutes",
                    **limits}
        app = create_app("testing", settings)
        app.test_client_class = IsolatedClient
        app.instance_path = str(tmp_path / "instance")
        return app
    built = []

    def factory(**limits):
        app = build(**limits)
        ctx = app.app_context()
        ctx.push()
        built.append(ctx)
        return app
    yield factory
    for ctx in reversed(built):
        db.session.remove()
        db.engine.dispose()
        ctx.pop()


def _token(client, handle, environ=None):
    response = client.post(API + "/tokens", json={"employee_no": handle.employee_no, "password": handle.password,
                                                  "totp_code": totp_code(handle)}, environ_base=environ or {})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["token"]


def _form_login(client, employee_no, password, environ):
    return client.post("/auth/login", data={"employee_no": employee_no, "password": password,
                                            "csrf_token": csrf_token(client)}, environ_base=environ)


def _bearer(token):
    return {"Authorization": f"Bearer {token}"}


def _customer_no(client, wallet_no):
    page = post_form(client, "/desk/search", {"kind": "wallet_no", "id_type": "resident_id", "value": wallet_no},
                     token_from="/desk/").get_data(as_text=True)
    return re.search(r"/desk/customers/(C\d+)", page).group(1)


def _open_case(client, wallet_no):
    customer_no = _customer_no(client, wallet_no)
    response = post_form(client, f"/desk/customers/{customer_no}/cases", {}, token_from=f"/desk/customers/{customer_no}")
    assert response.status_code == 302
    return response.headers["Location"].rsplit("/", 1)[1]


def _staff_row(handle):
    from console.models.staff import Staff

    db.session.expire_all()
    row = db.session.get(Staff, handle.id)
    db.session.rollback()
    return row


# --- part 5: credentials per address and per person, whatever the channel ---------------------


def test_form_429_refuses_api_tokens_from_that_address_without_checking_credentials(limited):
    app = limited(LIMIT_STAFF_SIGNIN="3 per minute")
    client = app.test_client()
    handle = make_staff("teller")
    assert [_form_login(client, "X9", "x", ADDRESS_A).status_code for _ in range(4)] == [200, 200, 200, 429]
    refused = client.post(API + "/tokens", json={"employee_no": handle.employee_no, "password": "wrong-password-1",
                                                 "totp_code": "123456"}, environ_base=ADDRESS_A)
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "rate_limited"
    # The refusal says when the minute's window ends; answers within the limits carry no counters.
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert not [name for name in refused.headers.keys() if name.lower().startswith("x-ratelimit")]
    assert _staff_row(handle).failed_signins == 0  # the password was never checked
    assert not [e for e in audit_events("staff.signin") if e.actor_employee_no == handle.employee_no]
    # Another address is not affected.
    assert client.post(API + "/tokens", json={"employee_no": handle.employee_no, "password": handle.password,
                                              "totp_code": totp_code(handle)}, environ_base=ADDRESS_B).status_code == 201


def test_one_persons_credential_checks_are_counted_across_channels_and_addresses(limited):
    app = limited(LIMIT_STAFF_SIGNIN="3 per minute")
    client = app.test_client()
    handle = make_staff("teller")
    for _ in range(2):
        assert _form_login(client, handle.employee_no, "wrong", ADDRESS_A).status_code == 200
    client.post(API + "/tokens", json={"employee_no": handle.employee_no, "password": "wrong-again",
                                       "totp_code": "123456"}, environ_base=ADDRESS_B)
    failed = _staff_row(handle).failed_signins
    assert failed == 3
    # The fourth check of this person, from yet another address and channel: refused unchecked.
    blocked = client.post(API + "/tokens", json={"employee_no": handle.employee_no, "password": handle.password,
                                                 "totp_code": "123456"}, environ_base={"REMOTE_ADDR": "192.0.2.30"})
    assert blocked.status_code == 429
    assert _staff_row(handle).failed_signins == failed
    assert audit_events("rate_limited")[-1].outcome == "denied"


# --- part 5: SMS codes per person across channels, and per customer across staff -----------------


def _phone_case_api(client, token, wallet_no):
    found = client.post(API + "/customers/search", json={"kind": "wallet_no", "value": wallet_no},
                        headers=_bearer(token))
    customer_no = found.get_json()["customers"][0]["customer_no"]
    opened = client.post(API + f"/customers/{customer_no}/cases", headers=_bearer(token))
    assert opened.status_code == 201, opened.get_json()
    return opened.get_json()["case_no"]


def _console_codes(client, case_no, n):
    """Start a phone verification, then resend: n codes in all."""
    codes = [post_form(client, f"/desk/cases/{case_no}/verify/phone", {}, token_from=f"/desk/cases/{case_no}").status_code]
    for _ in range(n - 1):
        codes.append(post_form(client, f"/desk/cases/{case_no}/verify/phone/resend", {},
                               token_from=f"/desk/cases/{case_no}").status_code)
    return codes


def _codes_sent():
    db.session.expire_all()
    count = db.session.query(Notification).filter_by(kind="verification_code").count()
    db.session.rollback()
    return count


def test_one_agents_sms_codes_are_counted_across_console_and_api(limited):
    app = limited(LIMIT_OTP_SEND="5 per 10 minutes")
    wallet_no = make_wallet()
    handle = make_staff("agent", branch_code="CC-95588")
    console, api = app.test_client(), app.test_client()
    sign_in(console, handle)
    case_no = _open_case(console, wallet_no)
    assert _console_codes(console, case_no, 5) == [302] * 5
    token = _token(api, handle)
    api_case = _phone_case_api(api, token, wallet_no)
    refused = api.post(API + f"/cases/{api_case}/verifications/phone", headers=_bearer(token))
    assert refused.status_code == 429
    assert _codes_sent() == 5


def test_sms_codes_to_one_customer_are_capped_across_staff_and_channels(app, client):
    """Limits per person are off here (the testing default): the cap is the service's."""
    wallet_no = make_wallet()
    first = make_staff("agent", branch_code="CC-95588")
    second = make_staff("agent", branch_code="CC-95588")
    sign_in(client, first)
    case_no = _open_case(client, wallet_no)
    assert _console_codes(client, case_no, 3) == [302] * 3
    api = app.test_client()
    token = _token(api, second)
    api_case = _phone_case_api(api, token, wallet_no)
    assert [api.post(API + f"/cases/{api_case}/verifications/phone", headers=_bearer(token)).status_code
            for _ in range(2)] == [201, 201]
    assert _codes_sent() == 5
    refused = api.post(API + f"/cases/{api_case}/verifications/phone", headers=_bearer(token))
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "customer_sms_cap"
    # Retry when the oldest of the five leaves the 10-minute window: about ten minutes from now, and
    # less once time has passed.
    retry = int(refused.headers["Retry-After"])
    assert 590 <= retry <= 600 and refused.get_json()["error"]["details"]["retry_after_seconds"] == retry
    timeutil.set_offset(timedelta(minutes=4))
    later = api.post(API + f"/cases/{api_case}/verifications/phone", headers=_bearer(token))
    assert later.status_code == 429 and 350 <= int(later.headers["Retry-After"]) <= 360
    timeutil.set_offset(timedelta(0))
    page = post_form(client, f"/desk/cases/{case_no}/verify/phone/resend", {}, token_from=f"/desk/cases/{case_no}",
                     follow=True).get_data(as_text=True)
    assert "verification codes allowed" in page or "验证码" in page
    assert _codes_sent() == 5
    events = [e for e in audit_events("verification.code_sent") if e.outcome == "denied"]
    assert len(events) == 3 and {e.reason_code for e in events} == {"customer_sms_cap"}
    assert json.loads(events[0].details)["codes_sent_in_window"] == 5


def test_searches_are_counted_per_person_across_console_and_api(limited):
    app = limited(LIMIT_SEARCH="2 per minute")
    handle = make_staff("teller")
    console, api = app.test_client(), app.test_client()
    sign_in(console, handle)
    token = _token(api, handle, environ=ADDRESS_B)
    assert post_form(console, "/desk/search", {"kind": "wallet_no", "id_type": "resident_id", "value": "1"},
                     token_from="/desk/").status_code == 200
    assert api.post(API + "/customers/search", json={"kind": "wallet_no", "value": "1"}, headers=_bearer(token),
                    environ_base=ADDRESS_B).status_code == 200
    assert api.post(API + "/customers/search", json={"kind": "wallet_no", "value": "1"}, headers=_bearer(token),
                    environ_base=ADDRESS_B).status_code == 429


# --- part 6: the phone-verification permission -----------------------------------------------------


def test_teller_is_refused_phone_check_and_resend_with_a_403(app, client, login_as):
    wallet_no = make_wallet()
    teller = login_as("teller")
    case_no = _open_case(client, wallet_no)
    for path in ("verify/phone/check", "verify/phone/resend", "verify/phone"):
        response = post_form(client, f"/desk/cases/{case_no}/{path}", {"code": "123456"},
                             token_from=f"/desk/cases/{case_no}")
        assert response.status_code == 403, path
    denied = [e for e in audit_events("verification.phone") if e.outcome == "denied"]
    assert len(denied) == 3 and {e.reason_code for e in denied} == {"not_permitted"}
    api = app.test_client()
    token = _token(api, teller)
    refused = api.post(API + f"/cases/{case_no}/verifications/phone/check",
                       json={"code": "123456", "answers": {}}, headers=_bearer(token))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "not_permitted"
    assert _codes_sent() == 0


# --- part 6: own cases, own receipts, own branch ---------------------------------------------------


def _notes(case_no):
    db.session.expire_all()
    case = db.session.query(Case).filter_by(case_no=case_no).one()
    count = db.session.query(CaseNote).filter_by(case_id=case.id).count()
    db.session.rollback()
    return count


def test_a_teller_cannot_act_on_a_colleagues_case_but_a_branch_supervisor_can(app, client):
    wallet_no = make_wallet()
    owner, colleague, supervisor = make_staff("teller"), make_staff("teller"), make_staff("supervisor")
    sign_in(client, owner)
    case_no = _open_case(client, wallet_no)
    other = app.test_client()
    sign_in(other, colleague)
    post_form(other, f"/desk/cases/{case_no}/notes", {"text": "not mine"}, token_from=f"/desk/cases/{case_no}")
    post_form(other, f"/desk/cases/{case_no}/verify/counter",
              {"id_type": "resident_id", "id_number": "110105198503140011", "photo_matches": "y"},
              token_from=f"/desk/cases/{case_no}")
    assert _notes(case_no) == 0
    assert db.session.query(Verification).count() == 0
    db.session.rollback()
    denied = [e for e in audit_events() if e.reason_code == "not_your_case"]
    assert [e.action for e in denied] == ["case.note", "verification.counter"]
    assert all(e.actor_employee_no == colleague.employee_no and e.case_ref == case_no for e in denied)
    boss = app.test_client()
    sign_in(boss, supervisor)
    post_form(boss, f"/desk/cases/{case_no}/notes", {"text": "主管备注"}, token_from=f"/desk/cases/{case_no}")
    assert _notes(case_no) == 1


def test_receipts_print_for_their_owner_and_the_branch_supervisor_only(app, client):
    wallet_no = make_wallet()
    owner, colleague, supervisor = make_staff("teller"), make_staff("teller"), make_staff("supervisor")
    sign_in(client, owner)
    case_no = _open_case(client, wallet_no)
    post_form(client, f"/desk/cases/{case_no}/close", {"no_action_reason": "enquiry_only"},
              token_from=f"/desk/cases/{case_no}/close")
    receipt_no = db.session.query(Receipt).one().receipt_no
    db.session.rollback()
    url = f"/desk/receipts/{receipt_no}.pdf"
    other = app.test_client()
    sign_in(other, colleague)
    assert post_form(other, url, {}, token_from="/desk/").status_code == 403
    event = [e for e in audit_events("receipt.print") if e.outcome == "denied"][-1]
    assert event.reason_code == "not_your_receipt" and event.actor_employee_no == colleague.employee_no
    boss = app.test_client()
    sign_in(boss, supervisor)
    assert post_form(boss, url, {}, token_from="/desk/").status_code == 200
    assert post_form(client, url, {}, token_from="/desk/").status_code == 200


def test_customer_page_lists_only_own_branch_cases(app, client):
    wallet_no = make_wallet()
    here, there = make_staff("teller"), make_staff("teller", branch_code="SH-002")
    away = app.test_client()
    sign_in(away, there)
    far_case = _open_case(away, wallet_no)
    sign_in(client, here)
    near_case = _open_case(client, wallet_no)
    customer_no = _customer_no(client, wallet_no)
    page = client.get(f"/desk/customers/{customer_no}").get_data(as_text=True)
    assert near_case in page and far_case not in page
    assert "其他网点的受理单：1 张" in page
    page = away.get(f"/desk/customers/{customer_no}").get_data(as_text=True)
    assert far_case in page and near_case not in page
