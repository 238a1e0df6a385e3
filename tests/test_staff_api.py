"""Staff JSON API: tokens after password + TOTP, the same services, checks and audit as the pages."""
import re
from datetime import timedelta

import pytest

from console import timeutil
from console.extensions import db
from console.models.notification import Notification
from console.models.staff import Staff
from console.services import staff_admin
from console.services.actor import Actor
from console.services.notifications import message_text

from .conftest import ID_NUMBERS, WALLET_PASSWORD, audit_events, get_wallet, make_staff, make_wallet, sign_in_wallet, totp_code

API = "/api/v1"


def _token(client, handle):
    response = client.post(API + "/tokens", json={"employee_no": handle.employee_no, "password": handle.password,
                                                  "totp_code": totp_code(handle)})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["token"]


@pytest.fixture
def api(app, client):
    def call(method, path, token, body=None):
        return client.open(API + path, method=method, json=body, headers={"Authorization": f"Bearer {token}"})
    return call


def test_token_needs_password_and_totp(app, client):
    handle = make_staff("teller")
    wrong = client.post(API + "/tokens", json={"employee_no": handle.employee_no, "password": handle.password,
                                               "totp_code": "000000"})
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "invalid_credentials"
    bad = client.post(API + "/tokens", json={"employee_no": handle.employee_no, "password": "nope", "totp_code": "123456"})
    assert bad.status_code == 401
    assert client.post(API + "/tokens", json={"employee_no": 5}).status_code == 422
    token = _token(client, handle)
    assert len(token) > 30
    assert audit_events("staff.signin")[-1].details == '{"session_kind":"api"}'


def test_tokens_time_out_are_revocable_and_die_with_the_account(app, client, api):
    handle = make_staff("teller")
    token = _token(client, handle)
    assert api("GET", "/approvals", token).status_code == 403  # authenticated, but not a supervisor
    timeutil.set_offset(timedelta(minutes=16))
    expired = api("GET", "/approvals", token)
    assert expired.status_code == 401 and expired.get_json()["error"]["details"]["reason"] == "idle_timeout"
    timeutil.set_offset(timedelta(minutes=17))
    token = _token(client, handle)
    assert api("DELETE", "/tokens/current", token).get_json() == {"result": "revoked"}
    assert api("GET", "/approvals", token).status_code == 401
    token = _token(client, handle)
    admin = make_staff("admin", branch_code="HO-000")
    staff_admin.set_staff_active(db.session, Actor.for_staff(db.session.get(Staff, admin.id)),
                                 db.session.get(Staff, handle.id), False)
    db.session.commit()
    assert api("GET", "/approvals", token).status_code == 401


def test_a_web_session_cookie_is_not_an_api_token(app, client, login_as, api):
    login_as("teller")
    assert client.get(API + "/approvals").status_code == 401
    assert api("GET", "/approvals", "not-a-token").status_code == 401


def test_counter_unlock_through_the_api(app, client, api):
    wallet_no = make_wallet()
    for _ in range(5):
        sign_in_wallet(wallet_no, "wrong-password")
    token = _token(client, make_staff("teller"))
    found = api("POST", "/customers/search", token, {"kind": "wallet_no", "value": wallet_no}).get_json()
    customer = found["customers"][0]
    assert customer["wallets"][0]["lock_kind"] == "temporary" and "*" in customer["id_number"]
    case = api("POST", f"/customers/{customer['customer_no']}/cases", token).get_json()
    refused = api("POST", f"/cases/{case['case_no']}/operations", token,
                  {"wallet_no": wallet_no, "operation": "unlock", "reason_code": "forgot_password"})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "verification_missing_or_expired"
    proof = api("POST", f"/cases/{case['case_no']}/verifications/counter", token,
                {"id_type": "resident_id", "id_number": ID_NUMBERS[wallet_no], "photo_matches": True}).get_json()
    assert proof["status"] == "passed" and proof["strength"] == "strong"
    done = api("POST", f"/cases/{case['case_no']}/operations", token,
               {"wallet_no": wallet_no, "operation": "unlock", "reason_code": "forgot_password"})
    assert done.status_code == 200 and done.get_json()["wallet"]["lock_kind"] is None
    assert sign_in_wallet(wallet_no, WALLET_PASSWORD).result == "ok"
    closed = api("POST", f"/cases/{case['case_no']}/close", token).get_json()
    assert closed["receipt_no"].startswith("R") and closed["status"] == "closed"
    assert [e.outcome for e in audit_events("wallet.unlock")] == ["denied", "success"]


def test_phone_2fa_reset_via_api_with_approval(app, client, api):
    wallet_no = make_wallet()
    agent, supervisor = make_staff("agent", branch_code="CC-95588"), make_staff("supervisor", branch_code="CC-95588")
    agent_token, sup_token = _token(client, agent), _token(client, supervisor)
    customer_no = get_wallet(wallet_no).customer.customer_no
    case_no = api("POST", f"/customers/{customer_no}/cases", agent_token).get_json()["case_no"]
    started = api("POST", f"/cases/{case_no}/verifications/phone", agent_token).get_json()
    code = re.search(r"验证码为(\d{6})", message_text(
        db.session.query(Notification).filter_by(kind="verification_code").one())).group(1)
    answers = {"mother_birthplace": "杭州", "first_school": "实验小学"}
    checked = api("POST", f"/cases/{case_no}/verifications/phone/check", agent_token,
                  {"code": code, "answers": {q: answers[q] for q in started["questions"]}}).get_json()
    assert checked["status"] == "passed" and checked["strength"] == "medium"
    filed = api("POST", f"/cases/{case_no}/operations", agent_token,
                {"wallet_no": wallet_no, "operation": "reset_2fa", "reason_code": "lost_phone"})
    assert filed.status_code == 202
    approval_id = filed.get_json()["approval_id"]
    queue = api("GET", "/approvals", sup_token).get_json()["approvals"]
    assert [a["approval_id"] for a in queue] == [approval_id]
    assert queue[0]["evidence"]["verification"]["strength"] == "medium"
    no_note = api("POST", f"/approvals/{approval_id}/decision", sup_token, {"decision": "approve", "note": ""})
    assert no_note.status_code == 422
    ok = api("POST", f"/approvals/{approval_id}/decision", sup_token, {"decision": "approve", "note": "回访确认"})
    assert ok.get_json()["status"] == "executed"
    assert get_wallet(wallet_no).active_binding is None
    again = api("POST", f"/approvals/{approval_id}/decision", sup_token, {"decision": "approve", "note": "x"})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_decided"


def test_other_branch_case_is_404(app, client, api):
    wallet_no = make_wallet()
    owner = _token(client, make_staff("teller", branch_code="BJ-001"))
    other = _token(client, make_staff("teller", branch_code="SH-002"))
    customer_no = get_wallet(wallet_no).customer.customer_no
    case_no = api("POST", f"/customers/{customer_no}/cases", owner).get_json()["case_no"]
    response = api("GET", f"/cases/{case_no}", other)
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    assert audit_events("case.view")[-1].outcome == "denied"


def test_roles_are_enforced_on_the_api(app, client, api):
    make_wallet()
    auditor = _token(client, make_staff("auditor", branch_code="HO-000"))
    response = api("POST", "/customers/search", auditor, {"kind": "wallet_no", "value": "0031"})
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "not_permitted"
    assert audit_events("customer.search")[-1].outcome == "denied"


@pytest.mark.parametrize("body", [None, [1], {"kind": "wallet_no"}, {"kind": "shoe", "value": "1"},
                                  {"kind": "mobile", "value": "123"}, {"kind": "wallet_no", "value": 5}])
def test_bad_input_is_a_4xx_with_a_code(app, client, api, body):
    token = _token(client, make_staff("teller"))
    response = api("POST", "/customers/search", token, body)
    assert 400 <= response.status_code < 500 and response.get_json()["error"]["code"]
    assert response.get_json()["error"]["request_id"] == response.headers["X-Request-ID"]


def test_openapi_describes_exactly_the_real_routes(app, client):
    document = client.get(API + "/openapi.json").get_json()
    described = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    real = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(API + "/"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule[len(API):])
            real |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert described == real
