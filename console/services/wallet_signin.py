"""The wallet sign-in lockout engine (DESIGN.md section 3).

Claim, check, settle in order. Every password check is first *claimed*: one conditional
UPDATE hands out the wallet's next order number (``attempt_seq``) only while

    failed_count + (attempt_seq - settled_seq) < limit      and the wallet is neither locked nor frozen,

and the same transaction inserts the attempt's ``login_attempt`` row as ``pending`` with that
number, its owner and an expiry. The claim is committed before the slow check, so every other
attempt sees it. Checks then run in parallel, but their results are *settled* one at a time in
claim order (``settled_seq`` advances by exactly one per attempt): a settlement applies only
when every earlier claim has been settled. So the answers of any burst are those of running its
attempts one after another in ``seq`` order, which ``login_attempt.seq`` records:

- a success resets ``failed_count`` and is answered "ok" only if no lock or freeze precedes it;
- a failure adds one, and the ``limit``-th failure since the last success (or staff unlock)
  locks the wallet, escalating within the window;
- pending claims count as failures for admission, so never more than ``limit`` wrong
  passwords are checked between a success and the lock, at any concurrency, on any number of
  nodes, and none after it.

A claim cannot outlive its attempt: its owner renews the expiry while it waits to settle; a
claim past its expiry (the worker died or its connection dropped) is settled as ``abandoned``
by whoever needs the slot or the turn, which counts neither as a failure nor as a success
(the client got no answer) and is audited. Staff can do the same from the desk. "busy" is
answered only after waiting for live claims, with the seconds to wait before retrying.

This is the one service that commits between its steps, through the ``commit`` callable its
caller passes: the claim must be visible to other attempts before the slow check.
"""
from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session, scoped_session
from sqlalchemy.orm.attributes import set_committed_value

from .. import faults, policy, timeutil
from ..models.customer import LoginAttempt, RiskAlert, Wallet, WalletLock
from ..passwords import verify_password
from ..timeutil import utcnow
from . import audit, notifications
from .actor import Actor
from .errors import NotFound

FAILURE_RESULTS = ("invalid_credentials", "locked")
SUCCESS_RESULTS = ("ok", "must_change_password", "password_expired")
POLL_SECONDS = (0.003, 0.1)  # first and longest pause between looks while waiting for a slot
# ... and while a checked attempt waits for an earlier claim to settle. That claim's check ends
# within about one argon2id check (~0.1 s), and every look later than its end is time a checked
# answer sits idle in a worker: look again within a small part of a check. A look is reads and a
# COMMIT with nothing written (the claim is renewed only once half its time has passed), and at
# most ``threshold`` claims are unsettled on a wallet at once.
SETTLE_POLL_SECONDS = (0.003, 0.012)


# The statements of every sign-in, built once with bind parameters: building a statement costs
# more Python time than running it (tests/faults count them; bench/wallet_signin.py measures).
_T = LoginAttempt.__table__


def _claim_statement(column, name: str):
    """The claim: the wallet's next place in the order, if it is admissible and a slot is free,
    returning the whole wallet (what the check needs is read in the claim's statement)."""
    return (update(Wallet)
            .where(column == bindparam(name),
                   Wallet.failed_count + (Wallet.attempt_seq - Wallet.settled_seq) < bindparam("limit"),
                   Wallet.lock_kind.is_(None), Wallet.frozen_at.is_(None), Wallet.status == "active")
            .values(attempt_seq=Wallet.attempt_seq + 1)
            .returning(Wallet)
            # A wallet this session holds already takes the values the claim returns, not its older ones.
            .execution_options(synchronize_session=False, populate_existing=True))


_CLAIM = _claim_statement(Wallet.id, "wallet_id")
# By the wallet's number: a sign-in whose slot is free finds its wallet and claims in one statement
# (the usual case); one refused reads the wallet and takes the admission loop (locks, expiries,
# abandoned claims, "busy").
_CLAIM_BY_NUMBER = _claim_statement(Wallet.wallet_no, "number")
_INSERT_ATTEMPT = insert(_T).returning(_T.c.id)
_SETTLE_STATE = (Wallet.failed_count, Wallet.lock_kind, Wallet.frozen_at, Wallet.lock_until, Wallet.settled_seq)
_SETTLE_FAILURE = (
    update(Wallet).where(Wallet.id == bindparam("wallet_id"), Wallet.settled_seq == bindparam("previous"))
    .values(settled_seq=bindparam("seq"), failed_count=Wallet.failed_count + 1)
    .returning(*_SETTLE_STATE).execution_options(synchronize_session=False))
_SETTLE_SUCCESS = (
    update(Wallet).where(Wallet.id == bindparam("wallet_id"), Wallet.settled_seq == bindparam("previous"))
    .values(settled_seq=bindparam("seq"),
            failed_count=case(((Wallet.lock_kind.is_not(None)) | (Wallet.frozen_at.is_not(None)),
                               Wallet.failed_count), else_=0))
    .returning(*_SETTLE_STATE).execution_options(synchronize_session=False))
_SETTLE_ATTEMPT = (update(_T).where(_T.c.id == bindparam("attempt_id"))
                   .values(result=bindparam("outcome"), password_checked=True, settled_at=bindparam("now")))
_RISK_COUNT = (select(func.count(_T.c.id), func.count(func.distinct(_T.c.source_ip)))
               .where(_T.c.wallet_id == bindparam("wallet_id"), _T.c.at > bindparam("since"),
                      _T.c.result.in_(FAILURE_RESULTS)))


# A settlement committed by this process wakes its waiters (on any wallet: each looks once more);
# a waiter whose earlier claim is checked in another process, or given up, looks after its pause.
_settled = threading.Condition()


def _settled_here() -> None:
    with _settled:
        _settled.notify_all()


def _pauses(bounds: tuple[float, float] = POLL_SECONDS):
    """Pauses that double from the first to the longest, so waiters don't crowd the wallet's row."""
    pause, longest = bounds
    while True:
        yield pause
        pause = min(pause * 2, longest)


@dataclass
class SignInOutcome:
    result: str  # ok, must_change_password, password_expired, invalid_credentials, locked, frozen, busy
    wallet: Wallet
    remaining: int | None = None
    locked_until: datetime | None = None
    lock_reason: str | None = None
    used_temporary: bool = False
    password_checked: bool = False
    retry_after: int | None = None  # seconds, with "busy"
    seq: int | None = None  # the attempt's place in the wallet's order of checks

    @property
    def authenticated(self) -> bool:
        return self.result in SUCCESS_RESULTS


def find_wallet(session: Session, wallet_no: str) -> Wallet:
    wallet = session.scalar(select(Wallet).where(Wallet.wallet_no == wallet_no))
    if wallet is None or wallet.status != "active":
        raise NotFound("unknown_wallet")
    return wallet


def lock_reason(wallet: Wallet) -> str | None:
    if wallet.frozen_at:
        return "risk_freeze"
    if wallet.lock_kind == "until_unlock":
        return "too_many_failures_staff_unlock"
    if wallet.lock_kind == "temporary":
        return "too_many_failures"
    return None


def lapse_expired_lock(session: Session, wallet: Wallet) -> bool:
    """A temporary lock whose time has passed ends by itself: record it once, as the system."""
    now = utcnow()
    if not (wallet.lock_kind == "temporary" and wallet.lock_until and wallet.lock_until <= now):
        return False
    until = wallet.lock_until
    changed = session.execute(
        update(Wallet).where(Wallet.id == wallet.id, Wallet.lock_kind == "temporary", Wallet.lock_until <= now)
        .values(lock_kind=None, lock_until=None, locked_at=None, failed_count=0)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(wallet)
    if changed != 1:
        return False
    session.execute(update(WalletLock).where(WalletLock.wallet_id == wallet.id, WalletLock.ended_at.is_(None))
                    .values(ended_at=until, ended_by="lapsed").execution_options(synchronize_session=False))
    audit.record(session, Actor.system(), "wallet.lock_lapsed", customer_ref=wallet.customer.customer_no,
                 before={"wallet_no": wallet.wallet_no, "lock_kind": "temporary", "until": until.isoformat()},
                 after={"wallet_no": wallet.wallet_no, "lock_kind": None})
    return True


def _refused(session, wallet, *, source_ip, device_id, purpose) -> SignInOutcome:
    result = "frozen" if wallet.frozen_at else "locked"
    _log_attempt(session, wallet, result, source_ip=source_ip, device_id=device_id, purpose=purpose, checked=False)
    if result == "locked" and evaluate_risk(session, wallet):
        result = "frozen"
    return SignInOutcome(result, wallet, locked_until=wallet.lock_until, lock_reason=lock_reason(wallet))


def _lock(session: Session, wallet: Wallet, failures: int) -> None:
    """The last allowed attempt failed: lock, escalating within the window."""
    rules = policy.current().wallet_lockout
    now = utcnow()
    window_start = now - timedelta(hours=rules.lock_window_hours)
    earlier = session.scalar(select(func.count(WalletLock.id)).where(
        WalletLock.wallet_id == wallet.id, WalletLock.started_at > window_start)) or 0
    durations = rules.lock_durations_minutes
    nth = earlier + 1
    if nth <= len(durations):
        kind, until = "temporary", now + timedelta(minutes=durations[nth - 1])
    else:
        kind, until = "until_unlock", None
    changed = session.execute(
        update(Wallet).where(Wallet.id == wallet.id, Wallet.lock_kind.is_(None))
        .values(lock_kind=kind, lock_until=until, locked_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(wallet)
    if changed != 1:
        return
    session.add(WalletLock(wallet_id=wallet.id, kind=kind, started_at=now, until=until))
    audit.record(session, Actor.system("wallet"), "wallet.locked", reason_code="too_many_failures",
                 customer_ref=wallet.customer.customer_no,
                 before={"wallet_no": wallet.wallet_no, "lock_kind": None},
                 after={"wallet_no": wallet.wallet_no, "lock_kind": kind,
                        "until": until.isoformat() if until else None},
                 details={"failures": failures, "lock_in_window": nth})
    if until:
        notifications.queue_sms(session, wallet.customer, "wallet_locked", wallet=wallet, failures=failures,
                                until=timeutil.format_local(until))
    else:
        notifications.queue_sms(session, wallet.customer, "wallet_locked_until_unlock", wallet=wallet)


def evaluate_risk(session: Session, wallet: Wallet) -> bool:
    """Freeze the wallet when failures from many addresses pile up within the window."""
    rules = policy.current().risk
    if wallet.frozen_at:
        return False
    since = utcnow() - timedelta(minutes=rules.window_minutes)
    failures, sources = session.execute(_RISK_COUNT, {"wallet_id": wallet.id, "since": since}).one()
    if failures < rules.min_failures or sources < rules.min_sources:
        return False
    return freeze(session, wallet, "failure_burst",
                  {"failures": failures, "sources": sources, "window_minutes": rules.window_minutes})


def freeze(session: Session, wallet: Wallet, rule: str, details: dict) -> bool:
    """The risk monitor freezes the wallet under ``rule`` (once: False if it is frozen already),
    raises an alert, records it and tells the customer. Not committed."""
    now = utcnow()
    changed = session.execute(
        update(Wallet).where(Wallet.id == wallet.id, Wallet.frozen_at.is_(None))
        .values(frozen_at=now, frozen_reason=rule)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(wallet)
    if changed != 1:
        return False
    alert = RiskAlert(wallet_id=wallet.id, rule=rule, raised_at=now, details=json.dumps(details), status="open")
    session.add(alert)
    session.flush()
    audit.record(session, Actor.system("risk"), "wallet.frozen", reason_code=rule,
                 customer_ref=wallet.customer.customer_no,
                 before={"wallet_no": wallet.wallet_no, "frozen": False},
                 after={"wallet_no": wallet.wallet_no, "frozen": True},
                 details={**details, "alert_id": alert.id})
    notifications.queue_sms(session, wallet.customer, "wallet_frozen", wallet=wallet)
    return True


def _attempt_row(session, wallet, result, *, at, source_ip, device_id, purpose, **fields) -> int:
    """Insert one ``login_attempt`` row (a Core INSERT: no unit of work), with the client's address
    and device cut to size; its id."""
    values = {"wallet_id": wallet.id, "at": at, "source_ip": (source_ip or "")[:64] or None,
              "device_id": (device_id or "")[:64] or None, "purpose": purpose, "result": result,
              "password_checked": False, "seq": None, "claim_owner": None, "claim_expires_at": None,
              "settled_at": None, **fields}
    return session.execute(_INSERT_ATTEMPT, values).scalar_one()


def _log_attempt(session, wallet, result, *, source_ip, device_id, purpose, checked) -> None:
    """An attempt refused without a claim (locked, frozen, busy): it has no place in the order."""
    now = utcnow()
    _attempt_row(session, wallet, result, at=now, source_ip=source_ip, device_id=device_id, purpose=purpose,
                 password_checked=checked, settled_at=now)


def claim_owner() -> str:
    """Who holds a claim: host, process and thread, for staff looking at a stuck attempt."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{threading.get_ident() % 100000}"


@dataclass
class Claim:
    """A claimed place in the order. What the check needs is the wallet as the claim's statement
    returned it (no transaction stays open during the slow check)."""

    attempt_id: int
    seq: int
    wallet_id: int


def _claim(session: Session, statement, params: dict, *, source_ip, device_id,
           purpose) -> tuple[Wallet, Claim] | None:
    """Take the wallet's next place in the order (``_CLAIM`` by id or ``_CLAIM_BY_NUMBER``), if it is
    admissible and a slot is free: the wallet and its claim, else None (nothing written). Not committed."""
    limit = policy.current().wallet_lockout.threshold
    wallet = session.scalars(statement, {**params, "limit": limit}).first()
    if wallet is None:
        return None
    now = utcnow()
    attempt_id = _attempt_row(session, wallet, "pending", at=now, source_ip=source_ip, device_id=device_id,
                              purpose=purpose, seq=wallet.attempt_seq, claim_owner=claim_owner(),
                              claim_expires_at=now + _ttl())
    return wallet, Claim(attempt_id, wallet.attempt_seq, wallet.id)


def _published(commit, claim: Claim) -> Claim:
    commit()  # the claim is visible to every other attempt before the check
    faults.point("signin.claimed")
    return claim


def _ttl() -> timedelta:
    return timedelta(seconds=policy.current().wallet_lockout.claim_ttl_seconds)


def pending_claims(session: Session, wallet: Wallet) -> list[LoginAttempt]:
    """The claims not yet settled, oldest first (the desk shows them)."""
    return session.scalars(
        select(LoginAttempt).where(LoginAttempt.wallet_id == wallet.id, LoginAttempt.result == "pending")
        .order_by(LoginAttempt.seq)
    ).all()


def abandon_expired_head(session: Session, wallet_id: int, *, actor: Actor | None = None) -> bool:
    """Settle the oldest unsettled claim as abandoned if its owner let it expire. Not committed.

    Only the head of the order can be settled, so abandoning keeps the order intact; call it
    again for the next one. ``actor`` is the staff member clearing it from the desk, else the system.
    """
    now = utcnow()
    settled_seq = session.scalar(select(Wallet.settled_seq).where(Wallet.id == wallet_id))
    head = session.scalar(select(LoginAttempt).where(LoginAttempt.wallet_id == wallet_id,
                                                     LoginAttempt.seq == settled_seq + 1))
    if head is None or head.result != "pending" or head.claim_expires_at > now:
        return False
    # Take the wallet's row first (as settling does), then give the claim up only if it is still
    # expired: a renewal its owner committed meanwhile wins.
    moved = session.execute(
        update(Wallet).where(Wallet.id == wallet_id, Wallet.settled_seq == head.seq - 1)
        .values(settled_seq=head.seq).execution_options(synchronize_session=False)
    ).rowcount
    if moved != 1:
        return False
    given_up = session.execute(
        update(LoginAttempt).where(LoginAttempt.id == head.id, LoginAttempt.result == "pending",
                                   LoginAttempt.claim_expires_at <= now)
        .values(result="abandoned", settled_at=now).execution_options(synchronize_session=False)
    ).rowcount
    if given_up != 1:
        session.execute(update(Wallet).where(Wallet.id == wallet_id, Wallet.settled_seq == head.seq)
                        .values(settled_seq=head.seq - 1).execution_options(synchronize_session=False))
        return False
    wallet = session.get(Wallet, wallet_id)
    audit.record(session, actor or Actor.system("wallet"), "wallet.attempt_abandoned",
                 reason_code="claim_expired", customer_ref=wallet.customer.customer_no,
                 details={"wallet_no": wallet.wallet_no, "seq": head.seq, "owner": head.claim_owner,
                          "claimed_at": head.at.isoformat(), "expired_at": head.claim_expires_at.isoformat()})
    return True


@dataclass
class SignInState:
    """What staff see of a wallet's sign-ins in progress (the desk and the staff API)."""

    failed_count: int
    in_progress: int  # claims whose owner is still within its time
    interrupted: int  # claims past their expiry: the worker died or lost its connection
    oldest_claim_at: datetime | None

    def as_json(self) -> dict:
        return {"failed_count": self.failed_count, "in_progress": self.in_progress,
                "interrupted": self.interrupted,
                "oldest_claim_at": self.oldest_claim_at.isoformat() if self.oldest_claim_at else None}


def sign_in_state(session: Session, wallet: Wallet) -> SignInState:
    now = utcnow()
    claims = pending_claims(session, wallet)
    interrupted = sum(1 for c in claims if c.claim_expires_at <= now)
    return SignInState(wallet.failed_count, len(claims) - interrupted, interrupted,
                       claims[0].at if claims else None)


def clear_interrupted(session: Session, actor: Actor, wallet: Wallet) -> int:
    """Staff settle a wallet's interrupted sign-ins at once, instead of waiting for the next
    attempt to do it. Each is recorded as abandoned with the staff member as actor. Not committed."""
    from ..permissions import WALLET_UNLOCK, can
    from .cases import refusal

    customer_ref = wallet.customer.customer_no
    if not can(actor, WALLET_UNLOCK):
        raise refusal("wallet.attempt_abandoned", "not_permitted", customer_ref=customer_ref)
    cleared = 0
    while abandon_expired_head(session, wallet.id, actor=actor):
        cleared += 1
    session.refresh(wallet)
    return cleared


def _retry_after(session: Session, wallet: Wallet) -> int:
    """Seconds until the oldest live claim ends or expires: by then a slot is free or reclaimable."""
    soonest = session.scalar(select(func.min(LoginAttempt.claim_expires_at)).where(
        LoginAttempt.wallet_id == wallet.id, LoginAttempt.result == "pending"))
    if soonest is None:
        return 1
    return max(1, math.ceil((soonest - utcnow()).total_seconds()))


def _renew(session: Session, claim: Claim) -> None:
    session.execute(update(LoginAttempt).where(LoginAttempt.id == claim.attempt_id, LoginAttempt.result == "pending")
                    .values(claim_expires_at=utcnow() + _ttl()).execution_options(synchronize_session=False))


def _settle(session: Session, claim: Claim, ok: bool, result_if_ok: str, wallet: Wallet) -> str:
    """Apply a checked attempt at its place in the order. Not committed.

    Returns the attempt's result, ``"wait"`` while an earlier claim is unsettled, or
    ``"abandoned"`` if this claim was given up as expired before it could settle. The wallet's
    lock state as the UPDATE left it is set on ``wallet`` (no second read).
    """
    row = session.execute(_SETTLE_SUCCESS if ok else _SETTLE_FAILURE,
                          {"wallet_id": claim.wallet_id, "previous": claim.seq - 1, "seq": claim.seq}).first()
    if row is None:
        settled_seq = session.scalar(select(Wallet.settled_seq).where(Wallet.id == claim.wallet_id))
        return "abandoned" if settled_seq >= claim.seq else "wait"
    failed_count, lock_kind, frozen_at, lock_until, settled_seq = row
    for name, value in (("failed_count", failed_count), ("lock_kind", lock_kind), ("frozen_at", frozen_at),
                        ("lock_until", lock_until), ("settled_seq", settled_seq)):
        set_committed_value(wallet, name, value)
    if not ok:
        result = "invalid_credentials"
    elif frozen_at is not None:
        result = "frozen"  # a freeze precedes this success in the order
    elif lock_kind is not None:
        result = "locked"
    else:
        result = result_if_ok
    session.execute(_SETTLE_ATTEMPT, {"attempt_id": claim.attempt_id, "outcome": result, "now": utcnow()})
    return result


def _admit(session: Session, wallet: Wallet, *, commit, source_ip, device_id, purpose,
           finalize) -> Claim | SignInOutcome:
    """Claim a slot (committed), or answer at once: locked, frozen, or busy after a bounded wait."""
    rules = policy.current().wallet_lockout
    deadline = time.monotonic() + rules.claim_wait_seconds
    limit = rules.threshold
    pauses = _pauses()
    while True:
        if lapse_expired_lock(session, wallet):
            commit()
        if wallet.frozen_at or wallet.lock_kind:
            outcome = _refused(session, wallet, source_ip=source_ip, device_id=device_id, purpose=purpose)
            _finish(finalize, outcome, commit)
            return outcome
        claimed = _claim(session, _CLAIM, {"wallet_id": wallet.id}, source_ip=source_ip, device_id=device_id,
                         purpose=purpose)
        if claimed is not None:
            return _published(commit, claimed[1])
        if abandon_expired_head(session, wallet.id):
            commit()
            session.refresh(wallet)
            continue
        session.refresh(wallet)
        if wallet.attempt_seq == wallet.settled_seq and wallet.failed_count >= limit and not wallet.lock_kind:
            # Nothing is in flight, yet the count has reached the limit without a lock (a wallet left
            # so by the engine before claims had owners and expiries, or a lowered threshold): place
            # the lock the order calls for, instead of answering "busy" for ever.
            _lock(session, wallet, wallet.failed_count)
            commit()
            session.refresh(wallet)
            continue
        if time.monotonic() > deadline:
            retry = _retry_after(session, wallet)
            _log_attempt(session, wallet, "busy", source_ip=source_ip, device_id=device_id, purpose=purpose,
                         checked=False)
            outcome = SignInOutcome("busy", wallet, retry_after=retry)
            _finish(finalize, outcome, commit)
            return outcome
        commit()  # end the read (on SQLite it holds the write lock) before waiting
        time.sleep(next(pauses))
        session.refresh(wallet)


def _finish(finalize, outcome: SignInOutcome, commit) -> None:
    if finalize is not None:
        finalize(outcome)
    commit()


def authenticate(session: Session, wallet_no: str, password: str, *, commit, source_ip: str | None,
                 device_id: str | None = None, purpose: str = "sign_in", finalize=None) -> SignInOutcome:
    """One wallet sign-in (or the password check before a credential change).

    ``commit`` must commit ``session``; it is called after the claim, while waiting for the
    turn to settle, and after the outcome. ``finalize(outcome)``, if given, runs inside the
    transaction of the final commit (so a caller can store its answer atomically with it).
    """
    # The engine decides with conditional UPDATEs and keeps the wallet object in step with what they
    # return (set_committed_value) or refreshes it where it must: its own commits need not expire
    # it, which would cost a read of the whole row after each.
    real = session.registry() if isinstance(session, scoped_session) else session
    expire_on_commit, real.expire_on_commit = real.expire_on_commit, False
    try:
        return _authenticate(session, wallet_no, password, commit=commit, source_ip=source_ip,
                             device_id=device_id, purpose=purpose, finalize=finalize)
    finally:
        real.expire_on_commit = expire_on_commit


def _authenticate(session: Session, wallet_no: str, password: str, *, commit, source_ip, device_id, purpose,
                  finalize) -> SignInOutcome:
    rules = policy.current().wallet_lockout
    claimed = _claim(session, _CLAIM_BY_NUMBER, {"number": wallet_no}, source_ip=source_ip, device_id=device_id,
                     purpose=purpose)
    if claimed is not None:
        wallet, claim = claimed[0], _published(commit, claimed[1])
    else:
        wallet = find_wallet(session, wallet_no)
        admitted = _admit(session, wallet, commit=commit, source_ip=source_ip, device_id=device_id,
                          purpose=purpose, finalize=finalize)
        if isinstance(admitted, SignInOutcome):
            return admitted
        claim = admitted
    renewed = time.monotonic()  # the claim's expiry was set (claim TTL from now) when it was committed

    now = utcnow()
    used_temporary = False
    ok = verify_password(wallet.password_hash, password)
    if not ok and wallet.temp_password_hash and wallet.temp_password_expires_at and wallet.temp_password_expires_at > now:
        ok = used_temporary = verify_password(wallet.temp_password_hash, password)
    if used_temporary or wallet.must_change_password:
        result_if_ok = "must_change_password"
    elif wallet.password_expires_at and wallet.password_expires_at <= now:
        result_if_ok = "password_expired"
    else:
        result_if_ok = "ok"
    faults.point("signin.checked")

    give_up = time.monotonic() + 3 * rules.claim_ttl_seconds + rules.claim_wait_seconds
    pauses = _pauses(SETTLE_POLL_SECONDS)
    while True:
        result = _settle(session, claim, ok, result_if_ok, wallet)
        if result != "wait":
            break
        # An earlier claim is still being checked (or its owner died): keep ours alive (renewed
        # once half its time has passed, so a look is a read unless it must write), reclaim theirs.
        if time.monotonic() - renewed >= rules.claim_ttl_seconds / 2:
            _renew(session, claim)
            renewed = time.monotonic()
        abandon_expired_head(session, claim.wallet_id)
        commit()
        if time.monotonic() > give_up:
            # Ours stays pending and expires like any other; the client may retry.
            outcome = SignInOutcome("busy", wallet, retry_after=rules.claim_ttl_seconds, seq=claim.seq)
            _finish(finalize, outcome, commit)
            return outcome
        with _settled:
            _settled.wait(next(pauses))
    faults.point("signin.settling")
    if result == "abandoned":
        # Too slow: our claim was given up as expired and settled without us. No answer about the password.
        outcome = SignInOutcome("busy", wallet, retry_after=1, seq=claim.seq)
        _finish(finalize, outcome, commit)
        return outcome

    limit = rules.threshold
    failures = wallet.failed_count  # as the settling UPDATE returned it
    if result == "invalid_credentials":
        if failures >= limit:
            _lock(session, wallet, failures)
        if evaluate_risk(session, wallet) or wallet.frozen_at:
            outcome = SignInOutcome("frozen", wallet, lock_reason=lock_reason(wallet), password_checked=True)
        elif wallet.lock_kind:
            outcome = SignInOutcome("locked", wallet, locked_until=wallet.lock_until, lock_reason=lock_reason(wallet),
                                    password_checked=True)
        else:
            outcome = SignInOutcome("invalid_credentials", wallet, remaining=max(limit - failures, 0),
                                    password_checked=True)
    elif result in ("locked", "frozen"):
        outcome = SignInOutcome(result, wallet, locked_until=wallet.lock_until, lock_reason=lock_reason(wallet),
                                password_checked=True)
    else:
        outcome = SignInOutcome(result, wallet, used_temporary=used_temporary, password_checked=True)
    outcome.seq = claim.seq
    if outcome.result != result:
        session.execute(update(LoginAttempt).where(LoginAttempt.id == claim.attempt_id)
                        .values(result=outcome.result).execution_options(synchronize_session=False))
    faults.point("signin.settled")
    _finish(finalize, outcome, commit)
    _settled_here()
    faults.point("signin.committed")
    return outcome


def recent_failures(session: Session, wallet: Wallet, *, since: datetime, limit: int = 20) -> list[LoginAttempt]:
    return session.scalars(
        select(LoginAttempt).where(and_(LoginAttempt.wallet_id == wallet.id, LoginAttempt.at > since,
                                        LoginAttempt.result.in_(FAILURE_RESULTS)))
        .order_by(LoginAttempt.id.desc()).limit(limit)
    ).all()
