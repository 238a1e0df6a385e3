"""Answers that tell the truth (issue #9): retries are answered once, a database error is a 503
(never a 500), and a 503 only when the work was not committed.

- Idempotency-Key on both JSON APIs: a retry gets the first answer and the work is done once;
  another request with the key is a 422, a retry in flight a 409, keys are the caller's own,
  a key whose holder died is free again after its lease.
- One-time form tokens on the desk: a double submit is done once and lands where the first did.
- The connection of a request killed (``pg_terminate_backend``) before a hook, in the view,
  after it, at teardown, and before every statement of a request: 503 with a request id, or
  the committed answer, never a 500.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from datetime import timedelta

import pytest
from flask import g, jsonify
from sqlalchemy import event, func, select, text

from console import answers, policy, timeutil
from console.extensions import csrf, db
from console.models.customer import LoginAttempt, Wallet
from console.models.idempotency import IdempotencyKey
from console.models.notification import Notification
from console.models.service import Case, CaseNote
from console.models.staff import Branch
from console.passwords import verify_password
from console.services import idempotency

from .concurrency import run_together
from .conftest import (PG_URL, WALLET_PASSWORD, _pg_admin_engine, audit_events, get_wallet, hold_live_claims,
                       make_staff, make_wallet, sign_in, totp_code)
from .faults.crash import crash_before_statement, statements_counted

WALLET = "/api/wallet/v1"
STAFF = "/api/v1"
FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')
CSRF_TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


@pytest.fixture
def wallet_api(app, client):
    key = app.config["WALLET_SERVICE_KEY"]

    def call(method, path, body=None, *, key_header=None, raw=None):
        headers = {"Authorization": f"Bearer {key}"}
        if key_header is not None:
            headers["Idempotency-Key"] = key_header
        data = raw if raw is not None else json.dumps(body)
        return client.open(WALLET + path, method=method, data=data, headers=headers, content_type="application/json")
    return call


def _token(client, handle):
    response = client.post(STAFF + "/tokens", json={"employee_no": handle.employee_no, "password": handle.password,
                                                    "totp_code": totp_code(handle)})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["token"]


@pytest.fixture
def staff_api(app, client):
    def call(method, path, token, body=None, *, key_header=None):
        headers = {"Authorization": f"Bearer {token}"}
        if key_header is not None:
            headers["Idempotency-Key"] = key_header
        return client.open(STAFF + path, method=method, json=body, headers=headers)
    return call


def _count(model, *where) -> int:
    db.session.expire_all()
    value = db.session.scalar(select(func.count()).select_from(model).where(*where))
    db.session.rollback()  # end the read (SQLite: BEGIN IMMEDIATE holds the writer lock)
    return value


def _wallet_scope(app) -> str:
    return f"wallet:{hashlib.sha256(app.config['WALLET_SERVICE_KEY'].encode()).digest().hex()[:16]}"


# --- the wallet API -------------------------------------------------------------------------------------


def test_change_password_retried_with_the_same_key_is_done_once(app, wallet_api):
    wallet_no = make_wallet()
    body = {"wallet_no": wallet_no, "current_password": WALLET_PASSWORD, "new_password": "Autumn-leaf-9753"}
    first = wallet_api("POST", "/change-password", body, key_header='"7b0d6c1e-1f9a-4c55-9d27-0d1f1c7a2b11"')
    assert first.status_code == 200 and first.get_json()["result"] == "password_changed", first.get_json()
    assert "Idempotent-Replayed" not in first.headers
    # The answer was lost; the wallet back end retries with the same key (bare this time).
    again = wallet_api("POST", "/change-password", body, key_header="7b0d6c1e-1f9a-4c55-9d27-0d1f1c7a2b11")
    assert again.status_code == 200 and again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert again.headers["X-Request-ID"] != first.headers["X-Request-ID"]
    assert len(audit_events("wallet.password_change")) == 1
    assert _count(Notification, Notification.kind == "password_changed") == 1
    # One password check only: the retry did not even sign in.
    assert _count(LoginAttempt, LoginAttempt.purpose == "change_password") == 1
    assert verify_password(get_wallet(wallet_no).password_hash, "Autumn-leaf-9753")


def test_a_retried_wrong_password_counts_once(app, wallet_api):
    wallet_no = make_wallet()
    body = {"wallet_no": wallet_no, "password": "wrong-password"}
    first = wallet_api("POST", "/sign-in", body, key_header="signin-0001")
    again = wallet_api("POST", "/sign-in", body, key_header="signin-0001")
    assert first.get_json() == again.get_json() == {"result": "invalid_credentials", "wallet_no": wallet_no,
                                                     "remaining_attempts": 4}
    assert again.headers["Idempotent-Replayed"] == "true"
    assert get_wallet(wallet_no).failed_count == 1
    assert _count(LoginAttempt, LoginAttempt.wallet_id == get_wallet(wallet_no).id) == 1
    # A new key is a new attempt.
    assert wallet_api("POST", "/sign-in", body, key_header="signin-0002").get_json()["remaining_attempts"] == 3
    # Refusals are answers too: a retried wrong current password is refused once.
    change = {"wallet_no": wallet_no, "current_password": "nope-nope", "new_password": "Autumn-leaf-9753"}
    refused = wallet_api("POST", "/change-password", change, key_header="change-0001")
    repeat = wallet_api("POST", "/change-password", change, key_header="change-0001")
    assert refused.status_code == repeat.status_code == 403
    assert refused.get_json()["error"]["details"]["remaining_attempts"] == 2
    assert repeat.get_data() == refused.get_data() and repeat.headers["Idempotent-Replayed"] == "true"
    assert get_wallet(wallet_no).failed_count == 3


def test_the_same_key_for_another_request_is_a_422(app, wallet_api):
    wallet_no = make_wallet()
    assert wallet_api("POST", "/sign-in", {"wallet_no": wallet_no, "password": WALLET_PASSWORD},
                      key_header="reused-key-1").status_code == 200
    other_body = wallet_api("POST", "/sign-in", {"wallet_no": wallet_no, "password": "another-one"},
                            key_header="reused-key-1")
    assert other_body.status_code == 422
    error = other_body.get_json()["error"]
    assert error["code"] == "idempotency_key_reused" and error["request_id"] == other_body.headers["X-Request-ID"]
    other_path = wallet_api("POST", "/change-password", {"wallet_no": wallet_no, "password": WALLET_PASSWORD},
                            key_header="reused-key-1")
    assert other_path.status_code == 422
    # Key order and spacing are not a different request.
    same = wallet_api("POST", "/sign-in", raw=f'{{ "password": "{WALLET_PASSWORD}",  "wallet_no": "{wallet_no}" }}',
                      key_header="reused-key-1")
    assert same.status_code == 200 and same.headers["Idempotent-Replayed"] == "true"
    assert get_wallet(wallet_no).failed_count == 0


@pytest.mark.parametrize("key", ["short", "x" * 129, "has space 123", "ünïcode-key", '"unterminated-key'])
def test_a_malformed_key_is_a_400_with_a_clear_error(app, wallet_api, key):
    wallet_no = make_wallet()
    response = wallet_api("POST", "/sign-in", {"wallet_no": wallet_no, "password": WALLET_PASSWORD}, key_header=key)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_idempotency_key" and "8 to 128" in error["message"]
    assert _count(LoginAttempt) == 0


def test_a_request_still_in_flight_is_a_409_and_a_dead_holder_s_key_is_free_after_its_lease(app, wallet_api):
    wallet_no = make_wallet()
    body = {"wallet_no": wallet_no, "current_password": WALLET_PASSWORD, "new_password": "Autumn-leaf-9753"}
    # Another worker reserved the key and is still at work (or died without answering).
    fingerprint = idempotency.fingerprint("POST", WALLET + "/change-password", json.dumps(body).encode())
    held = idempotency.reserve(db.session, _wallet_scope(app), "inflight-key-1", fingerprint, commit=db.session.commit)
    assert held.kind == "reserved"
    busy = wallet_api("POST", "/change-password", body, key_header="inflight-key-1")
    assert busy.status_code == 409 and busy.get_json()["error"]["code"] == "request_in_flight"
    assert 1 <= int(busy.headers["Retry-After"]) <= app.config["IDEMPOTENCY_LEASE_SECONDS"]
    assert not verify_password(get_wallet(wallet_no).password_hash, "Autumn-leaf-9753")
    # Its holder died: after the lease the key is usable again, and the work is done once.
    timeutil.set_offset(timedelta(seconds=app.config["IDEMPOTENCY_LEASE_SECONDS"] + 1))
    done = wallet_api("POST", "/change-password", body, key_header="inflight-key-1")
    assert done.status_code == 200 and "Idempotent-Replayed" not in done.headers
    # The dead holder cannot store an answer any more: the key is no longer its own.
    assert not idempotency.complete(db.session, held.reservation, idempotency.StoredAnswer(200, {}, b"{}"))
    db.session.rollback()
    replay = wallet_api("POST", "/change-password", body, key_header="inflight-key-1")
    assert replay.get_data() == done.get_data() and replay.headers["Idempotent-Replayed"] == "true"
    assert len(audit_events("wallet.password_change")) == 1


def test_answers_that_say_try_again_are_not_kept(app, wallet_api):
    app.config["WALLET_CLAIM_WAIT_SECONDS"] = 0.1
    policy.rebuild(app)
    wallet_no = make_wallet()
    # Five claims are in flight (live workers): the attempt is answered "busy" without a check, with Retry-After.
    hold_live_claims(wallet_no, 5, seconds=4)
    body = {"wallet_no": wallet_no, "password": WALLET_PASSWORD}
    busy = wallet_api("POST", "/sign-in", body, key_header="busy-key-01")
    assert busy.get_json()["result"] == "busy" and int(busy.headers["Retry-After"]) >= 1
    # Those checks end (here: their claims run out and are reclaimed by the retry).
    timeutil.set_offset(timedelta(seconds=5))
    retried = wallet_api("POST", "/sign-in", body, key_header="busy-key-01")
    assert retried.get_json()["result"] == "ok" and "Idempotent-Replayed" not in retried.headers


def test_keys_are_kept_for_the_configured_time_then_pruned(app, wallet_api):
    wallet_no = make_wallet()
    body = {"wallet_no": wallet_no, "password": "wrong-password"}
    wallet_api("POST", "/sign-in", body, key_header="prune-key-1")
    assert _count(IdempotencyKey) == 1
    timeutil.set_offset(timedelta(hours=app.config["IDEMPOTENCY_KEY_HOURS"], seconds=1))
    # Expired, even before it is pruned: the key is new again.
    again = wallet_api("POST", "/sign-in", body, key_header="prune-key-1")
    assert "Idempotent-Replayed" not in again.headers and again.get_json()["remaining_attempts"] == 3
    timeutil.set_offset(timedelta(hours=2 * app.config["IDEMPOTENCY_KEY_HOURS"], seconds=2))
    assert idempotency.prune(db.session) == 1
    db.session.commit()
    assert _count(IdempotencyKey) == 0


def test_stored_answers_and_keys_are_not_readable_in_the_table(app, staff_api, client):
    customer_no = get_wallet(make_wallet()).customer.customer_no
    token = _token(client, make_staff("teller"))
    opened = staff_api("POST", f"/customers/{customer_no}/cases", token, key_header="open-case-secret-1")
    case_no = opened.get_json()["case_no"]
    row = db.session.scalars(select(IdempotencyKey)).one()
    assert row.state == "done" and row.scope.startswith("staff:")
    # The key is kept only as a digest; the answer only encrypted (it decrypts to the case number).
    assert row.key_digest == idempotency.key_digest("open-case-secret-1") != "open-case-secret-1"
    assert case_no.encode() not in row.response_body_enc and customer_no.encode() not in row.response_body_enc
    assert case_no.encode() in idempotency._answer(
        {**row.__dict__, "scope": row.scope, "key_digest": row.key_digest}).body
    db.session.rollback()


def test_a_search_by_post_is_never_kept_or_replayed(app, staff_api, client):
    """A search only reads: with a key it is searched (and audited) again, and nothing is stored."""
    wallet_no = make_wallet()
    token = _token(client, make_staff("teller"))
    for _ in range(2):
        found = staff_api("POST", "/customers/search", token, {"kind": "wallet_no", "value": wallet_no},
                          key_header="search-key-1")
        assert found.status_code == 200 and "Idempotent-Replayed" not in found.headers
    assert _count(IdempotencyKey) == 0
    assert len(audit_events("customer.search")) == 2


# --- the staff API -----------------------------------------------------------------------------------------


def test_open_case_retried_with_the_same_key_opens_one_case(app, client, staff_api):
    customer_no = get_wallet(make_wallet()).customer.customer_no
    token = _token(client, make_staff("teller"))
    first = staff_api("POST", f"/customers/{customer_no}/cases", token, key_header="open-case-0001")
    again = staff_api("POST", f"/customers/{customer_no}/cases", token, key_header="open-case-0001")
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    assert _count(Case) == 1 and len(audit_events("case.open")) == 1
    # Without a key (or with another one) it is another case.
    assert staff_api("POST", f"/customers/{customer_no}/cases", token).get_json()["case_no"] != first.get_json()["case_no"]
    assert _count(Case) == 2
    # A 4xx is an answer too: a refused operation retried is refused once (one audit event).
    body = {"wallet_no": get_wallet_no(customer_no), "operation": "unlock", "reason_code": "forgot_password"}
    case_no = first.get_json()["case_no"]
    refused = staff_api("POST", f"/cases/{case_no}/operations", token, body, key_header="unlock-0001")
    repeat = staff_api("POST", f"/cases/{case_no}/operations", token, body, key_header="unlock-0001")
    assert refused.status_code == repeat.status_code == 403 and repeat.get_data() == refused.get_data()
    assert [e.outcome for e in audit_events("wallet.unlock")] == ["denied"]


def get_wallet_no(customer_no):
    from console.models.customer import Customer

    wallet_no = db.session.scalar(select(Wallet.wallet_no).join(Customer).where(Customer.customer_no == customer_no))
    db.session.rollback()
    return wallet_no


def test_callers_do_not_share_keys(app, client, staff_api):
    customer_no = get_wallet(make_wallet()).customer.customer_no
    first, second = make_staff("teller"), make_staff("teller")
    mine = staff_api("POST", f"/customers/{customer_no}/cases", _token(client, first), key_header="shared-key-1")
    theirs = staff_api("POST", f"/customers/{customer_no}/cases", _token(client, second), key_header="shared-key-1")
    assert mine.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.get_json()["case_no"] != mine.get_json()["case_no"]
    assert _count(Case) == 2
    # A staff member's key holds across tokens (a retry after signing in again) ...
    again = staff_api("POST", f"/customers/{customer_no}/cases", _token(client, first), key_header="shared-key-1")
    assert again.get_json() == mine.get_json() and again.headers["Idempotent-Replayed"] == "true"
    # ... and the wallet API's keys are another caller's.
    assert _count(IdempotencyKey, IdempotencyKey.scope.like("staff:%")) == 2


def test_a_retried_sign_out_gets_its_first_answer(app, client, staff_api):
    token = _token(client, make_staff("teller"))
    first = staff_api("DELETE", "/tokens/current", token, key_header="signout-0001")
    again = staff_api("DELETE", "/tokens/current", token, key_header="signout-0001")
    assert first.get_json() == again.get_json() == {"result": "revoked"}
    assert again.headers["Idempotent-Replayed"] == "true"
    assert staff_api("DELETE", "/tokens/current", token).status_code == 401
    assert staff_api("DELETE", "/tokens/current", token, key_header="signout-0002").status_code == 401
    assert len(audit_events("staff.signout")) == 1


def test_openapi_documents_the_key_on_every_state_changing_operation(app, client):
    for prefix in (WALLET, STAFF):
        document = client.get(prefix + "/openapi.json").get_json()
        assert "IdempotencyKey" in document["components"]["parameters"]
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                # Signing in (its answer is a secret) and the search (it only reads) take no key.
                if method == "get" or operation["operationId"] in ("issueToken", "searchCustomers"):
                    assert "Idempotency-Key" not in json.dumps(operation.get("parameters", []))
                    continue
                assert {"$ref": "#/components/parameters/IdempotencyKey"} in operation["parameters"], (path, method)
                assert {"409", "422", "503"} <= set(operation["responses"]), (path, method)


# --- the desk's one-time form tokens ----------------------------------------------------------------------


def _form(client, url, action):
    page = client.get(url).get_data(as_text=True)
    start = page.index(f'action="{action}"')
    form = page[start:page.index("</form>", start)]
    return {"csrf_token": CSRF_TOKEN.search(form).group(1), "form_token": FORM_TOKEN.search(form).group(1)}


def test_a_double_submitted_open_case_opens_one_case(app, client):
    customer_no = get_wallet(make_wallet()).customer.customer_no
    sign_in(client, make_staff("teller"))
    fields = _form(client, f"/desk/customers/{customer_no}", f"/desk/customers/{customer_no}/cases")
    first = client.post(f"/desk/customers/{customer_no}/cases", data=fields)
    second = client.post(f"/desk/customers/{customer_no}/cases", data=fields)
    assert first.status_code == second.status_code == 302
    assert second.headers["Location"] == first.headers["Location"] and "/desk/cases/K" in first.headers["Location"]
    assert _count(Case) == 1 and len(audit_events("case.open")) == 1
    assert client.get(second.headers["Location"]).status_code == 200
    # A fresh form (a new token) opens another case.
    fresh = _form(client, f"/desk/customers/{customer_no}", f"/desk/customers/{customer_no}/cases")
    assert fresh["form_token"] != fields["form_token"]
    assert client.post(f"/desk/customers/{customer_no}/cases", data=fresh).headers["Location"] != first.headers["Location"]
    assert _count(Case) == 2


def test_a_form_resent_with_other_details_is_not_told_the_first_was_done(app, client):
    """The back button, then another note in the same form: the second text is not silently dropped
    behind the first one's "saved"; the teller is told and sent back to the page."""
    customer_no = get_wallet(make_wallet()).customer.customer_no
    sign_in(client, make_staff("teller"))
    opened = client.post(f"/desk/customers/{customer_no}/cases",
                         data=_form(client, f"/desk/customers/{customer_no}", f"/desk/customers/{customer_no}/cases"))
    case_no = opened.headers["Location"].rsplit("/", 1)[1]
    form = _form(client, f"/desk/cases/{case_no}", f"/desk/cases/{case_no}/notes")
    assert client.post(f"/desk/cases/{case_no}/notes", data={**form, "text": "客户来电"}).status_code == 302
    changed = client.post(f"/desk/cases/{case_no}/notes", data={**form, "text": "另一条备注"},
                          headers={"Referer": f"http://localhost/desk/cases/{case_no}"})
    assert changed.status_code == 303 and changed.headers["Location"] == f"/desk/cases/{case_no}"
    page = client.get(changed.headers["Location"]).get_data(as_text=True)
    assert "另一条备注" not in page and _count(CaseNote) == 1
    assert "其他内容" in page  # the message says why


def test_double_submits_of_notes_and_close_are_done_once_with_the_same_message(app, client):
    customer_no = get_wallet(make_wallet()).customer.customer_no
    sign_in(client, make_staff("teller"))
    opened = client.post(f"/desk/customers/{customer_no}/cases",
                         data=_form(client, f"/desk/customers/{customer_no}", f"/desk/customers/{customer_no}/cases"))
    case_no = opened.headers["Location"].rsplit("/", 1)[1]
    note = {**_form(client, f"/desk/cases/{case_no}", f"/desk/cases/{case_no}/notes"), "text": "客户来电"}
    assert client.post(f"/desk/cases/{case_no}/notes", data=note).status_code == 302
    assert client.post(f"/desk/cases/{case_no}/notes", data=note).status_code == 302
    assert _count(CaseNote) == 1
    close = {**_form(client, f"/desk/cases/{case_no}/close", f"/desk/cases/{case_no}/close"),
             "no_action_reason": "enquiry_only"}  # nothing was done: closed with the reason
    first = client.post(f"/desk/cases/{case_no}/close", data=close, follow_redirects=True).get_data(as_text=True)
    second = client.post(f"/desk/cases/{case_no}/close", data=close, follow_redirects=True)
    assert second.status_code == 200
    receipt_no = re.search(r"回单 (R\w+)", first).group(1)
    assert f"回单 {receipt_no}" in second.get_data(as_text=True)  # the first submit's message, replayed
    assert len(audit_events("case.close")) == 1


def test_a_form_token_is_bound_to_the_session_that_rendered_it(app, client):
    customer_no = get_wallet(make_wallet()).customer.customer_no
    sign_in(client, make_staff("teller"))
    fields = _form(client, f"/desk/customers/{customer_no}", f"/desk/customers/{customer_no}/cases")
    other = app.test_client()
    sign_in(other, make_staff("teller"))
    theirs = _form(other, f"/desk/customers/{customer_no}", f"/desk/customers/{customer_no}/cases")
    stolen = other.post(f"/desk/customers/{customer_no}/cases",
                        data={"csrf_token": theirs["csrf_token"], "form_token": fields["form_token"]})
    assert stolen.status_code == 400
    forged = other.post(f"/desk/customers/{customer_no}/cases",
                        data={"csrf_token": theirs["csrf_token"], "form_token": "x" * 24 + "." + "y" * 22})
    assert forged.status_code == 400
    assert _count(Case) == 0
    # The CSRF token is still required with a valid form token.
    assert other.post(f"/desk/customers/{customer_no}/cases", data={"form_token": theirs["form_token"]}).status_code == 400
    assert _count(Case) == 0


@pytest.mark.postgres_only
def test_two_concurrent_submits_of_one_form_open_one_case(app, backend, client):
    customer_no = get_wallet(make_wallet()).customer.customer_no
    sign_in(client, make_staff("teller"))
    fields = _form(client, f"/desk/customers/{customer_no}", f"/desk/customers/{customer_no}/cases")
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    # Slow the first submit down inside its work, so the second one arrives while it is in flight.
    started = threading.Event()

    def slow_insert(mapper, connection, target):
        started.set()
        time.sleep(0.5)

    event.listen(Case, "before_insert", slow_insert)

    def browser(_i):
        worker = app.test_client()
        worker.set_cookie(cookie.key, cookie.value)
        return worker

    def submit(worker):
        response = worker.post(f"/desk/customers/{customer_no}/cases", data=fields)
        return response.status_code, response.headers.get("Location")

    try:
        results = run_together(submit, 2, setup=browser, timeout=30)
    finally:
        event.remove(Case, "before_insert", slow_insert)
    assert started.is_set()
    assert len(results) == 2 and {status for status, _ in results} == {302}
    assert results[0][1] == results[1][1] and "/desk/cases/K" in results[0][1]
    assert _count(Case) == 1 and len(audit_events("case.open")) == 1


# --- a database error is a 503 with a request id, never a 500 ---------------------------------------------


def _terminate(pid: int) -> None:
    admin = _pg_admin_engine()
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            for _ in range(100):
                if not conn.execute(text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}).first():
                    return
                time.sleep(0.02)
    finally:
        admin.dispose()


def _kill_own_connection() -> None:
    """Terminate, from another connection, the backend of the current request's session."""
    _terminate(db.session.execute(text("SELECT pg_backend_pid()")).scalar())


def _assert_unavailable(response, *, api: bool):
    assert response.status_code == 503, response.get_data(as_text=True)[:300]
    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32 and int(response.headers["Retry-After"]) >= 1
    if api:
        error = response.get_json()["error"]
        assert error["code"] == "unavailable" and error["request_id"] == request_id
    else:
        assert "503" in response.get_data(as_text=True) and request_id in response.get_data(as_text=True)


@pytest.fixture
def probes(app):
    """Test-only routes on this test's app, and hooks that kill the request's connection on demand."""
    def view_kill():
        _kill_own_connection()
        db.session.execute(text("SELECT 1"))
        return "unreachable"

    def teardown_kill():
        db.session.execute(text("SELECT 1"))  # a transaction is open: the teardown must roll it back
        _kill_own_connection()
        return jsonify({"ok": True})

    def teardown_commit():
        db.session.add(Branch(code="TD-001", name="teardown", kind="branch", active=True))
        db.session.flush()
        g.commit_at_teardown = True
        _kill_own_connection()
        return jsonify({"ok": True})

    def committed_then_killed():
        db.session.add(Branch(code="CM-001", name="committed", kind="branch", active=True))
        db.session.flush()
        response = jsonify({"created": "CM-001"})
        answers.stage(response)
        db.session.commit()
        _kill_own_connection()
        db.session.execute(text("SELECT 1"))  # something after the commit fails
        return "unreachable"

    def after_kill():
        g.kill_after = True
        return jsonify({"ok": True})

    def boom():
        raise RuntimeError("a bug, not the database")

    for name, view in {"view_kill": view_kill, "teardown_kill": teardown_kill, "teardown_commit": teardown_commit,
                       "committed_then_killed": committed_then_killed, "after_kill": after_kill, "boom": boom}.items():
        for prefix in ("/api/v1/_probe", "/_probe"):
            app.add_url_rule(f"{prefix}/{name}", f"{prefix}_{name}".replace("/", "_"), csrf.exempt(view),
                             methods=["GET", "POST"])

    @app.before_request
    def _kill_before():
        from flask import request

        if request.headers.get("X-Test-Kill") == "before":
            _kill_own_connection()  # the session or token loader runs next

    @app.after_request
    def _kill_after(response):
        if g.pop("kill_after", False):
            _kill_own_connection()
            db.session.execute(text("SELECT 1"))
        return response

    @app.teardown_appcontext
    def _commit_at_teardown(exc):
        if g.pop("commit_at_teardown", False):
            db.session.commit()

    return app


pg = pytest.mark.postgres_only


@pg
@pytest.mark.parametrize("prefix,api", [("/api/v1/_probe", True), ("/_probe", False)])
def test_connection_killed_in_the_view_after_it_and_at_teardown_is_a_503(app, backend, client, probes, prefix, api,
                                                                         caplog):
    for probe in ("view_kill", "teardown_kill", "teardown_commit", "after_kill"):
        with caplog.at_level(logging.INFO, logger="console.request"):
            response = client.post(f"{prefix}/{probe}")
        _assert_unavailable(response, api=api)
        # The request's log line has the status the client got, not the one the view returned.
        line = [r.msg for r in caplog.records if r.name == "console.request"][-1]
        assert line["status"] == 503 and line["path"] == f"{prefix}/{probe}"
    assert _count(Branch, Branch.code == "TD-001") == 0  # the teardown's commit failed: nothing was committed
    # The pool recovers by itself.
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


@pg
def test_connection_killed_before_the_session_and_token_loaders_is_a_503(app, backend, client, probes):
    handle = make_staff("teller")
    token = _token(client, handle)
    _assert_unavailable(client.get(STAFF + "/approvals", headers={"Authorization": f"Bearer {token}",
                                                                   "X-Test-Kill": "before"}), api=True)
    sign_in(client, handle)
    _assert_unavailable(client.get("/desk/", headers={"X-Test-Kill": "before"}), api=False)
    assert client.get("/desk/").status_code == 200


def test_commit_failing_at_teardown_is_a_503_on_every_backend(app, client, probes):
    """Without a connection to kill (SQLite too): the teardown's COMMIT itself raises."""
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    def fail(session):
        if session.info.get("fail_commit"):
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    def arm():
        db.session.add(Branch(code="TD-002", name="teardown", kind="branch", active=True))
        db.session.flush()
        db.session.info["fail_commit"] = True
        g.commit_at_teardown = True
        return jsonify({"ok": True})

    app.add_url_rule("/api/v1/_probe/arm", "probe_arm", csrf.exempt(arm), methods=["POST"])
    event.listen(Session, "before_commit", fail)
    try:
        _assert_unavailable(client.post("/api/v1/_probe/arm"), api=True)
    finally:
        event.remove(Session, "before_commit", fail)
    assert _count(Branch, Branch.code == "TD-002") == 0


@pg
def test_after_the_commit_a_failure_answers_with_the_committed_answer(app, backend, client, probes):
    response = client.post("/api/v1/_probe/committed_then_killed")
    assert response.status_code == 200 and response.get_json() == {"created": "CM-001"}
    assert _count(Branch, Branch.code == "CM-001") == 1


def test_an_unexpected_exception_is_still_a_500(app, client, probes):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = client.post("/api/v1/_probe/boom")
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "internal_error"
    assert response.get_json()["error"]["request_id"] == response.headers["X-Request-ID"]


@pg
def test_open_case_killed_right_after_its_commit_answers_the_case(app, backend, client, staff_api):
    """The answer is built before the commit: a connection lost after it changes nothing."""
    customer_no = get_wallet(make_wallet()).customer.customer_no
    token = _token(client, make_staff("teller"))
    from sqlalchemy.orm import Session

    def note(session, flush_context, instances):
        if any(isinstance(obj, Case) for obj in session.new):
            session.info["kill_after_commit"] = session.connection().connection.dbapi_connection.info.backend_pid

    def kill(session):
        pid = session.info.pop("kill_after_commit", None)
        if pid:
            _terminate(pid)

    event.listen(Session, "before_flush", note)
    event.listen(Session, "after_commit", kill)
    try:
        response = staff_api("POST", f"/customers/{customer_no}/cases", token, key_header="open-after-kill")
    finally:
        event.remove(Session, "before_flush", note)
        event.remove(Session, "after_commit", kill)
    assert response.status_code == 201 and response.get_json()["case_no"].startswith("K")
    # Past the ping window the dropped connection is pinged and replaced before its next use
    # (console/dbpool.py; tests/test_dbpool.py covers a use inside the window).
    time.sleep(app.config["DATABASE_PING_AFTER_IDLE_SECONDS"] + 0.05)
    assert _count(Case) == 1
    again = staff_api("POST", f"/customers/{customer_no}/cases", token, key_header="open-after-kill")
    assert again.get_json() == response.get_json() and _count(Case) == 1


@pg
def test_open_case_with_its_connection_dropped_before_any_statement(app, backend, client, staff_api):
    """Drop the connection before the n-th statement of the request, for every n: the answer is a
    503 exactly when no case was opened, a 201 exactly when one was, never a 500; the retry with
    the same key ends with exactly one case per key."""
    customer_no = get_wallet(make_wallet()).customer.customer_no
    token = _token(client, make_staff("teller"))
    with statements_counted(db.engine) as counted:
        assert staff_api("POST", f"/customers/{customer_no}/cases", token, key_header="count-0000").status_code == 201
    assert counted["n"] > 5
    for n in range(1, counted["n"] + 1):
        key = f"drop-{n:04d}"
        before = _count(Case)
        with crash_before_statement(db.engine, n, drop_connection_url=PG_URL) as fired:
            first = staff_api("POST", f"/customers/{customer_no}/cases", token, key_header=key)
        opened = _count(Case) - before
        if fired["at"] is None:  # this request had fewer statements (e.g. no pruning this time)
            assert first.status_code == 201 and opened == 1
            continue
        if first.status_code == 503:
            _assert_unavailable(first, api=True)
            assert opened == 0, (n, fired["at"])
        else:
            assert first.status_code == 201 and opened == 1, (n, fired["at"], first.status_code)
        retry = staff_api("POST", f"/customers/{customer_no}/cases", token, key_header=key)
        assert retry.status_code == 201, (n, retry.get_data(as_text=True))
        assert _count(Case) == before + 1, (n, fired["at"])
        if first.status_code == 201:
            assert retry.get_json() == first.get_json()


@pg
def test_wallet_sign_in_with_its_connection_dropped_before_any_statement(app, backend, wallet_api):
    """The wallet API never answers 500: a 503 (the attempt not settled) or the settled answer."""
    app.config["WALLET_CLAIM_TTL_SECONDS"] = 1  # a claim orphaned by a dropped connection lapses quickly
    wallet_no = make_wallet()
    body = {"wallet_no": wallet_no, "password": "wrong-password"}
    with statements_counted(db.engine) as counted:
        assert wallet_api("POST", "/sign-in", body, key_header="count-0000").status_code == 200
    settled = 1
    for n in range(1, counted["n"] + 1):
        key = f"drop-{n:04d}"
        with crash_before_statement(db.engine, n, drop_connection_url=PG_URL) as fired:
            first = wallet_api("POST", "/sign-in", body, key_header=key)
        assert first.status_code in (200, 503), (n, fired["at"], first.get_data(as_text=True))
        if first.status_code == 503:
            _assert_unavailable(first, api=True)
        retry = wallet_api("POST", "/sign-in", body, key_header=key)
        assert retry.status_code == 200, (n, retry.get_data(as_text=True))
        if first.status_code == 200:
            assert retry.get_data() == first.get_data() and retry.headers["Idempotent-Replayed"] == "true"
        if retry.get_json()["result"] == "invalid_credentials":
            settled += 1
        # Forget the failures, so every round checks the password (never a lock).
        db.session.execute(Wallet.__table__.update().where(Wallet.wallet_no == wallet_no).values(failed_count=0))
        db.session.commit()
    checked = _count(LoginAttempt, LoginAttempt.result == "invalid_credentials")
    assert checked == settled  # one settled check per key: no retry was counted twice


def test_wallet_api_keys_are_kept_only_minutes(app, client):
    """Wallet API bodies carry passwords: their keys (and fingerprints) go after minutes, not a day."""
    wallet_no = make_wallet()
    key = app.config["WALLET_SERVICE_KEY"]
    response = client.post("/api/wallet/v1/sign-in", json={"wallet_no": wallet_no, "password": "wrong-password-1"},
                           headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "short-lived-1"})
    assert response.status_code == 200
    row = db.session.scalars(select(IdempotencyKey)).one()
    kept = row.expires_at - row.created_at
    assert kept == timedelta(minutes=app.config["IDEMPOTENCY_WALLET_KEY_MINUTES"]) < timedelta(hours=1)
    db.session.rollback()
