"""Operations on a wallet and the maker-checker approvals they may need (DESIGN.md section 3).

| operation         | verification                          | approval              |
| unlock            | medium or strong                      | no                    |
| reset_password    | medium or strong                      | no                    |
| reset_questions   | medium or strong                      | no                    |
| reset_2fa         | strong at a counter; by phone, medium | by phone: supervisor  |
| place_hold        | none (protective)                     | no                    |
| release_hold      | strong or medium                      | supervisor            |
| release_freeze    | strong or medium                      | supervisor            |

Every operation takes a reason code and an optional note, notifies the customer by SMS and is
one transaction with its audit event. A refusal changes nothing and is audited on its own.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import permissions as P
from ..models.customer import RiskAlert, SecurityQuestion, Wallet, WalletLock
from ..models.service import Approval, Case
from ..models.staff import Staff
from ..permissions import can
from ..timeutil import utcnow
from . import audit, notifications, verification, wallet_credentials
from .actor import Actor
from .cases import refusal
from .errors import Conflict, InvalidInput, NotFound


@dataclass(frozen=True)
class OperationRule:
    permission: str
    needs_verification: bool
    always_approval: bool = False


RULES = {
    "unlock": OperationRule(P.WALLET_UNLOCK, True),
    "reset_password": OperationRule(P.CREDENTIALS_RESET, True),
    "reset_questions": OperationRule(P.CREDENTIALS_RESET, True),
    "reset_2fa": OperationRule(P.TWOFA_RESET, True),
    "place_hold": OperationRule(P.HOLD_PLACE, False),
    "release_hold": OperationRule(P.HOLD_RELEASE_REQUEST, True, always_approval=True),
    "release_freeze": OperationRule(P.HOLD_RELEASE_REQUEST, True, always_approval=True),
}


@dataclass
class Result:
    status: str  # done, pending_approval
    approval: Approval | None = None


def applicable(wallet: Wallet, operation: str) -> bool:
    """Whether the operation makes sense for the wallet's present state."""
    return {
        "unlock": wallet.lock_kind is not None,
        "reset_password": True,
        "reset_questions": bool(wallet.security_questions),
        "reset_2fa": wallet.active_binding is not None,
        "place_hold": wallet.hold_placed_at is None,
        "release_hold": wallet.hold_placed_at is not None,
        "release_freeze": wallet.frozen_at is not None,
    }[operation]


def needs_approval(actor: Actor, case: Case, operation: str) -> bool:
    rule = RULES[operation]
    if rule.always_approval:
        return True
    if operation == "reset_2fa":
        # In person with the document, a teller or supervisor resets it; by phone a supervisor approves.
        return case.channel == "phone" or not can(actor, P.TWOFA_RESET)
    return False


def may_start(actor: Actor, case: Case, operation: str) -> bool:
    rule = RULES[operation]
    if operation == "reset_2fa":
        return can(actor, P.TWOFA_RESET) or can(actor, P.TWOFA_RESET_REQUEST)
    return can(actor, rule.permission)


def _required_strength(case: Case, operation: str) -> set[str]:
    if operation == "reset_2fa" and case.channel == "counter":
        return {"strong"}
    return {"strong", "medium"}


def _check(session: Session, actor: Actor, case: Case, wallet: Wallet, operation: str, reason_code: str,
           note: str | None):
    """Every precondition, checked before anything changes; returns the verification used."""
    fields = {"case_ref": case.case_no, "customer_ref": case.customer.customer_no,
              "details": {"requested_reason": reason_code}}
    action = f"wallet.{operation}"
    if operation not in RULES:
        raise InvalidInput("operation", field="operation")
    if reason_code not in current_app.config["REASON_CODES"]:
        raise InvalidInput("reason_code", field="reason_code")
    if note is not None and len(note) > 1000:
        raise InvalidInput("note_length", field="note")
    if wallet.customer_id != case.customer_id:
        raise NotFound("wallet")
    if not may_start(actor, case, operation):
        raise refusal(action, "not_permitted", **fields)
    if case.status != "open" or case.staff_id != actor.staff_id:
        raise refusal(action, "case_not_open_or_not_yours", **fields)
    if not applicable(wallet, operation):
        raise refusal(action, "not_applicable", **fields)
    if not RULES[operation].needs_verification:
        return None
    proof = verification.valid_verification(session, actor, case)
    if proof is None:
        raise refusal(action, "verification_missing_or_expired", **fields)
    if proof.strength not in _required_strength(case, operation):
        raise refusal(action, "verification_too_weak", verification_id=proof.id, **fields)
    return proof


def perform(session: Session, actor: Actor, case: Case, wallet: Wallet, operation: str, *, reason_code: str,
            note: str | None = None) -> Result:
    """Run an operation, or file the approval request it needs."""
    proof = _check(session, actor, case, wallet, operation, reason_code, note)
    if needs_approval(actor, case, operation):
        return Result("pending_approval", request_approval(session, actor, case, wallet, operation,
                                                           reason_code=reason_code, note=note, proof=proof))
    execute(session, actor, case, wallet, operation, reason_code=reason_code, note=note,
            verification_id=proof.id if proof else None)
    return Result("done")


def execute(session: Session, actor: Actor, case: Case, wallet: Wallet, operation: str, *, reason_code: str,
            note: str | None, verification_id: int | None, approval_id: int | None = None) -> None:
    """The state change itself, its audit event and its SMS."""
    now = utcnow()
    before = wallet_state(wallet)
    branch = case.branch.name.split(" ")[0]
    sms = None
    if operation == "unlock":
        # Conditional, and the wallet's row first (as the lockout engine takes it): a lock that
        # lapsed meanwhile, with new attempts counted since, is not wiped by a stale page.
        unlocked = session.execute(
            update(Wallet).where(Wallet.id == wallet.id, Wallet.lock_kind.is_not(None))
            .values(lock_kind=None, lock_until=None, locked_at=None, failed_count=0)
            .execution_options(synchronize_session=False)
        ).rowcount
        if unlocked != 1:
            session.refresh(wallet)
            raise refusal("wallet.unlock", "not_applicable", customer_ref=case.customer.customer_no,
                          case_ref=case.case_no)
        session.execute(update(WalletLock).where(WalletLock.wallet_id == wallet.id, WalletLock.ended_at.is_(None))
                        .values(ended_at=now, ended_by=actor.employee_no).execution_options(synchronize_session=False))
        session.refresh(wallet)
        sms = "wallet_unlocked"
    elif operation == "reset_password":
        wallet_credentials.issue_temporary_password(session, actor, wallet, reason_code=reason_code,
                                                    case_ref=case.case_no, verification_id=verification_id,
                                                    record=False)
        sms = "password_reset"
    elif operation == "reset_questions":
        session.query(SecurityQuestion).filter(SecurityQuestion.wallet_id == wallet.id).delete()
        session.expire(wallet, ["security_questions"])
        sms = "security_questions_reset"
    elif operation == "reset_2fa":
        binding = wallet.active_binding
        binding.unbound_at, binding.unbound_reason = now, reason_code
        sms = "twofa_reset"
    elif operation == "place_hold":
        wallet.hold_placed_at, wallet.hold_reason, wallet.hold_placed_by = now, reason_code, actor.employee_no
        sms = "hold_placed"
    elif operation == "release_hold":
        wallet.hold_placed_at = wallet.hold_reason = wallet.hold_placed_by = None
        sms = "hold_released"
    elif operation == "release_freeze":
        wallet.frozen_at = wallet.frozen_reason = None
        session.execute(update(RiskAlert).where(RiskAlert.wallet_id == wallet.id, RiskAlert.status == "open")
                        .values(status="resolved", resolved_at=now).execution_options(synchronize_session=False))
        sms = "freeze_released"
    session.flush()
    audit.record(session, actor, f"wallet.{operation}", reason_code=reason_code,
                 customer_ref=case.customer.customer_no, case_ref=case.case_no, verification_id=verification_id,
                 approval_id=approval_id, channel=case.channel, before=before, after=wallet_state(wallet),
                 details={"note": note} if note else None)
    notifications.queue_sms(session, case.customer, sms, wallet=wallet, branch=branch)


def wallet_state(wallet: Wallet) -> dict:
    """What the audit trail keeps of a wallet's state (no secret, no personal identifier)."""
    binding = wallet.active_binding
    return {
        "wallet_no": wallet.wallet_no,
        "lock_kind": wallet.lock_kind,
        "lock_until": wallet.lock_until.isoformat() if wallet.lock_until else None,
        "frozen": wallet.frozen_at is not None,
        "hold": wallet.hold_placed_at is not None,
        "must_change_password": bool(wallet.must_change_password),
        "security_questions": len(wallet.security_questions),
        "twofa_bound": binding is not None,
    }


# --- approvals ----------------------------------------------------------------------------------


def request_approval(session: Session, actor: Actor, case: Case, wallet: Wallet, operation: str, *,
                     reason_code: str, note: str | None, proof) -> Approval:
    expire_stale(session)
    now = utcnow()
    exists = session.scalar(select(Approval.id).where(Approval.customer_id == case.customer_id,
                                                      Approval.operation == operation, Approval.status == "pending"))
    if exists:
        raise Conflict("approval_pending", audit={
            "action": "approval.request", "outcome": "denied", "reason_code": "already_pending",
            "case_ref": case.case_no, "customer_ref": case.customer.customer_no, "approval_id": exists})
    evidence = {"verification": None}
    if proof is not None:
        evidence["verification"] = {"id": proof.id, "channel": proof.channel, "method": proof.method,
                                    "strength": proof.strength, "completed_at": proof.completed_at.isoformat(),
                                    "summary": json.loads(proof.evidence or "{}")}
    evidence["wallet"] = wallet_state(wallet)
    row = Approval(case_id=case.id, branch_id=case.branch_id, customer_id=case.customer_id, wallet_id=wallet.id,
                   operation=operation, reason_code=reason_code, note=note,
                   evidence=json.dumps(evidence, ensure_ascii=False, sort_keys=True),
                   verification_id=proof.id if proof else None, maker_id=actor.staff_id, status="pending",
                   created_at=now, expires_at=now + timedelta(minutes=current_app.config["APPROVAL_EXPIRY_MINUTES"]))
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # a concurrent request won the unique pending slot
        raise Conflict("approval_pending") from None
    audit.record(session, actor, "approval.request", reason_code=reason_code, customer_ref=case.customer.customer_no,
                 case_ref=case.case_no, approval_id=row.id, verification_id=row.verification_id,
                 channel=case.channel, details={"operation": operation})
    return row


def expire_stale(session: Session) -> int:
    """Pending requests older than 30 minutes expire (recorded once each, by the system)."""
    now = utcnow()
    stale = session.scalars(select(Approval).where(Approval.status == "pending", Approval.expires_at <= now)).all()
    count = 0
    for row in stale:
        changed = session.execute(update(Approval).where(Approval.id == row.id, Approval.status == "pending")
                                  .values(status="expired").execution_options(synchronize_session=False)).rowcount
        if changed:
            count += 1
            audit.record(session, Actor.system(), "approval.expire", approval_id=row.id,
                         customer_ref=row.customer.customer_no, case_ref=row.case.case_no,
                         details={"operation": row.operation})
    if count:
        session.expire_all()
    return count


def get_approval(session: Session, actor: Actor, approval_id: int) -> Approval:
    """Only a supervisor of the request's branch sees it; anything else is "not found"."""
    row = session.get(Approval, approval_id)
    if row is None or row.branch_id != actor.branch_id or not can(actor, P.APPROVAL_DECIDE):
        raise NotFound("approval", audit={"action": "approval.view", "outcome": "denied",
                                          "reason_code": "not_found_or_other_branch", "approval_id": approval_id})
    return row


def pending_for_branch(session: Session, actor: Actor) -> list[Approval]:
    return session.scalars(select(Approval).where(Approval.branch_id == actor.branch_id,
                                                  Approval.status == "pending").order_by(Approval.id)).all()


def decide(session: Session, actor: Actor, approval: Approval, *, approve: bool, note: str) -> Approval:
    """Approve (and execute exactly once) or reject. The maker can never decide their own request."""
    fields = {"approval_id": approval.id, "customer_ref": approval.customer.customer_no,
              "case_ref": approval.case.case_no}
    if not can(actor, P.APPROVAL_DECIDE) or approval.branch_id != actor.branch_id:
        raise refusal("approval.decide", "not_permitted", **fields)
    if approval.maker_id == actor.staff_id:
        raise refusal("approval.decide", "self_approval", **fields)
    note = (note or "").strip()
    if not note or len(note) > 1000:
        raise InvalidInput("decision_note_required", field="note")
    now = utcnow()
    if approval.expires_at <= now and approval.status == "pending":
        expire_stale(session)
        raise refusal("approval.decide", "expired", **fields)
    new_status = "approved" if approve else "rejected"
    # Exactly one decision wins, even when two supervisors click at the same moment.
    changed = session.execute(
        update(Approval).where(Approval.id == approval.id, Approval.status == "pending")
        .values(status=new_status, checker_id=actor.staff_id, decision_note=note, decided_at=now)
        .execution_options(synchronize_session=False)).rowcount
    if changed != 1:
        raise refusal("approval.decide", "already_decided", **fields)
    session.refresh(approval)
    audit.record(session, actor, "approval.approve" if approve else "approval.reject", approval_id=approval.id,
                 customer_ref=approval.customer.customer_no, case_ref=approval.case.case_no,
                 reason_code=approval.reason_code, details={"operation": approval.operation, "note": note})
    if approve:
        _execute_approved(session, actor, approval)
    return approval


def _execute_approved(session: Session, checker: Actor, approval: Approval) -> None:
    changed = session.execute(
        update(Approval).where(Approval.id == approval.id, Approval.status == "approved")
        .values(status="executed", executed_at=utcnow()).execution_options(synchronize_session=False)).rowcount
    if changed != 1:
        return
    session.refresh(approval)
    wallet = approval.wallet
    if not applicable(wallet, approval.operation):
        raise refusal("approval.execute", "no_longer_applicable", approval_id=approval.id)
    maker = session.get(Staff, approval.maker_id)
    maker_actor = Actor.for_staff(maker, channel=approval.case.channel)
    execute(session, maker_actor, approval.case, wallet, approval.operation, reason_code=approval.reason_code,
            note=approval.note, verification_id=approval.verification_id, approval_id=approval.id)
    audit.record(session, checker, "approval.execute", approval_id=approval.id,
                 customer_ref=approval.customer.customer_no, case_ref=approval.case.case_no,
                 details={"operation": approval.operation})
