"""Managing staff accounts and branches (the admin role)."""
from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import crypto
from ..models.staff import Branch, OneTimeSecret, Role, Staff, StaffSession
from ..passwords import generate_initial_password, hash_password
from ..permissions import ADMIN_MANAGE, can
from ..timeutil import utcnow
from . import audit, passkeys
from .actor import Actor
from .errors import Conflict, InvalidInput, NotAllowed

BRANCH_AUDIT_FIELDS = ("code", "name", "kind", "active")


def staff_snapshot(staff: Staff) -> dict:
    """What the audit trail keeps of a staff account: never a hash or a secret."""
    return {
        "employee_no": staff.employee_no,
        "name": staff.name,
        "role": staff.role,
        "branch": staff.branch.code if staff.branch else None,
        "active": bool(staff.active),
        "must_change_password": bool(staff.must_change_password),
        "totp_enrolled": staff.totp_enrolled,
        "locked_until": staff.locked_until.isoformat() if staff.locked_until else None,
    }


def branch_snapshot(branch: Branch) -> dict:
    return {k: getattr(branch, k) for k in BRANCH_AUDIT_FIELDS}


def _require_admin(session: Session, actor: Actor, action: str) -> None:
    if not can(actor, ADMIN_MANAGE):
        # Recorded by the boundary after the rollback, so the refusal is on the chain on its own.
        raise NotAllowed(action, audit={"action": action, "outcome": "denied", "reason_code": "not_permitted"})


def validate_staff_fields(employee_no: str, name: str, role: str) -> None:
    if not employee_no or not employee_no.isalnum() or len(employee_no) > 16:
        raise InvalidInput("employee_no", field="employee_no")
    if not name or len(name) > 80:
        raise InvalidInput("name", field="name")
    if role not in {r.value for r in Role}:
        raise InvalidInput("role", field="role")


def prepare_new_staff(staff: Staff) -> str:
    """Give a new account a one-time initial password; returns it to show once to the admin."""
    initial = generate_initial_password()
    staff.password_hash = hash_password(initial)
    staff.must_change_password = True
    staff.created_at = utcnow()
    staff.session_generation = 1
    staff.failed_signins = 0
    return initial


def create_staff(session: Session, actor: Actor, *, employee_no: str, name: str, role: str,
                 branch: Branch, active: bool = True) -> tuple[Staff, str]:
    _require_admin(session, actor, "staff.create")
    validate_staff_fields(employee_no, name, role)
    if session.scalar(select(Staff.id).where(Staff.employee_no == employee_no)):
        raise Conflict("employee_no exists", field="employee_no")
    staff = Staff(employee_no=employee_no, name=name, role=role, branch=branch, active=active)
    initial = prepare_new_staff(staff)
    session.add(staff)
    session.flush()
    audit.record(session, actor, "staff.create", after=staff_snapshot(staff))
    return staff, initial


def record_staff_change(session: Session, actor: Actor, staff: Staff, before: dict | None) -> None:
    """Audit an edit of a staff account; disabling it ends every session at once."""
    after = staff_snapshot(staff)
    if before is not None and before.get("active") and not staff.active:
        end_all_sessions(session, staff)
    audit.record(session, actor, "staff.create" if before is None else "staff.update",
                 before=before, after=after)


def end_all_sessions(session: Session, staff: Staff, reason: str = "revoked") -> int:
    staff.session_generation = (staff.session_generation or 1) + 1
    result = session.execute(
        update(StaffSession)
        .where(StaffSession.staff_id == staff.id, StaffSession.ended_at.is_(None))
        .values(ended_at=utcnow(), ended_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def set_staff_active(session: Session, actor: Actor, staff: Staff, active: bool) -> None:
    _require_admin(session, actor, "staff.update")
    if actor.staff_id == staff.id and not active:
        raise NotAllowed("cannot disable yourself", audit={
            "action": "staff.update", "outcome": "denied", "reason_code": "own_account",
            "details": {"employee_no": staff.employee_no}})
    before = staff_snapshot(staff)
    staff.active = active
    record_staff_change(session, actor, staff, before)


def reset_staff_password(session: Session, actor: Actor, staff: Staff) -> str:
    """Admin reset: a new one-time password, forced change, every session ended."""
    _require_admin(session, actor, "staff.password_reset")
    if staff.from_directory:  # the bank's directory holds this password (docs/directory.md)
        raise NotAllowed("directory account", audit={
            "action": "staff.password_reset", "outcome": "denied", "reason_code": "directory_account",
            "details": {"employee_no": staff.employee_no}})
    before = staff_snapshot(staff)
    initial = generate_initial_password()
    staff.password_hash = hash_password(initial)
    staff.must_change_password = True
    ended = end_all_sessions(session, staff, "password_reset")
    audit.record(session, actor, "staff.password_reset", before=before, after=staff_snapshot(staff),
                 details={"sessions_ended": ended})
    return initial


def reset_staff_totp(session: Session, actor: Actor, staff: Staff) -> None:
    """Every second factor is gone (a lost phone, keys and all): unbind the authenticator and
    revoke every security key; the staff member enrols again at next sign-in."""
    _require_admin(session, actor, "staff.totp_reset")
    before = staff_snapshot(staff)
    staff.totp_secret_enc = None
    staff.totp_last_step = None
    revoked = passkeys.revoke_every_key(session, staff, revoked_by_id=actor.staff_id)
    ended = end_all_sessions(session, staff, "totp_reset")
    audit.record(session, actor, "staff.totp_reset", before=before, after=staff_snapshot(staff),
                 details={"sessions_ended": ended, "passkeys_revoked": revoked})


def revoke_staff_passkeys(session: Session, actor: Actor, staff: Staff) -> None:
    """A lost or stolen security key: revoke every key of the account and end its sessions; the
    authenticator app stays. A role that must use a key enrols a new one at the next sign-in."""
    _require_admin(session, actor, "staff.passkey_revoke")
    revoked = passkeys.revoke_every_key(session, staff, revoked_by_id=actor.staff_id)
    ended = end_all_sessions(session, staff, "keys_revoked")
    audit.record(session, actor, "staff.passkey_revoke", details={
        "employee_no": staff.employee_no, "by": "admin", "passkeys_revoked": revoked, "sessions_ended": ended})


def unlock_staff(session: Session, actor: Actor, staff: Staff) -> None:
    _require_admin(session, actor, "staff.unlock")
    before = staff_snapshot(staff)
    staff.failed_signins = 0
    staff.locked_until = None
    audit.record(session, actor, "staff.unlock", before=before, after=staff_snapshot(staff))


def record_branch_change(session: Session, actor: Actor, branch: Branch, before: dict | None) -> None:
    """Audit an edit of a branch. Deactivating it ends every session and API token of its staff
    at once (and their sign-ins under way); they cannot sign in while it stays inactive."""
    details = None
    if before is not None and before.get("active") and not branch.active:
        ended = sum(end_all_sessions(session, staff, "branch_inactive") for staff in branch.staff)
        details = {"sessions_ended": ended}
    audit.record(session, actor, "branch.create" if before is None else "branch.update",
                 before=before, after=branch_snapshot(branch), details=details)


def set_branch_active(session: Session, actor: Actor, branch: Branch, active: bool) -> None:
    _require_admin(session, actor, "branch.update")
    before = branch_snapshot(branch)
    branch.active = active
    record_branch_change(session, actor, branch, before)


def create_branch(session: Session, actor: Actor, *, code: str, name: str, kind: str) -> Branch:
    _require_admin(session, actor, "branch.create")
    if session.scalar(select(Branch.id).where(Branch.code == code)):
        raise Conflict("branch code exists", field="code")
    branch = Branch(code=code, name=name, kind=kind, active=True)
    session.add(branch)
    session.flush()
    audit.record(session, actor, "branch.create", after=branch_snapshot(branch))
    return branch


def keep_one_time_secret(session: Session, staff_session_id: int, employee_no: str, secret: str) -> None:
    """Hold an initial password, encrypted, for the one page view of the admin session that
    issued it. It is kept server-side: a copy of an earlier cookie cannot show it again."""
    session.add(OneTimeSecret(
        staff_session_id=staff_session_id, employee_no=employee_no, created_at=utcnow(),
        secret_enc=crypto.encrypt(secret, context=f"one-time:{staff_session_id}")))
    session.flush()


def take_one_time_secrets(session: Session, staff_session_id: int) -> list[tuple[str, str]]:
    """The initial passwords waiting for this admin session, deleted as they are read."""
    rows = session.scalars(select(OneTimeSecret).where(OneTimeSecret.staff_session_id == staff_session_id)
                           .order_by(OneTimeSecret.id)).all()
    items = [(row.employee_no, crypto.decrypt(row.secret_enc, context=f"one-time:{staff_session_id}"))
             for row in rows]
    for row in rows:
        session.delete(row)
    session.flush()
    return items
