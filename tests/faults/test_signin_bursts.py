"""Every burst of concurrent sign-ins answers as if its attempts ran one by one in the recorded order.

The order is ``login_attempt.seq`` (handed out when an attempt claims its check). Replaying
a burst's rows in that order with the plain sequential rules must give exactly the answers
the clients got: no "ok" after the lock, the lock on the fifth failure since the last success,
and never more than five wrong passwords checked since a success.

``CONSOLE_FAULT_PROFILE=long`` runs 100 bursts per backend (positions 1-20, five times each);
CI runs every other position on PostgreSQL and every fourth on SQLite (which serialises writers
anyway).
"""
from __future__ import annotations

import os
import threading

from sqlalchemy import select

from console import faults
from console.extensions import db
from console.models.customer import LoginAttempt, Wallet
from console.services import wallet_signin

from ..concurrency import run_together
from ..conftest import WALLET_PASSWORD, audit_events, make_wallet

BURST = 20
LONG = os.environ.get("CONSOLE_FAULT_PROFILE") == "long"


def positions(backend: str) -> list[int]:
    if LONG:
        return list(range(BURST)) * 5
    return list(range(0, BURST, 2 if backend == "postgresql" else 4))
SUCCESS = set(wallet_signin.SUCCESS_RESULTS)


def burst(app, wallet_no: str, passwords: list[str], *, claims_first: int | None = None):
    """Sign in with every password at once. ``claims_first``: that attempt claims its place before
    the others start (so it is first in the order, whatever the scheduler does)."""
    first_claimed = threading.Event()
    if claims_first is None:
        first_claimed.set()
    thread = threading.local()

    def claimed(_point):
        if getattr(thread, "claims_first", False):
            first_claimed.set()

    def attempt(i):
        if i == claims_first:
            thread.claims_first = True
        else:
            first_claimed.wait(30)
        outcome = wallet_signin.authenticate(db.session, wallet_no, passwords[i], commit=db.session.commit,
                                             source_ip="198.51.100.9")
        return outcome.result, outcome.seq, outcome.password_checked

    with faults.installed("signin.claimed", claimed):
        return run_together(attempt, len(passwords), app=app, timeout=None)


def replay(answers, right_index: int, limit: int, *, allow_busy: bool = False) -> dict:
    """Check the answers against the sequential rules in seq order; return what the order was."""
    assert not [a for a in answers if isinstance(a, Exception)], answers
    claimed = sorted((seq, i, result) for i, (result, seq, _checked) in enumerate(answers) if seq is not None)
    failures = checks_since_success = 0
    locked_at = None
    for seq, i, result in claimed:
        assert locked_at is None, f"attempt {seq} was admitted after the lock at {locked_at}"
        if result == "busy":  # its claim was abandoned while it waited: it took no part in the order
            assert allow_busy, (seq, result)
            continue
        if i == right_index:
            assert result in SUCCESS, (seq, result)
            failures = checks_since_success = 0
            continue
        failures += 1
        checks_since_success += 1
        assert checks_since_success <= limit
        if failures == limit:
            assert result == "locked", (seq, result)
            locked_at = seq
        else:
            assert result == "invalid_credentials", (seq, result)
    unclaimed = [result for result, seq, checked in answers if seq is None]
    assert all(not checked for _r, seq, checked in answers if seq is None)
    assert set(unclaimed) <= ({"locked", "busy"} if allow_busy else {"locked"}), unclaimed
    if "locked" in unclaimed:
        assert locked_at is not None
    right = answers[right_index]
    return {"locked_at": locked_at, "right_seq": right[1], "right_result": right[0],
            "checked": len(claimed)}


def test_bursts_with_the_right_password_anywhere_match_one_recorded_order(app, backend):
    app.config["WALLET_CLAIM_WAIT_SECONDS"] = 60  # on a busy machine wait rather than answer "busy"
    limit = app.config["WALLET_LOCKOUT_THRESHOLD"]
    seen = {"ok_then_locked": 0, "locked_before_right": 0, "unlocked": 0}
    for position in positions(backend):
        wallet_no = make_wallet()
        passwords = ["wrong-password-x"] * BURST
        passwords[position] = WALLET_PASSWORD
        # The first burst puts the right password first in the order; the others leave it to chance.
        answers = burst(app, wallet_no, passwords, claims_first=position if position == positions(backend)[0] else None)
        order = replay(answers, position, limit)
        # The recorded order is the one replayed: the log agrees with the answers.
        wallet = db.session.scalar(select(Wallet).where(Wallet.wallet_no == wallet_no))
        rows = db.session.scalars(select(LoginAttempt).where(LoginAttempt.wallet_id == wallet.id,
                                                             LoginAttempt.seq.is_not(None))
                                  .order_by(LoginAttempt.seq)).all()
        by_seq = {seq: result for result, seq, _c in answers if seq is not None}
        assert [(r.seq, r.result) for r in rows] == sorted(by_seq.items())
        assert wallet.attempt_seq == wallet.settled_seq == len(rows)
        assert (wallet.lock_kind is not None) == (order["locked_at"] is not None)
        locks = [e for e in audit_events("wallet.locked") if e.customer_ref == wallet.customer.customer_no]
        assert len(locks) == (1 if wallet.lock_kind else 0)
        if order["right_result"] in SUCCESS and wallet.lock_kind:
            seen["ok_then_locked"] += 1
        elif wallet.lock_kind:
            seen["locked_before_right"] += 1
        else:
            seen["unlocked"] += 1
    # With 19 wrong passwords in the burst, the wallet always ends locked, and the right password
    # signed in exactly when it came before the fifth failure in the order.
    assert seen["unlocked"] == 0
    assert seen["ok_then_locked"] >= 1
