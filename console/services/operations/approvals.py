"""Maker-checker approvals of operations (DESIGN.md section 3, "Approvals").

The checker is a supervisor of the maker's branch and never the maker; a note is required; a
request expires after 30 minutes; one pending request per customer and operation; an approved
request executes exactly once even if two supervisors click at the same moment.
"""
from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ... import permissions as P
from ... import policy
from ...models.customer import Wallet
from ...models.service import Approval, Case
from ...models.staff import Staff
from ...permissions import can
from ...timeutil import utcnow
from .. import audit
from ..actor import Actor
from ..cases import refusal
from ..errors import Conflict, InvalidInput, NotFound
from . import engine


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
    evidence["wallet"] = engine.wallet_state(wallet)
    row = Approval(case_id=case.id, branch_id=case.branch_id, customer_id=case.customer_id, wallet_id=wallet.id,
                   operation=operation, reason_code=reason_code, note=note,
                   evidence=json.dumps(evidence, ensure_ascii=False, sort_keys=True),
                   verification_id=proof.id if proof else None, maker_id=actor.staff_id, status="pending",
                   created_at=now, expires_at=now + timedelta(minutes=policy.current().approvals.expiry_minutes))
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


def decide(session: Session, actor: Actor, approval: Approval, *, approve: bool, note: str,
           screen: Actor | None = None) -> Approval:
    """Approve (and execute exactly once) or reject. The maker can never decide their own request.

    ``screen``: decided by ``actor`` standing at that staff session's screen (主管现场授权,
    counter_authorisation.py), not from the queue: never by the staff member signed in there
    either, and the request and its events name that session."""
    fields = {"approval_id": approval.id, "customer_ref": approval.customer.customer_no,
              "case_ref": approval.case.case_no}
    if not can(actor, P.APPROVAL_DECIDE) or approval.branch_id != actor.branch_id:
        raise refusal("approval.decide", "not_permitted", **fields)
    if approval.maker_id == actor.staff_id:
        raise refusal("approval.decide", "self_approval", **fields)
    if screen is not None and (screen.session_id is None or screen.staff_id == actor.staff_id):
        raise refusal("approval.decide", "own_screen", **fields)
    note = (note or "").strip()
    if not note or len(note) > 1000:
        raise InvalidInput("decision_note_required", field="note")
    now = utcnow()
    if approval.expires_at <= now and approval.status == "pending":
        expire_stale(session)
        raise refusal("approval.decide", "expired", **fields)
    new_status = "approved" if approve else "rejected"
    via = {"decided_via": "counter", "counter_session": screen.session_id, "counter_staff_id": screen.staff_id} \
        if screen is not None else {"decided_via": "queue"}
    # Exactly one decision wins, even when two supervisors click at the same moment (or one at the
    # queue and one at the maker's screen).
    changed = session.execute(
        update(Approval).where(Approval.id == approval.id, Approval.status == "pending")
        .values(status=new_status, checker_id=actor.staff_id, decision_note=note, decided_at=now, **via)
        .execution_options(synchronize_session=False)).rowcount
    if changed != 1:
        raise refusal("approval.decide", "already_decided", **fields)
    session.refresh(approval)
    details = {"operation": approval.operation, "note": note, "decided_via": via["decided_via"],
               "maker": approval.maker.employee_no}
    if screen is not None:
        details.update(screen_session=screen.session_id, screen_staff=screen.employee_no)
    audit.record(session, actor, "approval.approve" if approve else "approval.reject", approval_id=approval.id,
                 customer_ref=approval.customer.customer_no, case_ref=approval.case.case_no,
                 reason_code=approval.reason_code, details=details)
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
    if not engine.applicable(wallet, approval.operation):
        raise refusal("approval.execute", "no_longer_applicable", approval_id=approval.id)
    maker = session.get(Staff, approval.maker_id)
    maker_actor = Actor.for_staff(maker, channel=approval.case.channel)
    engine.execute(session, maker_actor, approval.case, wallet, approval.operation,
                   reason_code=approval.reason_code, note=approval.note, verification_id=approval.verification_id,
                   approval_id=approval.id)
    audit.record(session, checker, "approval.execute", approval_id=approval.id,
                 customer_ref=approval.customer.customer_no, case_ref=approval.case.case_no,
                 details={"operation": approval.operation})
