"""The wallet API: service key, sign-in results, password changes, questions, and bad input."""
import json
import re

import pytest

from console import timeutil
from console.extensions import db
from console.models.notification import Notification
from console.services import wallet_credentials
from console.services.actor import Actor
from console.services.notifications import message_text

from .conftest import WALLET_PASSWORD, audit_events, get_wallet, make_wallet

API = "/api/wallet/v1"


@pytest.fixture
def api(app, client):
    key = app.config["WALLET_SERVICE_KEY"]

    def call(method, path, body=None, *, headers=None, raw=None, content_type="application/json"):
        hdrs = {"Authorization": f"Bearer {key}", **(headers or {})}
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        return client.open(API + path, method=method, data=data, headers=hdrs, content_type=content_type)
    return call


def test_service_key_is_required(app, client, api):
    wallet_no = make_wallet()
    body = json.dumps({"wallet_no": wallet_no, "password": WALLET_PASSWORD})
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        response = client.post(API + "/sign-in", data=body, headers=headers, content_type="application/json")
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"
    assert api("POST", "/sign-in", {"wallet_no": wallet_no, "password": WALLET_PASSWORD}).status_code == 200


def test_cookies_do_not_authenticate_the_api(app, client, login_as):
    login_as("teller")
    response = client.post(API + "/sign-in", data="{}", content_type="application/json")
    assert response.status_code == 401


def test_sign_in_results(app, api):
    wallet_no = make_wallet()
    ok = api("POST", "/sign-in", {"wallet_no": wallet_no, "password": WALLET_PASSWORD, "client_ip": "198.51.100.1"})
    assert ok.get_json() == {"result": "ok", "wallet_no": wallet_no}
    bad = api("POST", "/sign-in", {"wallet_no": wallet_no, "password": "wrong-pass"}).get_json()
    assert bad == {"result": "invalid_credentials", "wallet_no": wallet_no, "remaining_attempts": 4}
    for _ in range(4):
        last = api("POST", "/sign-in", {"wallet_no": wallet_no, "password": "wrong-pass"}).get_json()
    assert last["result"] == "locked" and last["reason"] == "too_many_failures" and last["unlock"] == "automatic"
    assert last["locked_until"].startswith(str(get_wallet(wallet_no).lock_until.year))


def test_frozen_and_expired_results(app, api):
    wallet_no = make_wallet()
    for i in range(20):
        api("POST", "/sign-in", {"wallet_no": wallet_no, "password": "wrong", "client_ip": f"203.0.113.{i % 5}"})
    frozen = api("POST", "/sign-in", {"wallet_no": wallet_no, "password": WALLET_PASSWORD}).get_json()
    assert frozen["result"] == "frozen" and frozen["reason"] == "risk_freeze"
    other = make_wallet(name="陈静")
    timeutil.set_offset(__import__("datetime").timedelta(days=400))
    assert api("POST", "/sign-in", {"wallet_no": other, "password": WALLET_PASSWORD}).get_json()["result"] == "password_expired"


def test_change_password_enforces_every_rule(app, api):
    wallet_no = make_wallet(mobile="13912345678")
    wallet = get_wallet(wallet_no)
    from console.services.customers import customer_id_number

    id_number = customer_id_number(wallet.customer)
    cases = {
        "short1": "too_short",
        "password123": "common",
        "ab13912345678": "contains_mobile",
        f"x{id_number}": "contains_id_number",
        "born19850314!": "contains_birth_date",
        WALLET_PASSWORD: "reused",
    }
    for candidate, rule in cases.items():
        response = api("POST", "/change-password", {"wallet_no": wallet_no, "current_password": WALLET_PASSWORD,
                                                    "new_password": candidate})
        assert response.status_code == 422, candidate
        body = response.get_json()["error"]
        assert body["code"] == "password_policy" and rule in body["details"]["rules"], (candidate, body)
    ok = api("POST", "/change-password", {"wallet_no": wallet_no, "current_password": WALLET_PASSWORD,
                                          "new_password": "Autumn-leaf-9753"})
    assert ok.status_code == 200 and ok.get_json()["result"] == "password_changed"
    assert api("POST", "/sign-in", {"wallet_no": wallet_no, "password": "Autumn-leaf-9753"}).get_json()["result"] == "ok"
    assert api("POST", "/sign-in", {"wallet_no": wallet_no, "password": WALLET_PASSWORD}).get_json()["result"] == "invalid_credentials"
    assert audit_events("wallet.password_change")[-1].actor_type == "service"
    assert db.session.query(Notification).filter_by(kind="password_changed").count() == 1


def test_the_last_four_passwords_are_refused(app, api):
    wallet_no = make_wallet()
    passwords = [WALLET_PASSWORD, "Autumn-leaf-9753", "Winter-snow-8642", "Summer-sun-7531", "Misty-hill-6420"]
    for current, new in zip(passwords, passwords[1:]):
        assert api("POST", "/change-password", {"wallet_no": wallet_no, "current_password": current,
                                                "new_password": new}).status_code == 200
    # Four back is refused, five back is allowed again.
    refused = api("POST", "/change-password", {"wallet_no": wallet_no, "current_password": passwords[-1],
                                               "new_password": passwords[1]})
    assert refused.get_json()["error"]["details"]["rules"] == ["reused"]
    allowed = api("POST", "/change-password", {"wallet_no": wallet_no, "current_password": passwords[-1],
                                               "new_password": passwords[0]})
    assert allowed.status_code == 200


def test_wrong_current_password_counts_toward_the_lock(app, api):
    wallet_no = make_wallet()
    response = api("POST", "/change-password", {"wallet_no": wallet_no, "current_password": "nope-nope",
                                                "new_password": "Autumn-leaf-9753"})
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert error["code"] == "invalid_credentials" and error["details"]["remaining_attempts"] == 4


def test_temporary_password_works_once_and_only_to_set_a_new_one(app, api):
    wallet_no = make_wallet()
    wallet = get_wallet(wallet_no)
    wallet_credentials.issue_temporary_password(db.session, Actor.operator(), wallet, reason_code="forgot_password")
    db.session.commit()
    sms = db.session.query(Notification).filter_by(kind="temporary_password").one()
    temporary = message_text(sms).split("临时密码为")[1][:12]
    assert sms.carries_secret
    reset_event = audit_events("wallet.password_reset")[-1]
    assert temporary not in (reset_event.after_state + (reset_event.details or ""))
    signin = api("POST", "/sign-in", {"wallet_no": wallet_no, "password": temporary}).get_json()
    assert signin["result"] == "must_change_password"
    # The old password still checks, but the wallet demands a change.
    assert api("POST", "/sign-in", {"wallet_no": wallet_no, "password": WALLET_PASSWORD}).get_json()["result"] == "must_change_password"
    questions = api("PUT", "/security-questions", {"wallet_no": wallet_no, "password": temporary,
                                                   "questions": [{"code": "first_pet", "answer": "小白"},
                                                                 {"code": "first_city", "answer": "上海"}]})
    assert questions.status_code == 403 and questions.get_json()["error"]["code"] == "must_change_password"
    changed = api("POST", "/change-password", {"wallet_no": wallet_no, "current_password": temporary,
                                               "new_password": "Autumn-leaf-9753"})
    assert changed.status_code == 200
    assert api("POST", "/sign-in", {"wallet_no": wallet_no, "password": temporary}).get_json()["result"] == "invalid_credentials"
    assert api("POST", "/sign-in", {"wallet_no": wallet_no, "password": "Autumn-leaf-9753"}).get_json()["result"] == "ok"


def test_temporary_password_expires(app, api):
    from datetime import timedelta

    wallet_no = make_wallet()
    wallet_credentials.issue_temporary_password(db.session, Actor.operator(), get_wallet(wallet_no),
                                                reason_code="forgot_password")
    db.session.commit()
    temporary = message_text(db.session.query(Notification).filter_by(kind="temporary_password").one()
                             ).split("临时密码为")[1][:12]
    timeutil.set_offset(timedelta(hours=25))
    assert api("POST", "/sign-in", {"wallet_no": wallet_no, "password": temporary}).get_json()["result"] == "invalid_credentials"


def test_set_security_questions(app, api):
    wallet_no = make_wallet(questions=False)
    catalogue = api("GET", "/security-questions").get_json()
    codes = [q["code"] for q in catalogue["questions"]]
    response = api("PUT", "/security-questions", {"wallet_no": wallet_no, "password": WALLET_PASSWORD, "questions": [
        {"code": codes[0], "answer": "  ＨＡＮＧ zhou "}, {"code": codes[1], "answer": "实验小学"}]})
    assert response.status_code == 200 and response.get_json()["count"] == 2
    wallet = get_wallet(wallet_no)
    assert wallet_credentials.check_security_answer(wallet.security_questions[0], "hang ZHOU")
    assert not wallet_credentials.check_security_answer(wallet.security_questions[1], "第一小学")
    assert "实验小学" not in wallet.security_questions[1].answer_hash
    repeated = api("PUT", "/security-questions", {"wallet_no": wallet_no, "password": WALLET_PASSWORD, "questions": [
        {"code": codes[0], "answer": "aa"}, {"code": codes[0], "answer": "bb"}]})
    assert repeated.status_code == 422 and repeated.get_json()["error"]["code"] == "invalid_questions"


@pytest.mark.parametrize("body,status,code", [
    ({"raw": b"{not json"}, 400, "malformed_json"),
    ({"raw": b"[1,2]"}, 400, "malformed_json"),
    ({"raw": b'{"wallet_no": "x"}', "content_type": "text/plain"}, 415, "unsupported_media_type"),
    ({"body": {}}, 422, "invalid_request"),
    ({"body": {"wallet_no": 12345678, "password": "x"}}, 422, "invalid_request"),
    ({"body": {"wallet_no": "0031000000000000", "password": ["x"]}}, 422, "invalid_request"),
    ({"body": {"wallet_no": "0031000000000000", "password": True}}, 422, "invalid_request"),
    ({"body": {"wallet_no": "0031000000000000", "password": "x" * 500}}, 422, "invalid_request"),
    ({"body": {"wallet_no": "0031000000000000", "password": "x", "client_ip": "999.1.1.1"}}, 422, "invalid_request"),
    ({"body": {"wallet_no": "../../etc", "password": "x"}}, 422, "invalid_request"),
    ({"body": {"wallet_no": "0031000000000000", "password": "x"}}, 404, "unknown_wallet"),
    ({"raw": b'{"wallet_no": "' + b"1" * 20000 + b'"}'}, 413, "payload_too_large"),
])
def test_bad_input_gets_a_4xx_with_a_code(app, api, body, status, code):
    response = api("POST", "/sign-in", body.get("body"), raw=body.get("raw"),
                   content_type=body.get("content_type", "application/json"))
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == code
    assert response.get_json()["error"]["request_id"] == response.headers["X-Request-ID"]


def test_unknown_route_and_wrong_method_are_json(app, api):
    assert api("GET", "/nope").get_json()["error"]["code"] == "not_found"
    response = api("GET", "/sign-in")
    assert response.status_code == 405 and response.get_json()["error"]["code"] == "method_not_allowed"
    assert response.headers["Allow"] == "OPTIONS, POST"


def test_openapi_describes_exactly_the_real_routes(app, client):
    document = client.get(API + "/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    described = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    real = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(API):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                real.add((re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule[len(API):]), method))
    assert described == real
