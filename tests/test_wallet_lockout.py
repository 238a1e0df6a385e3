"""The wallet lockout engine: exact counting, escalation, lapse, refusal without a check."""
import json
import threading
import time
from datetime import timedelta

import pytest

from console import policy, timeutil
from console.extensions import db
from console.models.customer import LoginAttempt, WalletLock
from console.services import wallet_signin

from .concurrency import run_together
from .conftest import WALLET_PASSWORD, audit_events, get_wallet, make_wallet, sign_in_wallet


@pytest.fixture
def checks(monkeypatch):
    """Counts real password checks (argon2 verifications) made by the engine."""
    counter = {"n": 0}
    lock = threading.Lock()
    real = wallet_signin.verify_password

    def counting(stored, password):
        with lock:
            counter["n"] += 1
        return real(stored, password)

    monkeypatch.setattr(wallet_signin, "verify_password", counting)
    return counter


def test_right_password_signs_in(app):
    wallet_no = make_wallet()
    outcome = sign_in_wallet(wallet_no, WALLET_PASSWORD)
    assert outcome.result == "ok"


def test_five_wrong_passwords_lock_for_thirty_minutes(app, checks):
    wallet_no = make_wallet()
    results = [sign_in_wallet(wallet_no, "wrong-one").result for _ in range(5)]
    assert results == ["invalid_credentials"] * 4 + ["locked"]
    wallet = get_wallet(wallet_no)
    assert wallet.lock_kind == "temporary"
    assert timedelta(minutes=29) < wallet.lock_until - timeutil.utcnow() <= timedelta(minutes=30)
    locked = audit_events("wallet.locked")
    assert len(locked) == 1 and locked[0].actor_type == "system"
    assert json.loads(locked[0].after_state)["lock_kind"] == "temporary"
    # Locked: even the right password is refused, without a check.
    before = checks["n"]
    outcome = sign_in_wallet(wallet_no, WALLET_PASSWORD)
    assert outcome.result == "locked" and outcome.lock_reason == "too_many_failures"
    assert checks["n"] == before == 5


def test_remaining_attempts_count_down_and_success_resets(app):
    wallet_no = make_wallet()
    assert [sign_in_wallet(wallet_no, "nope-nope").remaining for _ in range(3)] == [4, 3, 2]
    assert sign_in_wallet(wallet_no, WALLET_PASSWORD).result == "ok"
    assert get_wallet(wallet_no).failed_count == 0
    assert sign_in_wallet(wallet_no, "nope-nope").remaining == 4


def test_a_sign_in_with_a_free_slot_finds_and_claims_its_wallet_in_one_statement(app):
    """The claim finds the wallet by its number and returns it: no read of the wallet before it."""
    import re

    from sqlalchemy import event

    wallet_no = make_wallet()
    db.session.remove()
    sent = []

    def before(conn, cursor, statement, parameters, context, executemany):
        sent.append(" ".join(statement.split()).lower())

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        assert sign_in_wallet(wallet_no, WALLET_PASSWORD).result == "ok"
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
    on_wallet = [statement for statement in sent if re.search(r"(from|update) wallet\b", statement)]
    assert on_wallet[0].startswith("update wallet set attempt_seq") and "wallet.wallet_no =" in on_wallet[0]
    assert get_wallet(wallet_no).attempt_seq == get_wallet(wallet_no).settled_seq == 1


def test_lock_lapses_by_itself_and_escalates_within_24_hours(app):
    wallet_no = make_wallet()
    for _ in range(5):
        sign_in_wallet(wallet_no, "wrong-one")
    timeutil.set_offset(timedelta(minutes=31))
    assert sign_in_wallet(wallet_no, WALLET_PASSWORD).result == "ok"
    lapsed = audit_events("wallet.lock_lapsed")
    assert len(lapsed) == 1 and lapsed[0].actor_type == "system"
    # Second lock within 24 hours: 60 minutes.
    for _ in range(5):
        sign_in_wallet(wallet_no, "wrong-one")
    wallet = get_wallet(wallet_no)
    assert wallet.lock_until - timeutil.utcnow() > timedelta(minutes=59)
    timeutil.set_offset(timedelta(minutes=31 + 59))
    assert sign_in_wallet(wallet_no, WALLET_PASSWORD).result == "locked"
    timeutil.set_offset(timedelta(minutes=31 + 61))
    assert sign_in_wallet(wallet_no, WALLET_PASSWORD).result == "ok"
    # Third: until staff unlock it.
    for _ in range(5):
        sign_in_wallet(wallet_no, "wrong-one")
    wallet = get_wallet(wallet_no)
    assert wallet.lock_kind == "until_unlock" and wallet.lock_until is None
    timeutil.set_offset(timedelta(days=3))
    outcome = sign_in_wallet(wallet_no, WALLET_PASSWORD)
    assert outcome.result == "locked" and outcome.lock_reason == "too_many_failures_staff_unlock"
    assert [json.loads(e.after_state)["lock_kind"] for e in audit_events("wallet.locked")] == [
        "temporary", "temporary", "until_unlock"]


def test_locks_older_than_the_window_do_not_escalate(app):
    wallet_no = make_wallet()
    for _ in range(5):
        sign_in_wallet(wallet_no, "wrong-one")
    timeutil.set_offset(timedelta(hours=25))
    for _ in range(5):
        sign_in_wallet(wallet_no, "wrong-one")
    wallet = get_wallet(wallet_no)
    assert wallet.lock_kind == "temporary"
    assert wallet.lock_until - timeutil.utcnow() <= timedelta(minutes=30)


def test_configured_policy_is_honoured(app):
    app.config["WALLET_LOCKOUT_THRESHOLD"] = 3
    app.config["WALLET_LOCK_DURATIONS_MINUTES"] = (10,)
    policy.rebuild(app)
    wallet_no = make_wallet()
    assert [sign_in_wallet(wallet_no, "x-wrong-x").result for _ in range(3)][-1] == "locked"
    assert get_wallet(wallet_no).lock_until - timeutil.utcnow() <= timedelta(minutes=10)
    timeutil.set_offset(timedelta(minutes=11))
    for _ in range(3):
        sign_in_wallet(wallet_no, "x-wrong-x")
    assert get_wallet(wallet_no).lock_kind == "until_unlock"


def test_expired_password_is_reported_after_a_correct_check(app):
    wallet_no = make_wallet()
    timeutil.set_offset(timedelta(days=366))
    assert sign_in_wallet(wallet_no, WALLET_PASSWORD).result == "password_expired"


def test_attempts_are_logged_operationally_not_in_the_audit_chain(app):
    wallet_no = make_wallet()
    before = len(audit_events())
    sign_in_wallet(wallet_no, "wrong-one", source_ip="192.0.2.44")
    sign_in_wallet(wallet_no, WALLET_PASSWORD)
    rows = db.session.query(LoginAttempt).order_by(LoginAttempt.id).all()
    assert [(r.result, r.source_ip, r.password_checked) for r in rows] == [
        ("invalid_credentials", "192.0.2.44", True), ("ok", "198.51.100.7", True)]
    assert len(audit_events()) == before


def _burst(app, wallet_no, password, n, sources=1):
    def attempt(i):
        outcome = wallet_signin.authenticate(db.session, wallet_no, password, commit=db.session.commit,
                                             source_ip=f"10.1.0.{i % sources}")
        return outcome.result, outcome.password_checked

    return run_together(attempt, n, app=app)


@pytest.mark.postgres_only
def test_fifty_concurrent_wrong_passwords_check_exactly_five(app, backend, checks):
    app.config["WALLET_CLAIM_WAIT_SECONDS"] = 120  # waiting attempts settle on the lock, never "busy"
    wallet_no = make_wallet()
    results = _burst(app, wallet_no, "wrong-password", 50)
    assert checks["n"] == 5
    # Five attempts were checked (an early one may answer "locked" if the lock landed meanwhile);
    # the other 45 were refused without a check.
    assert sum(1 for _result, checked in results if checked) == 5
    assert len(results) == 50 and {result for result, _ in results} <= {"invalid_credentials", "locked"}
    assert [result for result, checked in results if not checked] == ["locked"] * 45
    assert len(audit_events("wallet.locked")) == 1
    assert db.session.query(WalletLock).count() == 1
    checked = db.session.query(LoginAttempt).filter_by(password_checked=True).count()
    assert checked == 5


@pytest.mark.postgres_only
def test_fifty_concurrent_right_passwords_never_lock(app, backend, checks):
    # 50 argon2 checks queue for a few seconds on two cores; let every attempt wait its turn
    # instead of answering "busy" (which is not a lock, but would make the outcome timing-dependent).
    app.config["WALLET_CLAIM_WAIT_SECONDS"] = 120
    policy.rebuild(app)
    wallet_no = make_wallet()
    results = _burst(app, wallet_no, WALLET_PASSWORD, 50)
    assert results == [("ok", True)] * 50
    assert get_wallet(wallet_no).lock_kind is None
    assert audit_events("wallet.locked") == []


def _second_behind_first(app, monkeypatch, wallet_no, passwords, while_waiting=lambda: None):
    """Two attempts on one wallet in this process: the first claims (seq 1), is checked and held
    before it settles; the second claims after it (seq 2), is checked and waits for its turn. Then
    ``while_waiting()`` runs and the first is released. Returns the results by name, when each
    attempt finished, and what each of the second's waits returned (True: notified)."""
    from console import faults

    first_checked, release_first, second_waiting = threading.Event(), threading.Event(), threading.Event()
    woken = []

    class Settled(threading.Condition):
        def wait(self, timeout=None):
            second_waiting.set()
            woken.append(super().wait(timeout))
            return woken[-1]

    monkeypatch.setattr(wallet_signin, "_settled", Settled())

    def hold_the_first(_name):
        if threading.current_thread().name == "first":
            first_checked.set()
            assert release_first.wait(30)

    results, finished = {}, {}

    def attempt(name):
        with app.app_context():
            results[name] = sign_in_wallet(wallet_no, passwords[name]).result
            finished[name] = time.monotonic()
            db.session.remove()

    with faults.installed("signin.checked", hold_the_first):
        first = threading.Thread(target=attempt, args=("first",), name="first", daemon=True)
        first.start()
        assert first_checked.wait(30)  # claimed (seq 1) and checked, not settled
        second = threading.Thread(target=attempt, args=("second",), name="second", daemon=True)
        second.start()
        assert second_waiting.wait(30)  # claimed after it (seq 2), checked, waiting for its turn
        while_waiting()
        release_first.set()
        first.join(30)
        second.join(30)
    return results, finished, woken


def test_a_checked_attempt_is_woken_by_an_earlier_settlement_in_its_process(app, monkeypatch):
    """The second of two attempts on one wallet, checked first, waits for the first to settle; when
    the first settles in the same process it is woken at once, not after its pause (here 60 s)."""
    monkeypatch.setattr(wallet_signin, "SETTLE_POLL_SECONDS", (60.0, 60.0))
    wallet_no = make_wallet()
    released = []
    results, finished, woken = _second_behind_first(
        app, monkeypatch, wallet_no, {"first": "wrong-password", "second": WALLET_PASSWORD},
        while_waiting=lambda: released.append(time.monotonic()))
    assert results == {"first": "invalid_credentials", "second": "ok"}
    assert finished["second"] - released[0] < 30  # woken by the settlement, not by its 60 s pause
    assert woken == [True]  # notified, not timed out


def test_a_waiting_attempt_renews_its_claim_once_half_its_time_has_passed_not_at_every_look(app, monkeypatch):
    """A checked attempt waiting for its turn keeps its claim alive, but a look is a read: it
    renews once half the claim's time has passed (here 1.5 s of 3), not at each of its ~12 ms looks."""
    app.config["WALLET_CLAIM_TTL_SECONDS"] = 3
    policy.rebuild(app)
    wallet_no = make_wallet()
    renewals = []
    real_renew = wallet_signin._renew

    def renew(session, claim):
        renewals.append(claim.seq)
        real_renew(session, claim)

    monkeypatch.setattr(wallet_signin, "_renew", renew)
    # Past half the second's claim time, well before the first's claim expires.
    results, _finished, _woken = _second_behind_first(
        app, monkeypatch, wallet_no, {"first": WALLET_PASSWORD, "second": WALLET_PASSWORD},
        while_waiting=lambda: time.sleep(1.8))
    assert results == {"first": "ok", "second": "ok"}
    assert renewals == [2]  # once, by the second attempt (seq 2), in ~1.8 s of looks every few ms
