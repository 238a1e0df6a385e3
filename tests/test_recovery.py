"""Self-service recovery in the wallet API (忘记密码), end to end on both backends."""
import json
import re
from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import select

from console import crypto, timeutil
from console.extensions import db
from console.models.customer import RiskAlert, TwoFactorBinding
from console.models.notification import Notification
from console.models.recovery import Recovery
from console.services.notifications import message_text

from .concurrency import run_together
from .conftest import ID_NUMBERS, WALLET_PASSWORD, audit_events, get_wallet, make_wallet

API = "/api/wallet/v1"
ANSWERS = {"mother_birthplace": "杭州", "first_school": "实验小学"}
NEW_PASSWORD = "Autumn-moon-1357"


@pytest.fixture
def api(app, client):
    key = app.config["WALLET_SERVICE_KEY"]

    def call(method, path, body=None, *, on=None):
        return (on or client).open(API + path, method=method, data=json.dumps(body) if body is not None else None,
                                   headers={"Authorization": f"Bearer {key}"}, content_type="application/json")
    return call


def last_sms(kind):
    db.session.expire_all()
    row = db.session.scalars(select(Notification).where(Notification.kind == kind)
                             .order_by(Notification.id.desc())).first()
    return message_text(row) if row else None


def sms_code():
    return re.search(r"验证码为(\d{6})", last_sms("recovery_code")).group(1)


def start(api, wallet_no, *, id_number=None, ip="198.51.100.20", device=None, mobile=None):
    body = {"id_number": id_number or ID_NUMBERS[wallet_no], "client_ip": ip}
    body.update({"mobile": mobile} if mobile else {"wallet_no": wallet_no})
    if device:
        body["device_id"] = device
    return api("POST", "/recovery", body)


def recover(api, wallet_no, *, answers=ANSWERS, ip="198.51.100.20", password=NEW_PASSWORD):
    """Every step: (code answer, factor answer, password answer); stops at the first refusal."""
    started = start(api, wallet_no, ip=ip)
    assert started.status_code == 202, started.get_json()
    rid = started.get_json()["recovery_id"]
    code = api("POST", f"/recovery/{rid}/code", {"code": sms_code(), "client_ip": ip})
    if code.status_code != 200:
        return code, None, None
    asked = code.get_json()["questions"]
    factor = api("POST", f"/recovery/{rid}/second-factor",
                 {"answers": [{"code": c, "answer": answers[c]} for c in asked], "client_ip": ip})
    if factor.status_code != 200:
        return code, factor, None
    done = api("POST", f"/recovery/{rid}/password",
               {"recovery_token": factor.get_json()["recovery_token"], "new_password": password, "client_ip": ip})
    return code, factor, done


def lock_by_wrong_passwords(api, wallet_no):
    for _ in range(5):
        last = api("POST", "/sign-in", {"wallet_no": wallet_no, "password": "wrong-pass", "client_ip": "192.0.2.9"})
    assert last.get_json()["result"] == "locked"


def test_a_locked_wallet_recovers_by_itself_and_signs_in(app, api):
    wallet_no = make_wallet(with_2fa=False)
    lock_by_wrong_passwords(api, wallet_no)
    code, factor, done = recover(api, wallet_no)
    assert code.get_json()["factor"] == "security_answers" and len(code.get_json()["questions"]) == 2
    assert done.status_code == 200, done.get_json()
    body = done.get_json()
    assert body["result"] == "password_reset" and body["unlocked"] is True and body["wallet_no"] == wallet_no
    wallet = get_wallet(wallet_no)
    assert wallet.lock_kind is None and wallet.failed_count == 0
    signed_in = api("POST", "/sign-in", {"wallet_no": wallet_no, "password": NEW_PASSWORD})
    assert signed_in.get_json()["result"] == "ok"
    assert "自助找回" in last_sms("password_recovered") and "如非本人操作" in last_sms("password_recovered")
    steps = [e for e in audit_events() if e.channel == "self_service"]
    assert [e.action for e in steps] == ["recovery.start", "recovery.code", "recovery.factor", "recovery.complete",
                                         "wallet.password_reset"]
    assert {e.actor_type for e in steps} == {"customer"} and all(e.outcome == "success" for e in steps)
    # The new password is in the history: the old one cannot come back through recovery either.
    _, _, again = recover(api, wallet_no, password=WALLET_PASSWORD, ip="198.51.100.21")
    assert again.status_code == 200 or again.get_json()["error"]["code"] == "password_policy"


def test_unknown_and_known_wallets_get_identical_answers(app, api):
    wallet_no = make_wallet()
    other = make_wallet()
    cases = {
        "known": dict(wallet_no=wallet_no),
        "wrong_id": dict(wallet_no=wallet_no, id_number=ID_NUMBERS[other]),
        "unknown": dict(wallet_no="99999999999999", id_number=ID_NUMBERS[other]),
    }
    shapes = {}
    for name, args in cases.items():
        started = start(api, args["wallet_no"], id_number=args.get("id_number") or ID_NUMBERS[wallet_no],
                        ip=f"198.51.100.{len(shapes) + 30}")
        body = started.get_json()
        assert started.status_code == 202
        rid = body.pop("recovery_id")
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", rid)
        body.pop("expires_at")
        answers = [started.status_code, body, sorted(started.headers.keys())]
        for _ in range(3):
            wrong = api("POST", f"/recovery/{rid}/code", {"code": "000000"})
            error = wrong.get_json()["error"]
            error.pop("request_id")
            answers.append((wrong.status_code, error))
        shapes[name] = answers
    assert shapes["known"] == shapes["wrong_id"] == shapes["unknown"]
    assert shapes["known"][3][1]["code"] == "code_wrong" and shapes["known"][5][1]["code"] == "recovery_failed"
    # Only the real one sent a code, and the console sees the two tries on the wallet.
    db.session.expire_all()
    assert db.session.query(Notification).filter_by(kind="recovery_code").count() == 1
    starts = audit_events("recovery.start")
    assert [e.reason_code for e in starts] == [None, "details_mismatch", "no_such_wallet"]
    assert starts[2].customer_ref is None and starts[1].customer_ref == starts[0].customer_ref


def test_start_by_mobile(app, api):
    wallet_no = make_wallet(mobile="13912345678")
    started = start(api, wallet_no, mobile="139 1234 5678")
    assert started.status_code == 202
    assert last_sms("recovery_code") is not None
    assert db.session.get(Recovery, 1).matched is True


def test_three_failed_recoveries_send_the_customer_to_the_counter(app, api):
    wallet_no = make_wallet(with_2fa=False)
    wrong = {code: "不对" for code in ANSWERS}
    for attempt in range(3):
        _, factor, _ = recover(api, wallet_no, answers=wrong, ip="198.51.100.40")
        assert factor.status_code == 403
        assert factor.get_json()["error"]["code"] == "recovery_failed"
        assert factor.get_json()["error"]["details"]["reason"] == "security_answers_wrong"
    flagged = audit_events("customer.flagged_counter_only")
    assert len(flagged) == 1 and json.loads(flagged[0].details)["failures"] == 3
    assert "网点" in last_sms("counter_only")
    code, _, _ = recover(api, wallet_no, ip="198.51.100.40")
    assert code.status_code == 403
    error = code.get_json()["error"]
    assert error["code"] == "counter_required" and error["details"]["reason"] == "counter_only"
    assert error["details"]["hotline"] == app.config["HOTLINE"] and app.config["HOTLINE"] in error["message"]
    from console.services import verification
    assert verification.is_flagged(db.session, get_wallet(wallet_no).customer_id)


@pytest.mark.parametrize("state, reason", [
    ("until_unlock", "locked_until_staff_unlock"), ("frozen", "risk_freeze"), ("hold", "protective_hold")])
def test_what_recovery_never_lifts(app, api, state, reason):
    wallet_no = make_wallet(with_2fa=False)
    wallet = get_wallet(wallet_no)
    now = timeutil.utcnow()
    if state == "until_unlock":
        wallet.lock_kind, wallet.locked_at = "until_unlock", now
    elif state == "frozen":
        wallet.frozen_at, wallet.frozen_reason = now, "failure_burst"
    else:
        wallet.hold_placed_at, wallet.hold_reason = now, "suspected_fraud"
    db.session.commit()
    code, _, _ = recover(api, wallet_no)
    assert code.status_code == 403 and code.get_json()["error"]["details"]["reason"] == reason
    wallet = get_wallet(wallet_no)
    assert (wallet.lock_kind, bool(wallet.frozen_at), bool(wallet.hold_placed_at)) == (
        "until_unlock" if state == "until_unlock" else None, state == "frozen", state == "hold")
    assert audit_events("recovery.sent_to_counter")[0].reason_code == reason


def test_recoveries_from_many_addresses_freeze_the_wallet(app, api):
    wallet_no = make_wallet()
    for i in range(3):
        assert start(api, wallet_no, ip=f"203.0.113.{i + 1}").status_code == 202
    wallet = get_wallet(wallet_no)
    assert wallet.frozen_at is not None and wallet.frozen_reason == "recovery_burst"
    alert = db.session.scalars(select(RiskAlert)).one()
    assert alert.rule == "recovery_burst" and json.loads(alert.details)["addresses"] == 3
    assert audit_events("wallet.frozen")[0].reason_code == "recovery_burst"


def test_fifty_concurrent_wrong_codes_check_exactly_three(app, api):
    wallet_no = make_wallet()
    rid = start(api, wallet_no).get_json()["recovery_id"]

    def wrong(i):
        return api("POST", f"/recovery/{rid}/code", {"code": f"{i:06d}"}, on=app.test_client()).status_code

    statuses = run_together(wrong, 50, app=app)
    checks = audit_events("recovery.code")
    assert len(checks) == 3 and all(e.outcome == "failed" for e in checks)
    assert sorted(statuses).count(409) == 47
    assert db.session.get(Recovery, 1).code_tries == 3


def test_the_authenticator_is_asked_where_one_is_bound(app, api):
    wallet_no = make_wallet(with_2fa=False)
    secret = pyotp.random_base32()
    wallet = get_wallet(wallet_no)
    db.session.add(TwoFactorBinding(wallet_id=wallet.id, device_id="AUTH-1", device_label="authenticator",
                                    bound_at=timeutil.utcnow(),
                                    totp_secret_enc=crypto.encrypt(secret, context="binding.totp")))
    db.session.commit()
    rid = start(api, wallet_no).get_json()["recovery_id"]
    code = api("POST", f"/recovery/{rid}/code", {"code": sms_code()}).get_json()
    assert code == {"result": "second_factor", "factor": "authenticator_code", "questions": []}
    # The answers are not accepted in place of the authenticator.
    refused = api("POST", f"/recovery/{rid}/second-factor",
                  {"answers": [{"code": c, "answer": a} for c, a in ANSWERS.items()]})
    assert refused.status_code == 422
    factor = api("POST", f"/recovery/{rid}/second-factor", {"authenticator_code": pyotp.TOTP(secret).now()})
    assert factor.status_code == 200 and factor.get_json()["result"] == "verified"


def test_the_token_is_single_use_and_a_refused_password_changes_nothing(app, api):
    wallet_no = make_wallet(with_2fa=False)
    rid = start(api, wallet_no).get_json()["recovery_id"]
    asked = api("POST", f"/recovery/{rid}/code", {"code": sms_code()}).get_json()["questions"]
    token = api("POST", f"/recovery/{rid}/second-factor",
                {"answers": [{"code": c, "answer": ANSWERS[c]} for c in asked]}).get_json()["recovery_token"]
    before = get_wallet(wallet_no).password_hash
    weak = api("POST", f"/recovery/{rid}/password", {"recovery_token": token, "new_password": "password"})
    assert weak.status_code == 422 and weak.get_json()["error"]["code"] == "password_policy"
    assert get_wallet(wallet_no).password_hash == before
    wrong = api("POST", f"/recovery/{rid}/password", {"recovery_token": "A" * 43, "new_password": NEW_PASSWORD})
    assert wrong.status_code == 403 and wrong.get_json()["error"]["code"] == "invalid_token"
    assert api("POST", f"/recovery/{rid}/password",
               {"recovery_token": token, "new_password": NEW_PASSWORD}).status_code == 200
    again = api("POST", f"/recovery/{rid}/password", {"recovery_token": token, "new_password": "Other-pass-9753"})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "wrong_step"


def test_a_recovery_expires(app, api):
    wallet_no = make_wallet()
    rid = start(api, wallet_no).get_json()["recovery_id"]
    timeutil.set_offset(timedelta(minutes=16))
    late = api("POST", f"/recovery/{rid}/code", {"code": "123456"})
    assert late.status_code == 410 and late.get_json()["error"]["code"] == "recovery_expired"
    assert api("POST", "/recovery/" + "x" * 32 + "/code", {"code": "123456"}).status_code == 404
    assert api("POST", "/recovery", {"wallet_no": wallet_no, "id_number": "1"}).status_code == 422
    assert api("POST", "/recovery", {"id_number": ID_NUMBERS[wallet_no]}).status_code == 422


def test_recovery_starts_are_limited_per_wallet_and_address(database_url, tmp_path):
    from console import create_app

    app = create_app("testing", {"DATABASE_URL": database_url, "SERVER_NAME": None, "RATELIMIT_ENABLED": True,
                                 "LIMIT_RECOVERY_WALLET": "2 per hour", "LIMIT_RECOVERY_ADDRESS": "3 per hour",
                                 "RISK_RECOVERY_SOURCES": 10})
    app.instance_path = str(tmp_path / "instance")
    key = app.config["WALLET_SERVICE_KEY"]
    with app.app_context():
        client = app.test_client()

        def api(method, path, body=None, *, on=None):
            return client.open(API + path, method=method, data=json.dumps(body),
                               headers={"Authorization": f"Bearer {key}"}, content_type="application/json")
        try:
            wallet_no, other = make_wallet(), make_wallet()
            per_wallet = [start(api, wallet_no, ip=f"198.51.100.{60 + i}").status_code for i in range(3)]
            assert per_wallet == [202, 202, 429]
            per_address = [start(api, w, ip="198.51.100.99").status_code for w in (other, other, wallet_no)]
            assert per_address[:2] == [202, 202] and per_address[2] == 429
        finally:
            db.session.remove()
            db.engine.dispose()


def test_an_expired_password_is_changed_with_the_old_one(app, api):
    wallet_no = make_wallet()
    wallet = get_wallet(wallet_no)
    wallet.password_expires_at = timeutil.utcnow() - timedelta(days=1)
    db.session.commit()
    signed_in = api("POST", "/sign-in", {"wallet_no": wallet_no, "password": WALLET_PASSWORD})
    assert signed_in.get_json()["result"] == "password_expired"
    changed = api("POST", "/change-password", {"wallet_no": wallet_no, "current_password": WALLET_PASSWORD,
                                               "new_password": NEW_PASSWORD})
    assert changed.status_code == 200 and changed.get_json()["result"] == "password_changed"
    assert api("POST", "/sign-in", {"wallet_no": wallet_no, "password": NEW_PASSWORD}).get_json()["result"] == "ok"
    event = audit_events("wallet.password_change")[-1]
    assert event.outcome == "success" and event.channel == "wallet"
    assert get_wallet(wallet_no).password_expires_at > timeutil.utcnow()


def test_the_counter_sees_why_and_still_unlocks(app, api, client, login_as):
    """Locked, then three failed recoveries: the app sends the customer to the counter, where the
    teller sees the attempts and why, verifies the ID document and unlocks."""
    from console.models.customer import Customer

    from .conftest import post_form, sign_in_wallet

    wallet_no = make_wallet(with_2fa=False)
    lock_by_wrong_passwords(api, wallet_no)
    for _ in range(3):
        recover(api, wallet_no, answers={c: "不对" for c in ANSWERS}, ip="198.51.100.70")
    refused, _, _ = recover(api, wallet_no, ip="198.51.100.70")
    assert refused.get_json()["error"]["details"]["reason"] == "counter_only"
    login_as("teller")
    customer_no = db.session.get(Customer, get_wallet(wallet_no).customer_id).customer_no
    page = client.get(f"/desk/customers/{customer_no}").get_data(as_text=True)
    assert "自助找回" in page and "安全问题回答错误" in page and "已转柜面办理" in page
    assert "钱包号" in page and "198.51.100.70" in page
    opened = post_form(client, f"/desk/customers/{customer_no}/cases", {}, token_from=f"/desk/customers/{customer_no}")
    case_no = opened.headers["Location"].rsplit("/", 1)[1]
    case_page = client.get(f"/desk/cases/{case_no}").get_data(as_text=True)
    assert "自助找回" in case_page
    post_form(client, f"/desk/cases/{case_no}/verify/counter",
              {"id_type": "resident_id", "id_number": ID_NUMBERS[wallet_no], "photo_matches": "y"},
              token_from=f"/desk/cases/{case_no}", follow=True)
    wallet = get_wallet(wallet_no)
    prefix = f"w{wallet.id}-unlock"
    post_form(client, f"/desk/cases/{case_no}/wallets/{wallet.id}/unlock",
              {f"{prefix}-reason_code": "locked_after_wrong_passwords", f"{prefix}-note": "自助找回失败转柜面",
               f"{prefix}-confirm": "y"}, token_from=f"/desk/cases/{case_no}", follow=True)
    assert get_wallet(wallet_no).lock_kind is None
    assert sign_in_wallet(wallet_no, WALLET_PASSWORD).result == "ok"


def test_the_auditor_sees_self_service_exceptions_and_filters_by_channel(app, api, client, login_as):
    wallet_no = make_wallet(with_2fa=False)
    for i in range(3):
        recover(api, wallet_no, ip=f"198.51.100.{80 + i}", password=f"Autumn-moon-{1357 + i}")
    login_as("auditor")
    dashboard = client.get("/audit/dashboard").get_data(as_text=True)
    customer_ref = audit_events("recovery.start")[0].customer_ref
    assert "自助找回" in dashboard and customer_ref in dashboard
    events = client.get("/audit/events?channel=self_service").get_data(as_text=True)
    assert "recovery.start" in events or "自助" in events
    assert client.get("/audit/events?channel=self_service").status_code == 200


def test_a_start_is_answered_no_sooner_than_the_floor_after_its_commit(app, api, monkeypatch):
    """Whatever matched, the answer waits out the policy's floor, counted from arrival and taken
    after the commit (so the SMS a matching start queues does not show in the time)."""
    import console.api.wallet as wallet_api
    from sqlalchemy import create_engine, func

    app.config["RECOVERY_START_MIN_MS"] = 60_000
    waits = []
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])

    def fake_sleep(seconds):
        with engine.connect() as conn:  # another connection: only committed rows are visible
            waits.append((seconds, conn.execute(select(func.count(Recovery.id))).scalar()))

    monkeypatch.setattr(wallet_api.time, "sleep", fake_sleep)
    wallet_no = make_wallet()
    assert start(api, wallet_no).status_code == 202
    assert start(api, "99999999999999", id_number=ID_NUMBERS[wallet_no]).status_code == 202
    engine.dispose()
    assert [count for _s, count in waits] == [1, 2]
    assert all(55 < seconds <= 60 for seconds, _c in waits)


def test_the_staff_api_lists_the_customers_recoveries(app, api, client):
    from console.models.customer import Customer

    from .conftest import make_staff, totp_code

    wallet_no = make_wallet()
    start(api, wallet_no, ip="198.51.100.90")
    start(api, wallet_no, id_number="11010519491231002X", ip="198.51.100.91")
    teller = make_staff("teller")
    token = client.post("/api/v1/tokens", json={"employee_no": teller.employee_no, "password": teller.password,
                                                "totp_code": totp_code(teller)}).get_json()["token"]
    customer_no = db.session.get(Customer, get_wallet(wallet_no).customer_id).customer_no
    body = client.get(f"/api/v1/customers/{customer_no}", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert [(r["status"], r["reason"], r["source_ip"]) for r in body["self_service"]] == [
        ("code_sent", "details_mismatch", "198.51.100.91"), ("code_sent", None, "198.51.100.90")]


def test_the_desk_shows_an_expired_password_as_expired(app, client, login_as):
    from console.models.customer import Customer

    wallet_no = make_wallet()
    wallet = get_wallet(wallet_no)
    wallet.password_expires_at = timeutil.utcnow() - timedelta(days=2)
    db.session.commit()
    login_as("teller")
    customer_no = db.session.get(Customer, wallet.customer_id).customer_no
    page = client.get(f"/desk/customers/{customer_no}").get_data(as_text=True)
    assert "密码已过期" in page and "已于" in page
    assert 'badge ok' not in page  # not "启用" beside an expired password


def test_a_wallet_number_alone_cannot_freeze_a_wallet(app, api):
    wallet_no, other = make_wallet(), make_wallet()
    for i in range(4):
        start(api, wallet_no, id_number=ID_NUMBERS[other], ip=f"203.0.113.{i + 1}", device=f"dev-{i}")
    assert get_wallet(wallet_no).frozen_at is None
    assert len(audit_events("recovery.start")) == 4  # still seen, on the wallet they named


def test_starting_again_after_a_wrong_code_counts_as_a_failure(app, api):
    from console.services import verification

    wallet_no = make_wallet()
    customer_id = get_wallet(wallet_no).customer_id
    for i in range(3):
        rid = start(api, wallet_no, ip="198.51.100.120").get_json()["recovery_id"]
        assert api("POST", f"/recovery/{rid}/code", {"code": "000000"}).status_code == 422
        assert verification.failed_recently(db.session, customer_id) == i
    start(api, wallet_no, ip="198.51.100.120")
    assert verification.failed_recently(db.session, customer_id) == 3
    assert len(audit_events("customer.flagged_counter_only")) == 1
    assert [e.reason_code for e in audit_events("recovery.superseded")] == ["superseded"] * 3
    # A right code now only finds the counter.
    rid = start(api, wallet_no, ip="198.51.100.120").get_json()["recovery_id"]
    refused = api("POST", f"/recovery/{rid}/code", {"code": sms_code()})
    assert refused.get_json()["error"]["details"]["reason"] == "counter_only"


def test_a_code_withheld_by_the_sms_cap_is_never_right(app, api):
    app.config["LIMIT_OTP_PER_CUSTOMER"] = "1 per 10 minutes"
    wallet_no = make_wallet()
    start(api, wallet_no)
    first = sms_code()
    rid = start(api, wallet_no).get_json()["recovery_id"]
    assert audit_events("recovery.code_withheld")
    assert api("POST", f"/recovery/{rid}/code", {"code": first}).status_code == 422


def test_the_request_log_leaves_the_recovery_id_out(app, api, caplog):
    import logging

    wallet_no = make_wallet()
    rid = start(api, wallet_no).get_json()["recovery_id"]
    with caplog.at_level(logging.INFO):
        api("POST", f"/recovery/{rid}/code", {"code": "000000"})
    lines = [r.getMessage() for r in caplog.records if "/recovery/" in r.getMessage()]
    assert lines and all(rid not in line for line in lines)


def test_a_recovery_burst_alert_says_what_was_counted(app, api, client, login_as):
    from console.models.customer import RiskAlert as Alert

    from .conftest import make_branch

    wallet_no = make_wallet()
    get_wallet(wallet_no).home_branch_id = make_branch("BJ-001").id
    db.session.commit()
    for i in range(3):
        start(api, wallet_no, ip=f"203.0.113.{i + 1}")
    login_as("supervisor")
    alert_id = db.session.scalars(select(Alert.id)).one()
    for page in (client.get("/").get_data(as_text=True), client.get("/alerts/").get_data(as_text=True),
                 client.get(f"/alerts/{alert_id}").get_data(as_text=True)):
        assert "3 次自助找回" in page and "None" not in page


def test_a_crash_before_any_statement_of_the_last_step_changes_nothing(app, api):
    """The password step is one transaction: killed before any of its statements, the password,
    the lock, the recovery and the audit trail are as they were, and the same token still works
    (the run with no statement left to kill before is the one that completes)."""
    from console.services import audit, recovery

    from .faults.crash import Crash, crash_before_statement

    wallet_no = make_wallet(with_2fa=False)
    lock_by_wrong_passwords(api, wallet_no)
    rid = start(api, wallet_no).get_json()["recovery_id"]
    asked = api("POST", f"/recovery/{rid}/code", {"code": sms_code()}).get_json()["questions"]
    token = api("POST", f"/recovery/{rid}/second-factor",
                {"answers": [{"code": c, "answer": ANSWERS[c]} for c in asked]}).get_json()["recovery_token"]
    before = (get_wallet(wallet_no).password_hash, len(audit_events()))

    def complete():
        try:
            recovery.complete(db.session, rid, token, NEW_PASSWORD)
            db.session.commit()
        finally:
            db.session.rollback()

    # Before the 1st statement, the 2nd, ... until a run has no n-th statement: it completed.
    # The step's own statements: its events wait in the intake and are chained after each run (the
    # sequencer's crashes are tests/test_audit_sequencer.py's).
    from console.services import sequencer

    n = 0
    while True:
        n += 1
        app.config["AUDIT_CHAIN_MODE"] = "background"
        with crash_before_statement(db.engine, n) as fired:
            try:
                complete()
            except Crash:
                pass
        app.config["AUDIT_CHAIN_MODE"] = "commit"
        db.session.remove()
        sequencer.chain_pending(db.engine)
        if fired["at"] is None:
            break
        wallet = get_wallet(wallet_no)
        assert (wallet.password_hash, len(audit_events())) == before and wallet.lock_kind == "temporary", n
        assert db.session.scalars(select(Recovery.status)).one() == "verified"
    assert n > 5
    wallet = get_wallet(wallet_no)
    assert wallet.password_hash != before[0] and wallet.lock_kind is None
    assert db.session.scalars(select(Recovery.status)).one() == "completed"
    again = api("POST", f"/recovery/{rid}/password", {"recovery_token": token, "new_password": NEW_PASSWORD})
    assert again.status_code == 409
    assert audit.verify_chain(db.session).intact
