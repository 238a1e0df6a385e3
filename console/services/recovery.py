"""Self-service recovery: the wallet app's 忘记密码, the seed's first remedy (DESIGN.md section 3).

    start       wallet number or mobile + ID number  → the same answer whatever matched;
                                                        an SMS code to the registered mobile
    check_code  the SMS code (5 minutes, single use, 3 tries that nothing resets)
                → a counter/hotline answer if the wallet may not recover by itself,
                  else the second factor to give
    check_factor  the security answers, or the bound authenticator's code (never the SMS alone)
                → a short-lived single-use recovery token
    complete    the token + a new password (NIST SP 800-63B rules and the password history)
                → the password is set; a first or second wrong-password lock is lifted

No enumeration: a start whose details match no wallet (or whose ID number is not the wallet's)
stores a recovery like any other, with a code nobody receives, does the same hashing and writes an
audit event; every later step answers it as it would a real recovery with a wrong code. Only the
registered mobile's holder ever learns anything about the wallet, after the code.

Failures that say something about the customer (the code's tries used up or left to expire, wrong
answers or authenticator code) count in the same 24-hour count as failed verifications at the desk
(``verification.failed_recently``); the count that reaches the limit flags the customer for the
counter (audited, SMS notice). Recoveries of one wallet from several addresses or devices within
the window freeze it through the risk monitor. Staff-only locks, freezes, holds and the
counter-only flag are never lifted here: the answer names the counter and the hotline.

Every step is an audit event (actor ``customer``, or ``anonymous`` before the details matched;
channel ``self_service``) in the transaction of its change; nothing here commits.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pyotp
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .. import codes, crypto, policy
from ..identity import normalise_id_number, normalise_mobile, normalise_wallet_no
from ..models.customer import Customer, Wallet, WalletLock
from ..models.recovery import Recovery
from ..timeutil import utcnow
from . import audit, customers, notifications, verification, wallet_credentials, wallet_signin
from .actor import Actor
from .errors import InvalidInput, NotFound

ACTION = "recovery"  # events: recovery.start, recovery.code, recovery.factor, recovery.complete, ...
CODE_KIND = "recovery_code"
LIVE = ("code_sent", "code_verified", "verified")  # a recovery still under way


def _rules():
    return policy.current()


@dataclass
class Step:
    """What a step came to; the API maps it to its answer. ``ok`` steps carry what comes next."""

    result: str  # sms_code, code_wrong, failed, counter_required, second_factor, token, password_reset,
    #              password_policy
    recovery: Recovery | None = None
    remaining_tries: int | None = None
    reason: str | None = None
    factor: str | None = None
    questions: list[str] = field(default_factory=list)
    token: str | None = None
    expires_at: datetime | None = None
    problems: list[str] = field(default_factory=list)
    unlocked: bool = False


def actor_for(*, source_ip: str | None, recovery: Recovery | None = None) -> Actor:
    """The customer, once the details matched a wallet; before that, nobody known."""
    kind = "customer" if recovery is not None and recovery.matched else "anonymous"
    return Actor(kind=kind, source_ip=source_ip, channel=codes.SELF_SERVICE, employee_no=None)


def _ref(recovery: Recovery) -> str | None:
    return recovery.customer.customer_no if recovery.customer is not None else (
        recovery.wallet.customer.customer_no if recovery.wallet is not None else None)


def _record(session, recovery: Recovery, action: str, *, outcome: str = codes.SUCCESS, reason: str | None = None,
            details: dict | None = None) -> None:
    """One step's event. A recovery whose details did not match is recorded against the wallet it
    named (so the console sees someone tried), never as the customer acting."""
    actor = actor_for(source_ip=recovery.source_ip, recovery=recovery)
    base = {"recovery_id": recovery.id, "identified_by": recovery.identified_by,
            "device_id": recovery.device_id}
    if recovery.wallet is not None:
        base["wallet_no"] = recovery.wallet.wallet_no
    audit.record(session, actor, f"{ACTION}.{action}", outcome=outcome, reason_code=reason,
                 customer_ref=_ref(recovery), channel=codes.SELF_SERVICE, details={**base, **(details or {})})


def _digest(recovery_handle: str) -> str:
    return crypto.token_digest(recovery_handle)


def _code_digest(recovery: Recovery, code: str) -> str:
    return crypto.blind_index(f"{recovery.handle_digest}:{code}", context="recovery.code")


# --- start --------------------------------------------------------------------------------------


def _find(session: Session, *, wallet_no: str | None, mobile: str | None, id_type: str,
          id_number: str) -> tuple[Wallet | None, bool, str | None]:
    """(the wallet named, whether the ID number is its customer's, a reason it cannot be used)."""
    number = normalise_id_number(id_number)
    document = customers.document_index(id_type, number)
    if wallet_no:
        wallet = session.scalar(select(Wallet).where(Wallet.wallet_no == normalise_wallet_no(wallet_no),
                                                     Wallet.status == "active"))
        customer = wallet.customer if wallet is not None else session.get(Customer, 0)  # the same reads
        if wallet is None:
            return None, False, None
        return wallet, customer.id_type == id_type and customer.id_number_index == document, None
    customer = session.scalar(select(Customer).where(
        Customer.mobile_index == customers.mobile_index(normalise_mobile(mobile or "")),
        Customer.id_type == id_type, Customer.id_number_index == document))
    if customer is None:
        return None, False, None
    wallets = [w for w in customer.wallets if w.status == "active"]
    if not wallets:
        return None, False, None
    # A customer with several wallets recovers one at a time, by its number: said after the code.
    return min(wallets, key=lambda w: w.id), True, "several_wallets" if len(wallets) > 1 else None


def start(session: Session, *, wallet_no: str | None, mobile: str | None, id_type: str, id_number: str,
          source_ip: str | None, device_id: str | None) -> tuple[str, Step]:
    """Begin a recovery: (its handle, ``sms_code``), the same whatever matched. Not committed."""
    rules = _rules()
    wallet, matched, ambiguity = _find(session, wallet_no=wallet_no, mobile=mobile, id_type=id_type,
                                       id_number=id_number)
    now = utcnow()
    handle = secrets.token_urlsafe(24)
    code = f"{secrets.randbelow(10**6):06d}"
    row = Recovery(handle_digest=_digest(handle), identified_by="wallet_no" if wallet_no else "mobile",
                   wallet_id=wallet.id if wallet else None, customer_id=wallet.customer_id if matched else None,
                   matched=matched, status="code_sent", failure_reason=ambiguity,
                   source_ip=(source_ip or "")[:64] or None, device_id=(device_id or "")[:64] or None,
                   started_at=now, expires_at=now + timedelta(minutes=rules.recovery.lifetime_minutes),
                   code_expires_at=now + timedelta(minutes=rules.verification.code_valid_minutes), code_tries=0)
    session.add(row)
    session.flush()
    if matched:
        _supersede(session, row)
    # A start that matched nothing does the work of one that did (the cap's count, the SMS text's
    # encryption), without queueing anything: both take as long.
    sent = _send_code(session, row, code, customer_id=wallet.customer_id if matched else None)
    # Only a code that went to the registered mobile can ever be right.
    row.code_digest = _code_digest(row, code if sent else secrets.token_hex(8))
    _record(session, row, "start", outcome=codes.SUCCESS if matched else codes.FAILED,
            reason=None if matched else ("details_mismatch" if wallet is not None else "no_such_wallet"),
            details={"code_sent": sent})
    _watch(session, wallet)
    return handle, Step("sms_code", row, remaining_tries=rules.verification.code_tries)


def _supersede(session: Session, row: Recovery) -> None:
    """A new recovery ends the customer's earlier ones still under way. One left after a wrong code
    counts against the customer like a failed one (``failed_recently``): starting again is no way
    to more tries."""
    earlier = session.scalars(select(Recovery).where(
        Recovery.customer_id == row.customer_id, Recovery.id != row.id, Recovery.status.in_(LIVE))
        .with_for_update()).all()
    wrong = False
    for old in earlier:
        old.status, old.finished_at, old.code_digest, old.token_digest = "superseded", utcnow(), None, None
        wrong = wrong or old.code_tries > 0
        _record(session, old, "superseded", outcome=codes.FAILED, reason="superseded",
                details={"code_tries": old.code_tries, "by_recovery_id": row.id})
    if wrong:
        session.flush()
        verification.note_customer_failure(session, row.customer or session.get(Customer, row.customer_id),
                                           source=f"{ACTION}.superseded")


def _send_code(session: Session, row: Recovery, code: str, *, customer_id: int | None) -> bool:
    """Queue the code to the registered mobile, within the per-customer cap shared with the desk.
    With no customer (the details matched nothing), the same queries and encryption, nothing queued."""
    limit = verification.sms_cap()
    session.execute(select(Customer.id).where(Customer.id == (customer_id or 0)).with_for_update())
    sent = verification.codes_sent_to_customer(session, customer_id or 0,
                                               utcnow() - timedelta(seconds=limit.get_expiry()))
    minutes = _rules().verification.code_valid_minutes
    if customer_id is None:
        crypto.encrypt(notifications.template(CODE_KIND).format(
            bank="", hotline="", time="", code=code, minutes=minutes), context="notification.body")
        return False
    if sent >= limit.amount:
        _record(session, row, "code_withheld", outcome=codes.DENIED, reason="customer_sms_cap",
                details={"codes_sent_in_window": sent})
        return False
    notifications.queue_sms(session, session.get(Customer, customer_id), CODE_KIND, secret=True, code=code,
                            minutes=minutes)
    return True


def _watch(session: Session, wallet: Wallet | None) -> None:
    """The risk monitor: recoveries of one wallet from several addresses or devices freeze it. Only
    starts whose ID number matched count: a wallet number alone must not be enough to freeze a
    wallet. (Counted for no wallet too, so a start that named none takes as long.)"""
    rules = _rules().risk
    since = utcnow() - timedelta(minutes=rules.recovery_window_minutes)
    addresses, devices, count = session.execute(
        select(func.count(func.distinct(Recovery.source_ip)), func.count(func.distinct(Recovery.device_id)),
               func.count(Recovery.id))
        .where(Recovery.wallet_id == (wallet.id if wallet is not None else 0), Recovery.matched.is_(True),
               Recovery.started_at > since)).one()
    if wallet is None or max(addresses, devices) < rules.recovery_sources or wallet.frozen_at:
        return
    wallet_signin.freeze(session, wallet, "recovery_burst", {
        "recoveries": count, "addresses": addresses, "devices": devices,
        "window_minutes": rules.recovery_window_minutes})


# --- the steps after the start -------------------------------------------------------------------


def find(session: Session, handle: str) -> Recovery:
    row = session.scalar(select(Recovery).where(Recovery.handle_digest == _digest(handle)))
    if row is None:
        raise NotFound("unknown_recovery")
    return row


def _expire_if_due(session: Session, row: Recovery) -> bool:
    if row.status not in LIVE or row.expires_at > utcnow():
        return False
    moved = session.execute(update(Recovery).where(Recovery.id == row.id, Recovery.status == row.status)
                            .values(status="expired", finished_at=utcnow())
                            .execution_options(synchronize_session=False)).rowcount
    session.refresh(row)
    if moved == 1:
        _record(session, row, "expired", outcome=codes.FAILED, reason="recovery_expired")
    return True


def _wrong_step(row: Recovery, expected: str) -> InvalidInput:
    return InvalidInput("wrong_step", field="recovery", status=row.status, expected=expected)


def _fail(session: Session, row: Recovery, step: str, reason: str, details: dict | None = None) -> Step:
    """The recovery has failed: it counts against the customer (if the details matched)."""
    row.status, row.failure_reason, row.finished_at = "failed", reason, utcnow()
    row.token_digest = None
    session.flush()
    _record(session, row, step, outcome=codes.FAILED, reason=reason, details=details)
    if row.matched:
        verification.note_customer_failure(session, row.customer, source=f"{ACTION}.{step}")
    return Step("failed", row, reason=reason)


def counter_reason(session: Session, row: Recovery) -> str | None:
    """Why this wallet may not recover by itself now, or None."""
    wallet = row.wallet
    session.refresh(wallet)
    if wallet.status != "active":
        return "wallet_closed"
    if wallet.frozen_at:
        return "risk_freeze"
    if wallet.lock_kind == "until_unlock":
        return "locked_until_staff_unlock"
    if wallet.hold_placed_at:
        return "protective_hold"
    if verification.is_flagged(session, row.customer_id):
        return "counter_only"
    if row.failure_reason == "several_wallets":
        return "several_wallets"
    if _authenticator(wallet) is None and len(wallet.security_questions) < 2:
        return "no_second_factor"
    return None


def _to_counter(session: Session, row: Recovery, step: str, reason: str) -> Step:
    row.status, row.failure_reason, row.finished_at = "sent_to_counter", reason, utcnow()
    row.token_digest = None
    session.flush()
    _record(session, row, "sent_to_counter", outcome=codes.DENIED, reason=reason, details={"at_step": step})
    return Step("counter_required", row, reason=reason)


def _authenticator(wallet: Wallet):
    binding = wallet.active_binding
    return binding if binding is not None and binding.totp_secret_enc else None


def check_code(session: Session, handle: str, code: str) -> Step:
    """The SMS code. Each check takes one of the recovery's tries with one conditional UPDATE, so
    of any number of concurrent checks exactly ``code_tries`` are made. Not committed."""
    row = find(session, handle)
    if _expire_if_due(session, row):
        return Step("expired", row)
    if row.status != "code_sent":
        raise _wrong_step(row, "code_sent")
    tries = _rules().verification.code_tries
    taken = session.execute(
        update(Recovery).where(Recovery.id == row.id, Recovery.status == "code_sent", Recovery.code_tries < tries)
        .values(code_tries=Recovery.code_tries + 1).returning(Recovery.code_tries)
        .execution_options(synchronize_session=False)).first()
    session.refresh(row)
    if taken is None:
        raise _wrong_step(row, "code_sent")
    used = taken[0]
    if row.code_expires_at <= utcnow():
        return _fail(session, row, "code", "code_expired", {"code_tries": used})
    right = crypto.constant_time_equals(row.code_digest or "", _code_digest(row, (code or "").strip()))
    if not (right and row.matched):
        if used >= tries:
            return _fail(session, row, "code", "code_wrong_no_tries_left", {"code_tries": used})
        _record(session, row, "code", outcome=codes.FAILED, reason="code_wrong", details={"code_tries": used})
        return Step("code_wrong", row, remaining_tries=tries - used)
    row.code_digest = None  # single use
    reason = counter_reason(session, row)
    if reason:
        return _to_counter(session, row, "code", reason)
    wallet = row.wallet
    if _authenticator(wallet) is not None:
        row.factor, questions = "authenticator_code", []
    else:
        chosen = secrets.SystemRandom().sample([q.question_code for q in wallet.security_questions], 2)
        row.factor, row.question_codes, questions = "security_answers", ",".join(chosen), chosen
    row.status = "code_verified"
    session.flush()
    _record(session, row, "code", details={"code_tries": used, "next": row.factor})
    return Step("second_factor", row, factor=row.factor, questions=questions)


def check_factor(session: Session, handle: str, *, answers: dict[str, str] | None,
                 authenticator_code: str | None) -> Step:
    """The second factor: one try (a failure counts; the customer may start again). Not committed."""
    row = find(session, handle)
    if _expire_if_due(session, row):
        return Step("expired", row)
    if row.status != "code_verified":
        raise _wrong_step(row, "code_verified")
    moved = session.execute(update(Recovery).where(Recovery.id == row.id, Recovery.status == "code_verified")
                            .values(status="checking").execution_options(synchronize_session=False)).rowcount
    session.refresh(row)
    if moved != 1:
        raise _wrong_step(row, "code_verified")
    wallet = row.wallet
    if row.factor == "authenticator_code":
        if not authenticator_code:
            raise InvalidInput("authenticator_code_required", field="authenticator_code")
        binding = _authenticator(wallet)
        secret = crypto.decrypt(binding.totp_secret_enc, context="binding.totp") if binding else None
        if secret is None or not pyotp.TOTP(secret).verify(authenticator_code.strip(), valid_window=1):
            return _fail(session, row, "factor", "authenticator_code_wrong")
    else:
        asked = (row.question_codes or "").split(",")
        given = answers or {}
        missing = [c for c in asked if not (given.get(c) or "").strip()]
        if missing:
            raise InvalidInput("answers_required", field="answers", problems={c: "answer_missing" for c in missing})
        questions = {q.question_code: q for q in wallet.security_questions}
        wrong = [c for c in asked if c not in questions
                 or not wallet_credentials.check_security_answer(questions[c], given[c])]
        if wrong:
            return _fail(session, row, "factor", "security_answers_wrong", {"wrong_answers": len(wrong)})
    reason = counter_reason(session, row)
    if reason:
        return _to_counter(session, row, "factor", reason)
    token = secrets.token_urlsafe(32)
    row.status = "verified"
    row.token_digest = crypto.token_digest(token)
    row.token_expires_at = min(utcnow() + timedelta(minutes=_rules().recovery.token_minutes), row.expires_at)
    session.flush()
    _record(session, row, "factor", details={"factor": row.factor})
    return Step("token", row, token=token, expires_at=row.token_expires_at)


def complete(session: Session, handle: str, token: str, new_password: str) -> Step:
    """Set the new password with the recovery's token (single use). A password the policy refuses
    changes nothing and leaves the token usable. Not committed."""
    row = find(session, handle)
    if _expire_if_due(session, row):
        return Step("expired", row)
    if row.status != "verified":
        raise _wrong_step(row, "verified")
    now = utcnow()
    if (row.token_digest is None or row.token_expires_at is None or row.token_expires_at <= now
            or not crypto.constant_time_equals(row.token_digest, crypto.token_digest(token or ""))):
        raise InvalidInput("invalid_token", field="recovery_token")
    wallet = row.wallet
    problems = wallet_credentials.password_problems(wallet, new_password)
    if problems:
        return Step("password_policy", row, problems=problems)
    used = session.execute(update(Recovery).where(Recovery.id == row.id, Recovery.status == "verified",
                                                  Recovery.token_digest == row.token_digest)
                           .values(status="completed", token_digest=None, finished_at=now)
                           .execution_options(synchronize_session=False)).rowcount
    session.refresh(row)
    if used != 1:
        raise _wrong_step(row, "verified")
    # The wallet's row first, held to the commit: a freeze, hold or lock placed meanwhile waits for
    # this change or is seen by the check below.
    session.execute(select(Wallet.id).where(Wallet.id == row.wallet_id).with_for_update())
    reason = counter_reason(session, row)
    if reason:  # frozen, held or flagged since the factor was checked
        return _to_counter(session, row, "complete", reason)
    before = {"wallet_no": wallet.wallet_no, "lock_kind": wallet.lock_kind, "failed_count": wallet.failed_count}
    wallet_credentials.store_password(session, wallet, new_password)
    unlocked = _lift_temporary_lock(session, wallet, now)
    _record(session, row, "complete", details={"unlocked": unlocked})
    audit.record(session, actor_for(source_ip=row.source_ip, recovery=row), "wallet.password_reset",
                 reason_code="self_service_recovery", customer_ref=_ref(row), channel=codes.SELF_SERVICE,
                 before=before, after={"wallet_no": wallet.wallet_no, "lock_kind": wallet.lock_kind,
                                       "password_expires_at": wallet.password_expires_at.isoformat()
                                       if wallet.password_expires_at else None},
                 details={"recovery_id": row.id, "unlocked": unlocked})
    notifications.queue_sms(session, wallet.customer, "password_recovered", wallet=wallet)
    return Step("password_reset", row, unlocked=unlocked)


def _lift_temporary_lock(session: Session, wallet: Wallet, now: datetime) -> bool:
    """A completed recovery ends a first or second wrong-password lock and the failure count
    (conditionally, the wallet's row first, as the lockout engine takes it); never a staff-only lock."""
    lifted = session.execute(
        update(Wallet).where(Wallet.id == wallet.id, Wallet.lock_kind == "temporary")
        .values(lock_kind=None, lock_until=None, locked_at=None, failed_count=0)
        .execution_options(synchronize_session=False)).rowcount
    if lifted == 1:
        session.execute(update(WalletLock).where(WalletLock.wallet_id == wallet.id, WalletLock.ended_at.is_(None))
                        .values(ended_at=now, ended_by="self_service").execution_options(synchronize_session=False))
    else:
        session.execute(update(Wallet).where(Wallet.id == wallet.id, Wallet.lock_kind.is_(None))
                        .values(failed_count=0).execution_options(synchronize_session=False))
    session.refresh(wallet)
    return lifted == 1


# --- what the console shows ----------------------------------------------------------------------


def recent(session: Session, customer_id: int, *, days: int | None = None, limit: int = 20) -> list[Recovery]:
    """The self-service recoveries of a customer's wallets in the last ``days`` days (the policy's
    history by default), newest first, whether or not the details matched."""
    since = utcnow() - timedelta(days=days or _rules().recovery.history_days)
    wallet_ids = select(Wallet.id).where(Wallet.customer_id == customer_id)
    return session.scalars(select(Recovery).where(
        (Recovery.customer_id == customer_id) | Recovery.wallet_id.in_(wallet_ids), Recovery.started_at > since)
        .order_by(Recovery.id.desc()).limit(limit)).all()


def failed_recently(session: Session, customer_id: int, since: datetime) -> int:
    """Recoveries of the customer since ``since`` that count against them: failed ones, and ones
    given up after a wrong code (superseded by a new start, or left to expire)."""
    now = utcnow()
    abandoned = (Recovery.code_tries > 0) & (
        Recovery.status.in_(("superseded", "expired"))
        | ((Recovery.status == "code_sent") & (Recovery.expires_at <= now)))
    failed = (Recovery.status == "failed") & Recovery.failure_reason.in_(codes.RECOVERY_FAILURES)
    return session.scalar(select(func.count(Recovery.id)).where(
        Recovery.customer_id == customer_id, Recovery.started_at > since, failed | abandoned)) or 0
