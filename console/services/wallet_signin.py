"""The wallet sign-in lockout engine (DESIGN.md section 3).

Reserve, then verify: an attempt first claims a slot with one conditional UPDATE
(``failed_count = failed_count + 1 WHERE failed_count < limit AND not locked``) and commits
it, so every other attempt sees the claim; only then is the password checked. Under any
number of concurrent wrong attempts exactly ``limit`` passwords are checked before the
lock and none after it. A success resets the count; a locked or frozen wallet is refused
without a check.

This is the one service that commits between its steps, through the ``commit`` callable
its caller passes: the claim must be visible to other attempts before the slow check.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from ..models.customer import LoginAttempt, RiskAlert, Wallet, WalletLock
from ..passwords import verify_password
from ..timeutil import utcnow
from . import audit, notifications
from .actor import Actor
from .errors import NotFound

FAILURE_RESULTS = ("invalid_credentials", "locked")


@dataclass
class SignInOutcome:
    result: str  # ok, must_change_password, password_expired, invalid_credentials, locked, frozen, busy
    wallet: Wallet
    remaining: int | None = None
    locked_until: datetime | None = None
    lock_reason: str | None = None
    used_temporary: bool = False
    password_checked: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        return self.result in ("ok", "must_change_password", "password_expired")


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


def _claim(session: Session, wallet: Wallet) -> int | None:
    limit = current_app.config["WALLET_LOCKOUT_THRESHOLD"]
    row = session.execute(
        update(Wallet)
        .where(Wallet.id == wallet.id, Wallet.failed_count < limit, Wallet.lock_kind.is_(None),
               Wallet.frozen_at.is_(None), Wallet.status == "active")
        .values(failed_count=Wallet.failed_count + 1)
        .returning(Wallet.failed_count)
        .execution_options(synchronize_session=False)
    ).first()
    return row[0] if row else None


def _log_attempt(session, wallet, result, *, source_ip, device_id, purpose, checked) -> None:
    session.add(LoginAttempt(wallet_id=wallet.id, at=utcnow(), source_ip=(source_ip or "")[:64] or None,
                             device_id=(device_id or "")[:64] or None, purpose=purpose, result=result,
                             password_checked=checked))
    session.flush()


def _refused(session, wallet, *, source_ip, device_id, purpose) -> SignInOutcome:
    result = "frozen" if wallet.frozen_at else "locked"
    _log_attempt(session, wallet, result, source_ip=source_ip, device_id=device_id, purpose=purpose, checked=False)
    if result == "locked" and evaluate_risk(session, wallet):
        result = "frozen"
    return SignInOutcome(result, wallet, locked_until=wallet.lock_until, lock_reason=lock_reason(wallet))


def _lock(session: Session, wallet: Wallet, failures: int) -> None:
    """The last allowed attempt failed: lock, escalating within the window."""
    config = current_app.config
    now = utcnow()
    window_start = now - timedelta(hours=config["WALLET_LOCK_WINDOW_HOURS"])
    earlier = session.scalar(select(func.count(WalletLock.id)).where(
        WalletLock.wallet_id == wallet.id, WalletLock.started_at > window_start)) or 0
    durations = config["WALLET_LOCK_DURATIONS_MINUTES"]
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
                                until=notifications.beijing(until))
    else:
        notifications.queue_sms(session, wallet.customer, "wallet_locked_until_unlock", wallet=wallet)


def evaluate_risk(session: Session, wallet: Wallet) -> bool:
    """Freeze the wallet when failures from many addresses pile up within the window."""
    config = current_app.config
    if wallet.frozen_at:
        return False
    since = utcnow() - timedelta(minutes=config["RISK_FREEZE_WINDOW_MINUTES"])
    failures, sources = session.execute(
        select(func.count(LoginAttempt.id), func.count(func.distinct(LoginAttempt.source_ip)))
        .where(LoginAttempt.wallet_id == wallet.id, LoginAttempt.at > since,
               LoginAttempt.result.in_(FAILURE_RESULTS))
    ).one()
    if failures < config["RISK_FREEZE_MIN_FAILURES"] or sources < config["RISK_FREEZE_MIN_SOURCES"]:
        return False
    now = utcnow()
    changed = session.execute(
        update(Wallet).where(Wallet.id == wallet.id, Wallet.frozen_at.is_(None))
        .values(frozen_at=now, frozen_reason="failure_burst")
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(wallet)
    if changed != 1:
        return False
    details = {"failures": failures, "sources": sources, "window_minutes": config["RISK_FREEZE_WINDOW_MINUTES"]}
    alert = RiskAlert(wallet_id=wallet.id, rule="failure_burst", raised_at=now, details=json.dumps(details),
                      status="open")
    session.add(alert)
    session.flush()
    audit.record(session, Actor.system("risk"), "wallet.frozen", reason_code="failure_burst",
                 customer_ref=wallet.customer.customer_no,
                 before={"wallet_no": wallet.wallet_no, "frozen": False},
                 after={"wallet_no": wallet.wallet_no, "frozen": True},
                 details={**details, "alert_id": alert.id})
    notifications.queue_sms(session, wallet.customer, "wallet_frozen", wallet=wallet)
    return True


def authenticate(session: Session, wallet_no: str, password: str, *, commit, source_ip: str | None,
                 device_id: str | None = None, purpose: str = "sign_in") -> SignInOutcome:
    """One wallet sign-in (or the password check before a credential change).

    ``commit`` is called after the claim and after the outcome; it must commit ``session``.
    """
    config = current_app.config
    wallet = find_wallet(session, wallet_no)
    deadline = time.monotonic() + config["WALLET_CLAIM_WAIT_SECONDS"]
    while True:
        if lapse_expired_lock(session, wallet):
            commit()
        if wallet.frozen_at or wallet.lock_kind:
            outcome = _refused(session, wallet, source_ip=source_ip, device_id=device_id, purpose=purpose)
            commit()
            return outcome
        claimed = _claim(session, wallet)
        commit()  # the claim is visible to every other attempt before the check
        if claimed is not None:
            break
        # Every slot is claimed by attempts still being checked: wait for them to settle.
        if time.monotonic() > deadline:
            _log_attempt(session, wallet, "busy", source_ip=source_ip, device_id=device_id, purpose=purpose,
                         checked=False)
            commit()
            return SignInOutcome("busy", wallet)
        time.sleep(0.02)
        session.refresh(wallet)

    now = utcnow()
    used_temporary = False
    ok = verify_password(wallet.password_hash, password)
    if not ok and wallet.temp_password_hash and wallet.temp_password_expires_at and wallet.temp_password_expires_at > now:
        ok = used_temporary = verify_password(wallet.temp_password_hash, password)
    if ok:
        session.execute(update(Wallet).where(Wallet.id == wallet.id).values(failed_count=0)
                        .execution_options(synchronize_session=False))
        session.refresh(wallet)
        if used_temporary or wallet.must_change_password:
            result = "must_change_password"
        elif wallet.password_expires_at and wallet.password_expires_at <= now:
            result = "password_expired"
        else:
            result = "ok"
        _log_attempt(session, wallet, result, source_ip=source_ip, device_id=device_id, purpose=purpose, checked=True)
        commit()
        return SignInOutcome(result, wallet, used_temporary=used_temporary, password_checked=True)

    limit = config["WALLET_LOCKOUT_THRESHOLD"]
    _log_attempt(session, wallet, "invalid_credentials", source_ip=source_ip, device_id=device_id,
                 purpose=purpose, checked=True)
    if claimed >= limit:
        _lock(session, wallet, claimed)
    evaluate_risk(session, wallet)
    commit()
    if wallet.frozen_at:
        return SignInOutcome("frozen", wallet, lock_reason=lock_reason(wallet), password_checked=True)
    if wallet.lock_kind:
        return SignInOutcome("locked", wallet, locked_until=wallet.lock_until, lock_reason=lock_reason(wallet),
                             password_checked=True)
    return SignInOutcome("invalid_credentials", wallet, remaining=max(limit - claimed, 0), password_checked=True)


def recent_failures(session: Session, wallet: Wallet, *, since: datetime, limit: int = 20) -> list[LoginAttempt]:
    return session.scalars(
        select(LoginAttempt).where(and_(LoginAttempt.wallet_id == wallet.id, LoginAttempt.at > since,
                                        LoginAttempt.result.in_(FAILURE_RESULTS)))
        .order_by(LoginAttempt.id.desc()).limit(limit)
    ).all()
