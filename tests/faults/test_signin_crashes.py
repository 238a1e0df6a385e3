"""No wallet stays unusable after a crash or a dropped connection at any point of a sign-in.

Each scenario first counts the statements of an undisturbed sign-in, then for every n kills
the attempt just before its n-th statement (so between every pair of statements, commits
included), lets the claim's expiry pass, and checks that the wallet works again, that state,
attempt log and audit trail agree, and that the chain is intact.
"""
from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError

from console import faults, policy, timeutil
from console.extensions import db
from console.models.customer import LoginAttempt, Wallet, WalletLock
from console.services import audit, wallet_signin

from ..conftest import PG_URL, WALLET_PASSWORD, audit_events, get_wallet, make_wallet, sign_in_wallet
from .crash import Crash, crash_before_statement, statements_counted

SCENARIOS = {
    # name: (failures before, password tried)
    "right_password": (0, WALLET_PASSWORD),
    "wrong_password": (0, "wrong-password-1"),
    "fifth_wrong_password_locks": (4, "wrong-password-1"),
}


class Clock:
    """Moves the application clock forward past a claim's expiry instead of sleeping."""

    def __init__(self):
        self.offset = timedelta(0)

    def pass_claim_expiry(self, app):
        self.offset += timedelta(seconds=app.config["WALLET_CLAIM_TTL_SECONDS"] + 1)
        timeutil.set_offset(self.offset)


def _prepare(wallet_no: str, failures: int) -> None:
    """Bring the wallet to a known state: no lock, no claim, ``failures`` settled failures (as
    that many wrong passwords would leave it; set directly to keep the run short)."""
    db.session.execute(update(Wallet).where(Wallet.wallet_no == wallet_no)
                       .values(lock_kind=None, lock_until=None, locked_at=None, failed_count=failures))
    db.session.execute(WalletLock.__table__.delete())
    db.session.commit()


def _attempt(wallet_no, password):
    return wallet_signin.authenticate(db.session, wallet_no, password, commit=db.session.commit,
                                      source_ip="198.51.100.7")


def _check_recovered(wallet_no: str, clock: Clock, app) -> str:
    """After the crash: the wallet answers truthfully once the dead claim expires."""
    db.session.remove()
    wallet = get_wallet(wallet_no)
    claims_before = wallet.attempt_seq - wallet.settled_seq
    clock.pass_claim_expiry(app)
    outcome = sign_in_wallet(wallet_no, WALLET_PASSWORD)
    wallet = get_wallet(wallet_no)
    # Never stuck: the right password either signs in, or meets a real, recorded lock.
    if wallet.lock_kind:
        assert outcome.result == "locked"
        assert db.session.scalar(select(func.count()).select_from(WalletLock)) == 1
        assert len(audit_events("wallet.locked")) >= 1
    else:
        assert outcome.result == "ok", outcome
        assert wallet.failed_count == 0
    # Every claim is settled, and each dead one is recorded as abandoned with its audit event.
    assert wallet.attempt_seq == wallet.settled_seq
    assert db.session.scalar(select(func.count()).select_from(LoginAttempt)
                             .where(LoginAttempt.result == "pending")) == 0
    abandoned = db.session.scalar(select(func.count()).select_from(LoginAttempt)
                                  .where(LoginAttempt.result == "abandoned"))
    assert abandoned == len(audit_events("wallet.attempt_abandoned"))
    if claims_before:
        assert abandoned >= 1
    assert audit.verify_chain(db.session).intact
    return outcome.result


@contextlib.contextmanager
def _request_statements_only(app):
    """The attempt's own statements: its events wait in the intake (background mode) rather than
    being chained after its COMMIT on another connection, which the sequencer's own crash tests
    cover (tests/test_audit_sequencer.py); chained once the attempt is over."""
    from console.services import sequencer

    app.config["AUDIT_CHAIN_MODE"] = "background"
    try:
        yield
    finally:
        app.config["AUDIT_CHAIN_MODE"] = "commit"
        db.session.rollback()
        sequencer.chain_pending(db.engine)


def _run(app, scenario: str, *, drop: bool):
    failures, password = SCENARIOS[scenario]
    clock = Clock()
    wallet_no = make_wallet()
    _prepare(wallet_no, failures)
    with _request_statements_only(app), statements_counted(db.engine) as counted:
        expected = _attempt(wallet_no, password)
    total = counted["n"]
    assert total >= 4  # the claim (which reads the wallet) and its attempt, the settlement and its attempt
    _prepare(wallet_no, failures)
    seen = set()
    for n in range(1, total + 2):
        db.session.commit()
        raised = None
        # Before each statement; then after the last commit, before the answer leaves.
        fault = (crash_before_statement(db.engine, n, drop_connection_url=_admin_url(app) if drop else None)
                 if n <= total else _crash_at_point("signin.committed"))
        with _request_statements_only(app), fault as fired:
            try:
                _attempt(wallet_no, password)
            except (Crash, DBAPIError) as exc:
                raised = exc
        assert fired["at"] is not None, f"statement {n} of {total} never ran"
        assert raised is not None, f"the attempt survived a fault before statement {n}: {fired['at']}"
        seen.add(_check_recovered(wallet_no, clock, app))
        db.session.remove()
        _prepare(wallet_no, failures)
    # The undisturbed outcome was the expected one, and the faults hit both sides of the commit.
    assert expected.result == {"right_password": "ok", "wrong_password": "invalid_credentials",
                               "fifth_wrong_password_locks": "locked"}[scenario]
    if scenario == "fifth_wrong_password_locks":
        assert seen == {"ok", "locked"}


@contextlib.contextmanager
def _crash_at_point(name):
    fired = {"at": None}

    def hook(point):
        fired["at"] = point
        raise Crash(point)

    with faults.installed(name, hook):
        yield fired


def _admin_url(app):
    return app.config["SQLALCHEMY_DATABASE_URI"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_worker_killed_between_any_two_statements_leaves_no_wallet_unusable(app, scenario):
    _run(app, scenario, drop=False)


@pytest.mark.postgres_only
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_connection_dropped_before_any_statement_leaves_no_wallet_unusable(app, backend, scenario):
    _run(app, scenario, drop=True)


def test_staff_see_an_interrupted_sign_in_and_clear_it(app, client, login_as):
    """A sign-in killed after its claim shows on the customer page; a teller clears it at once
    (audited as the teller), and the customer's next sign-in needs no wait."""
    import re

    from ..conftest import post_form

    wallet_no = make_wallet()
    with _crash_at_point("signin.checked"):
        with pytest.raises(Crash):
            _attempt(wallet_no, WALLET_PASSWORD)
    db.session.remove()
    handle = login_as("teller")
    customer_no = get_wallet(wallet_no).customer.customer_no
    page = client.get(f"/desk/customers/{customer_no}").get_data(as_text=True)
    assert "正在核验" in page or "being checked" in page  # live for a few seconds: not yet clearable
    assert "clear-interrupted-sign-ins" not in page
    Clock().pass_claim_expiry(app)
    page = client.get(f"/desk/customers/{customer_no}").get_data(as_text=True)
    assert "clear-interrupted-sign-ins" in page
    action = re.search(r'action="([^"]*clear-interrupted-sign-ins)"', page).group(1)
    response = post_form(client, action, {}, token_from=f"/desk/customers/{customer_no}", follow=True)
    assert response.status_code == 200
    wallet = get_wallet(wallet_no)
    assert wallet.attempt_seq == wallet.settled_seq
    cleared = audit_events("wallet.attempt_abandoned")
    assert len(cleared) == 1 and cleared[0].actor_employee_no == handle.employee_no
    assert "clear-interrupted-sign-ins" not in client.get(f"/desk/customers/{customer_no}").get_data(as_text=True)
    # The staff API shows the same state.
    assert sign_in_wallet(wallet_no, WALLET_PASSWORD).result == "ok"
    assert audit.verify_chain(db.session).intact


def test_a_wallet_left_at_the_limit_without_a_lock_is_locked_not_busy(app):
    """The state the engine before claim expiries left behind (failed_count at the limit, no lock,
    nothing in flight), or a lowered threshold: the next sign-in places the lock the order calls
    for (audited, with its SMS) and answers "locked" at once, never "busy" for ever."""
    wallet_no = make_wallet()
    db.session.execute(update(Wallet).where(Wallet.wallet_no == wallet_no).values(failed_count=5))
    db.session.commit()
    outcome = sign_in_wallet(wallet_no, WALLET_PASSWORD)
    assert outcome.result == "locked" and not outcome.password_checked
    wallet = get_wallet(wallet_no)
    assert wallet.lock_kind == "temporary"
    assert len(audit_events("wallet.locked")) == 1
    # Lowered threshold: 3 failures stand, the limit becomes 3.
    other = make_wallet()
    db.session.execute(update(Wallet).where(Wallet.wallet_no == other).values(failed_count=3))
    db.session.commit()
    app.config["WALLET_LOCKOUT_THRESHOLD"] = 3
    policy.rebuild(app)
    assert sign_in_wallet(other, WALLET_PASSWORD).result == "locked"


def test_a_renewed_claim_is_not_given_up(app):
    """An owner that renews its claim keeps it, even if a waiter saw it expired a moment before."""
    wallet_no = make_wallet()
    with _crash_at_point("signin.checked"):
        with pytest.raises(Crash):
            _attempt(wallet_no, WALLET_PASSWORD)
    db.session.remove()
    wallet = get_wallet(wallet_no)
    head = db.session.scalar(select(LoginAttempt).where(LoginAttempt.result == "pending"))
    Clock().pass_claim_expiry(app)
    # The owner renews just before the waiter acts (as if it had been slow, not dead).
    db.session.execute(update(LoginAttempt).where(LoginAttempt.id == head.id)
                       .values(claim_expires_at=timeutil.utcnow() + timedelta(seconds=30)))
    db.session.commit()
    assert wallet_signin.abandon_expired_head(db.session, wallet.id) is False
    db.session.commit()
    assert get_wallet(wallet_no).settled_seq == 0
    assert db.session.get(LoginAttempt, head.id).result == "pending"
