"""Staff sign-in: password, TOTP, lockout and sessions (DESIGN.md section 3, PCI DSS 8.x).

Every outcome is an audit event. Failures reserve before they verify: one conditional
UPDATE claims a slot in the failure counter before the password or code is checked,
so a burst of guesses cannot exceed the limit.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

import pyotp
from sqlalchemy import and_, case, delete, or_, select, update
from sqlalchemy.orm import Session, joinedload

from .. import crypto, policy
from ..models.staff import PendingSignin, Staff, StaffSession
from ..passwords import hash_password, staff_password_problems, verify_password
from ..timeutil import utcnow
from . import audit, directory
from .actor import Actor

GENERIC_FAILURE = "bad_credentials"


@dataclass
class SigninResult:
    """``status`` is "ok", "invalid", "locked" or "unavailable" (the bank's directory could not
    check a directory account's password). The password step never answers "locked": a
    locked account, an inactive one and an unknown number all answer "invalid" (``reason`` says
    which, for the audit trail and the tests, never for the person signing in)."""

    status: str
    staff: Staff | None = None
    locked_until: object = None
    reason: str | None = None


def _rules():
    return policy.current().staff_signin


def _reserve_attempt(session: Session, staff: Staff) -> bool:
    """Claim one failure slot; False when the account is locked (no check may run)."""
    now = utcnow()
    limit = _rules().lockout_threshold
    lapsed = and_(Staff.locked_until.is_not(None), Staff.locked_until <= now)
    row = session.execute(
        update(Staff)
        .where(Staff.id == staff.id)
        .where(or_(lapsed, and_(Staff.locked_until.is_(None), Staff.failed_signins < limit)))
        .values(
            failed_signins=case((lapsed, 1), else_=Staff.failed_signins + 1),
            locked_until=case((lapsed, None), else_=Staff.locked_until),
        )
        .returning(Staff.failed_signins)
        .execution_options(synchronize_session=False)
    ).first()
    session.refresh(staff)
    return row is not None


def _return_slot(session: Session, staff: Staff) -> None:
    """A step succeeded: give back its reserved slot, keeping earlier failures counted."""
    session.execute(
        update(Staff).where(Staff.id == staff.id, Staff.failed_signins > 0)
        .values(failed_signins=Staff.failed_signins - 1)
        .execution_options(synchronize_session=False)
    )
    session.refresh(staff)


def _release_attempt(session: Session, staff: Staff) -> None:
    staff.failed_signins = 0
    staff.locked_until = None


def _fail_attempt(session: Session, staff: Staff, actor: Actor, step: str, *, action: str = "staff.signin",
                  reason_code: str = GENERIC_FAILURE) -> SigninResult:
    """The reserved attempt failed: lock when it was the last allowed one."""
    audit.record(session, actor, action, outcome="failed", reason_code=reason_code,
                 details={"employee_no": staff.employee_no, "step": step,
                          "failures": staff.failed_signins})
    if staff.failed_signins >= _rules().lockout_threshold:
        now = utcnow()
        staff.locked_until = now + timedelta(minutes=_rules().lockout_minutes)
        staff.lock_notice_at, staff.lock_notice_failures = now, staff.failed_signins
        audit.record(session, Actor.system(), "staff.locked", reason_code="too_many_failures",
                     after={"employee_no": staff.employee_no,
                            "locked_until": staff.locked_until.isoformat()})
        return SigninResult("locked", staff, staff.locked_until)
    return SigninResult("invalid", staff)


def _is_locked(staff: Staff) -> bool:
    return staff.locked_until is not None and staff.locked_until > utcnow()


def check_password(session: Session, employee_no: str, password: str, *, source_ip: str | None) -> SigninResult:
    """First step of sign-in.

    Unknown number, wrong password, locked account, disabled account and inactive branch look the
    same to the caller ("invalid") and cost the same: one argon2id verification each, a dummy one
    where the real hash is not checked, so neither the answer nor its timing confirms a number.
    """
    actor = Actor.anonymous(source_ip=source_ip)
    staff = session.scalar(select(Staff).where(Staff.employee_no == employee_no.strip()))
    if staff is None and directory.enabled():
        return _first_directory_signin(session, employee_no.strip(), password, actor)
    if staff is None:
        _spend_dummy_check(password)
        audit.record(session, actor, "staff.signin", outcome="failed", reason_code="unknown_employee",
                     details={"employee_no": employee_no.strip()[:16]})
        return SigninResult("invalid", reason="unknown_employee")
    actor = _actor(staff, source_ip)
    refusal = _account_refusal(staff)
    if refusal:
        _spend_dummy_check(password)
        audit.record(session, actor, "staff.signin", outcome="denied", reason_code=refusal,
                     details={"employee_no": staff.employee_no})
        return SigninResult("invalid", staff, reason=refusal)
    if _is_locked(staff) or not _reserve_attempt(session, staff):
        _spend_dummy_check(password)
        audit.record(session, actor, "staff.signin", outcome="denied", reason_code="account_locked",
                     details={"employee_no": staff.employee_no})
        return SigninResult("invalid", staff, staff.locked_until, reason="account_locked")
    if staff.from_directory:
        return _check_directory_password(session, staff, password, actor)
    if not verify_password(staff.password_hash, password):
        result = _fail_attempt(session, staff, actor, "password")
        return SigninResult("invalid", staff, result.locked_until, reason=GENERIC_FAILURE)
    _return_slot(session, staff)
    return SigninResult("ok", staff)


def _directory_unavailable(session: Session, actor: Actor, employee_no: str) -> SigninResult:
    audit.record(session, actor, "staff.signin", outcome="failed", reason_code="directory_unavailable",
                 details={"employee_no": employee_no[:16]})
    return SigninResult("unavailable", reason="directory_unavailable")


def _check_directory_password(session: Session, staff: Staff, password: str, actor: Actor) -> SigninResult:
    """The directory checks the password (a bind as the person's entry) after the slot is reserved;
    the entry's state is applied first, so a person disabled there is refused here at once."""
    _spend_dummy_check(password)  # the same cost as a local check, on top of the directory's
    try:
        entry = directory.find_entry(staff.employee_no)
        refused = directory.refusal(session, entry)
        accepted = refused is None and directory.password_accepted(entry.dn, password)
    except directory.DirectoryUnavailable:
        _return_slot(session, staff)  # not a guess: the password was never checked
        return _directory_unavailable(session, actor, staff.employee_no)
    if refused is not None:
        _return_slot(session, staff)
        directory.reconcile(session, staff, entry)
        audit.record(session, actor, "staff.signin", outcome="denied", reason_code=refused,
                     details={"employee_no": staff.employee_no})
        return SigninResult("invalid", staff, reason=refused)
    if not accepted:
        result = _fail_attempt(session, staff, actor, "password")
        return SigninResult("invalid", staff, result.locked_until, reason=GENERIC_FAILURE)
    _return_slot(session, staff)
    directory.reconcile(session, staff, entry)
    return SigninResult("ok", staff)


def _first_directory_signin(session: Session, employee_no: str, password: str, actor: Actor) -> SigninResult:
    """No account yet: a person the directory vouches for (password, mapped group, known branch)
    gets one now (docs/directory.md); anyone else is answered like an unknown number."""
    _spend_dummy_check(password)
    try:
        entry = directory.find_entry(employee_no)
        # The directory matches numbers ignoring case; we do not. "e1001" typed for the account
        # E1001 must not reach a bind outside E1001's failure counter (nor provision it twice).
        if entry is None or entry.employee_no != employee_no:
            refused = "unknown_employee"
        else:
            refused = directory.refusal(session, entry)
        accepted = refused is None and directory.password_accepted(entry.dn, password)
    except directory.DirectoryUnavailable:
        return _directory_unavailable(session, actor, employee_no)
    if refused is not None or not accepted:
        audit.record(session, actor, "staff.signin", outcome="failed",
                     reason_code=refused or "directory_bad_credentials", details={"employee_no": employee_no[:16]})
        return SigninResult("invalid", reason=refused or GENERIC_FAILURE)
    return SigninResult("ok", directory.provision(session, entry))


def _spend_dummy_check(password: str) -> None:
    """One argon2id verification against a dummy hash: the cost of a real check."""
    verify_password(None, password)


def account_refused(staff: Staff) -> bool:
    """Whether this account may not sign in at all (disabled, or its branch inactive)."""
    return _account_refusal(staff) is not None


def _account_refusal(staff: Staff) -> str | None:
    """Why this account may not sign in at all, whatever its credentials (None: it may)."""
    if not staff.active:
        return "account_disabled"
    if staff.branch is not None and not staff.branch.active:
        return "branch_inactive"
    return None


def check_totp(session: Session, staff: Staff, code: str, *, source_ip: str | None) -> SigninResult:
    """Second step: the authenticator code. A code is accepted once (no replay)."""
    actor = _actor(staff, source_ip)
    if _account_refusal(staff):
        return SigninResult("invalid", reason=_account_refusal(staff))
    if _is_locked(staff) or not _reserve_attempt(session, staff):
        audit.record(session, actor, "staff.signin", outcome="denied", reason_code="account_locked",
                     details={"employee_no": staff.employee_no, "step": "totp"})
        return SigninResult("locked", staff, staff.locked_until)
    step = _matching_step(staff_totp_secret(staff), code, staff.totp_last_step)
    if step is None:
        return _fail_attempt(session, staff, actor, "totp")
    _return_slot(session, staff)
    staff.totp_last_step = step
    return SigninResult("ok", staff)


def counted_check(session: Session, staff: Staff, actor: Actor, step: str, check, *,
                  action: str = "staff.signin") -> SigninResult:
    """A second factor checked like the TOTP code (a security key at sign-in, or presented at the
    counter): a failure slot is reserved before ``check()`` runs and given back when it passes, so
    every factor's failures share one counter and one lock. ``check()`` returns None when it
    passed, else why not (the failure's reason code); its failure is recorded as ``action``."""
    refusal = _account_refusal(staff)
    if refusal:
        return SigninResult("invalid", staff, reason=refusal)
    if _is_locked(staff) or not _reserve_attempt(session, staff):
        audit.record(session, actor, action, outcome="denied", reason_code="account_locked",
                     details={"employee_no": staff.employee_no, "step": step})
        return SigninResult("locked", staff, staff.locked_until, reason="account_locked")
    try:
        failure = check()
    except directory.DirectoryUnavailable:
        _return_slot(session, staff)  # not a guess: nothing was checked
        audit.record(session, actor, action, outcome="failed", reason_code="directory_unavailable",
                     details={"employee_no": staff.employee_no, "step": step})
        return SigninResult("unavailable", staff, reason="directory_unavailable")
    if failure is not None:
        result = _fail_attempt(session, staff, actor, step, action=action, reason_code=failure)
        result.reason = failure
        return result
    _return_slot(session, staff)
    return SigninResult("ok", staff)


def confirm_password(session: Session, staff: Staff, password: str, *, actor: Actor) -> SigninResult:
    """A signed-in staff member proves again who they are before adding a security key: their
    password, counted like a sign-in's (a failure slot reserved first, the same lock)."""
    return counted_check(session, staff, actor, "password",
                         lambda: None if password_is_right(session, staff, password) else GENERIC_FAILURE,
                         action="staff.passkey_enrol")


def password_is_right(session: Session, staff: Staff, password: str) -> bool:
    """Whether ``password`` is this account's, wherever it is kept: the local hash, or the bank's
    directory (a bind as the person's entry, whose state is checked first). Uncounted: a caller
    checks it inside :func:`counted_check` (a supervisor's password presented at a teller's
    screen). Raises ``directory.DirectoryUnavailable`` when the directory cannot answer."""
    if not staff.from_directory:
        return verify_password(staff.password_hash, password)
    _spend_dummy_check(password)  # the cost of a local check, as at sign-in
    entry = directory.find_entry(staff.employee_no)
    return directory.refusal(session, entry) is None and directory.password_accepted(entry.dn, password)


def spend_totp_code(staff: Staff, code: str) -> bool:
    """Whether ``code`` is the staff member's authenticator code, not used before; if it is, it is
    spent (no replay, as at sign-in). Uncounted: a caller checks it inside :func:`counted_check`
    (a supervisor's code presented at a teller's screen)."""
    step = _matching_step(staff_totp_secret(staff), code, staff.totp_last_step) if staff.totp_secret_enc else None
    if step is None:
        return False
    staff.totp_last_step = step
    return True


def _matching_step(secret: str, code: str, last_step: int | None) -> int | None:
    code = (code or "").strip().replace(" ", "")
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    now_step = int(utcnow().timestamp()) // totp.interval
    for step in (now_step, now_step - 1, now_step + 1):
        if last_step is not None and step <= last_step:
            continue
        if crypto.constant_time_equals(totp.generate_otp(step), code):
            return step
    return None


def staff_totp_secret(staff: Staff) -> str:
    return crypto.decrypt(staff.totp_secret_enc, context=f"staff.totp:{staff.id}")


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(staff: Staff, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=staff.employee_no, issuer_name=_rules().totp_issuer)


def enroll_totp(session: Session, staff: Staff, secret: str, code: str, *, source_ip: str | None) -> bool:
    """Bind the authenticator once the staff member proves it shows the right code."""
    actor = _actor(staff, source_ip)
    step = _matching_step(secret, code, None)
    if step is None:
        audit.record(session, actor, "staff.totp_enrol", outcome="failed", reason_code="wrong_code")
        return False
    staff.totp_secret_enc = crypto.encrypt(secret, context=f"staff.totp:{staff.id}")
    staff.totp_last_step = step
    audit.record(session, actor, "staff.totp_enrol", after={"totp_enrolled": True})
    return True


def change_own_password(session: Session, staff: Staff, new_password: str, *, source_ip: str | None) -> list[str]:
    """Set a new password (forced at first sign-in and after an admin reset).

    Returns the policy rules the password breaks; then nothing changes but the
    refusal's audit event, which the caller commits like any other outcome.
    """
    problems = staff_password_problems(new_password, employee_no=staff.employee_no,
                                       min_length=_rules().password_min_length)
    if not problems and verify_password(staff.password_hash, new_password):
        problems.append("same_as_current")
    actor = _actor(staff, source_ip)
    if problems:
        audit.record(session, actor, "staff.password_change", outcome="failed",
                     reason_code="policy", details={"rules": problems})
        return problems
    staff.password_hash = hash_password(new_password)
    staff.must_change_password = False
    staff.password_changed_at = utcnow()
    audit.record(session, actor, "staff.password_change", after={"must_change_password": False})
    return []


@dataclass
class LockNotice:
    """A lock the staff member has not been told about: shown after their next web sign-in."""

    locked_at: object
    failures: int


def take_lock_notice(staff: Staff) -> LockNotice | None:
    """The untold lock of this account, once (the caller shows it and commits)."""
    if staff.lock_notice_at is None:
        return None
    notice = LockNotice(staff.lock_notice_at, staff.lock_notice_failures or 0)
    staff.lock_notice_at = staff.lock_notice_failures = None
    return notice


def start_session(session: Session, staff: Staff, *, source_ip: str | None, kind: str = "web") -> tuple[str, StaffSession]:
    """Complete sign-in: a brand-new session (never reused), failures reset."""
    now = utcnow()
    token = secrets.token_urlsafe(32)
    row = StaffSession(
        token_digest=crypto.token_digest(token), public_id=secrets.token_hex(8), staff_id=staff.id,
        generation=staff.session_generation, kind=kind, source_ip=source_ip,
        created_at=now, last_seen_at=now,
    )
    session.add(row)
    _release_attempt(session, staff)
    staff.last_signin_at = now
    session.flush()
    audit.record(session, _actor(staff, source_ip, row.public_id), "staff.signin",
                 details={"session_kind": kind})
    return token, row


def resolve_session(session: Session, token: str | None) -> tuple[StaffSession | None, str | None]:
    """The live session for a cookie token, or (None, why it ended)."""
    if not token:
        return None, None
    # The staff member and their branch come with the row (every request reads both): one query, not three.
    row = session.scalar(select(StaffSession).where(StaffSession.token_digest == crypto.token_digest(token))
                         .options(joinedload(StaffSession.staff).joinedload(Staff.branch)))
    if row is None:
        return None, None
    if row.ended_at is not None:
        return None, row.ended_reason
    staff = row.staff
    now = utcnow()
    reason = None
    if not staff.active or row.generation != staff.session_generation:
        reason = "revoked"
    elif staff.branch is not None and not staff.branch.active:
        reason = "branch_inactive"
    elif now - row.created_at > timedelta(hours=_rules().absolute_timeout_hours):
        reason = "absolute_timeout"
    elif now - row.last_seen_at > timedelta(minutes=_rules().idle_timeout_minutes):
        reason = "idle_timeout"
    if reason:
        end_session(session, row, reason, actor=Actor.system())
        return None, reason
    return row, None


def touch_session(row: StaffSession) -> None:
    row.last_seen_at = utcnow()


def sign_out(session: Session, actor: Actor, row: StaffSession) -> None:
    """The staff member ends their own session (the console's sign-out, the API's token revocation)."""
    end_session(session, row, "signout", actor=actor)


def end_session(session: Session, row: StaffSession, reason: str, *, actor: Actor) -> None:
    row.ended_at = utcnow()
    row.ended_reason = reason
    action = "staff.signout" if reason == "signout" else "staff.session_end"
    audit.record(session, actor, action, reason_code=reason,
                 details={"employee_no": row.staff.employee_no, "session": row.public_id})


# --- pending sign-ins (between the password step and the session) --------------------------

PENDING_PASSWORD = "password"          # the password was right
PENDING_SECOND_FACTOR = "second_factor"  # and the TOTP code (or the enrolment) too


def begin_pending_signin(session: Session, staff: Staff, *, source_ip: str | None,
                         next_url: str | None) -> str:
    """The password step passed: a server-side pending sign-in; returns the token for the cookie.

    Expired rows of anyone are deleted on the way (they are never valid again).
    """
    now = utcnow()
    session.execute(delete(PendingSignin).where(PendingSignin.expires_at <= now)
                    .execution_options(synchronize_session=False))
    token = secrets.token_urlsafe(32)
    session.add(PendingSignin(
        token_digest=crypto.token_digest(token), staff_id=staff.id, generation=staff.session_generation,
        step=PENDING_PASSWORD, next_url=next_url if next_url and len(next_url) <= 512 else None,
        source_ip=source_ip, created_at=now,
        expires_at=now + timedelta(seconds=_rules().pending_signin_seconds)))
    session.flush()
    return token


def resolve_pending_signin(session: Session, token, *, source_ip: str | None) -> tuple[PendingSignin | None, str | None]:
    """The live pending sign-in for a cookie token, or (None, why not).

    A token from another address, an expired one, or one whose account can no longer sign in
    is deleted: it never works again, from anywhere.
    """
    if not isinstance(token, str) or not token or len(token) > 128:
        return None, None
    row = session.scalar(select(PendingSignin).where(PendingSignin.token_digest == crypto.token_digest(token)))
    if row is None:
        return None, None
    staff = row.staff
    reason = None
    if row.expires_at <= utcnow():
        reason = "expired"
    elif row.source_ip != source_ip:
        reason = "address_changed"
    elif _account_refusal(staff) or row.generation != staff.session_generation:
        reason = "revoked"
    if reason is None:
        return row, None
    if reason != "expired":
        audit.record(session, _actor(staff, source_ip), "staff.signin", outcome="denied",
                     reason_code=f"pending_{reason}",
                     details={"employee_no": staff.employee_no, "step": row.step})
    session.delete(row)
    session.flush()
    return None, reason


def advance_pending_signin(session: Session, row: PendingSignin, step: str | None = None) -> str:
    """A step passed: record it and replace the token (each token serves one step only)."""
    if step:
        row.step = step
    token = secrets.token_urlsafe(32)
    row.token_digest = crypto.token_digest(token)
    session.flush()
    return token


def enrolment_secret(session: Session, row: PendingSignin) -> str:
    """The TOTP secret offered to this sign-in's enrolment: made once, kept encrypted on the row."""
    context = f"enrol:{row.staff_id}:{row.id}"
    if row.enrol_secret_enc is None:
        row.enrol_secret_enc = crypto.encrypt(new_totp_secret(), context=context)
        session.flush()
    return crypto.decrypt(row.enrol_secret_enc, context=context)


def finish_enrolment(session: Session, row: PendingSignin) -> str:
    """The authenticator is enrolled: forget the offered secret; the second factor is passed."""
    row.enrol_secret_enc = None
    return advance_pending_signin(session, row, PENDING_SECOND_FACTOR)


def finish_pending_signin(session: Session, row: PendingSignin, staff: Staff, *,
                          source_ip: str | None) -> tuple[str, LockNotice | None]:
    """Every step passed: the pending sign-in ends and a session starts (with the account's
    untold lock, if any, to show once)."""
    end_pending_signin(session, row)
    token, _row = start_session(session, staff, source_ip=source_ip)
    return token, take_lock_notice(staff)


def end_pending_signin(session: Session, row: PendingSignin) -> None:
    """The sign-in completed or failed for good: its token never works again."""
    session.delete(row)
    session.flush()


def _actor(staff: Staff, source_ip: str | None, session_id: str | None = None) -> Actor:
    return Actor.for_staff(staff, source_ip=source_ip, session_id=session_id)
