"""The engine: checks an operation's preconditions, runs it (or files its approval request), and
says which operations an actor may run on a case. It knows no operation by name: every rule comes
from the operation's registry entry.

Every operation takes a reason code and an optional note, notifies the customer by SMS and is
one transaction with its audit event. A refusal changes nothing and is audited on its own.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...models.customer import Wallet
from ...models.service import Approval, Case, Verification
from ...permissions import can
from ... import policy
from ...timeutil import utcnow
from .. import audit, notifications, verification
from ..actor import Actor
from ..cases import refusal
from ..errors import Conflict, InvalidInput, NotFound
from . import approvals, registry

RULES = registry.RegistryView()  # every operation by code, in the case page's order


@dataclass
class Result:
    status: str  # done, pending_approval
    approval: Approval | None = None


def applicable(wallet: Wallet, operation: str) -> bool:
    """Whether the operation makes sense for the wallet's present state."""
    return registry.get(operation).applies(wallet)


def needs_approval(actor: Actor, case: Case, operation: str) -> bool:
    return registry.get(operation).needs_approval(actor, case)


def may_start(actor: Actor, case: Case, operation: str) -> bool:
    """The actor may run it, or file it for approval."""
    op = registry.get(operation)
    return can(actor, op.permission) or (op.request_permission is not None and can(actor, op.request_permission))


def required_strength(case: Case, operation: str) -> frozenset[str]:
    """Verification strengths the operation accepts on the case's channel (empty: none needed)."""
    op = registry.get(operation)
    return op.verification[case.channel] if op.verification is not None else frozenset()


def verification_gap(case: Case, operation: str, proof: Verification | None) -> str | None:
    """Why the verification at hand does not do for the operation (a reason code), or None."""
    if not registry.get(operation).needs_verification:
        return None
    if proof is None:
        return "verification_missing_or_expired"
    if proof.strength not in required_strength(case, operation):
        return "verification_too_weak"
    return None


# --- the read model: what this actor may do on this case -----------------------------------------


@dataclass(frozen=True)
class OperationAvailability:
    wallet: Wallet
    operation: str
    state: str  # available, not_allowed, needs_verification, pending_approval
    # not_permitted, verification_missing_or_expired, verification_too_weak, approval_pending
    reason: str | None
    needs_approval: bool
    approval: Approval | None = None  # with pending_approval: the request waiting for a supervisor


_LOOK_UP = object()


def pending_requests(session: Session, customer_id: int) -> dict[str, Approval]:
    """The customer's requests still waiting for a supervisor, by operation (one each at most).
    A request past its expiry is not waiting any more, even before ``expire_stale`` has marked it."""
    rows = session.scalars(select(Approval).where(Approval.customer_id == customer_id, Approval.status == "pending",
                                                  Approval.expires_at > utcnow())).all()
    return {row.operation: row for row in rows}


def availability(session: Session, actor: Actor, case: Case, proof=_LOOK_UP) -> list[OperationAvailability]:
    """For each wallet of the case's customer, each operation that applies to it, and whether this
    actor may run it now; operations that do not apply to a wallet's state are left out.

    ``proof`` is the actor's valid verification for the case (None: there is none); looked up when
    not given. Reads only: nothing is audited.
    """
    if proof is _LOOK_UP:
        proof = verification.valid_verification(session, actor, case)
    pending = pending_requests(session, case.customer_id)
    rows = []
    for wallet in case.customer.wallets:
        for op in registry.all_operations():
            state, reason, waiting = "available", None, None
            if not may_start(actor, case, op.code):
                state, reason = "not_allowed", "not_permitted"
            elif not op.applies(wallet):
                continue
            elif op.code in pending:
                # Filed already (in this case or another of the customer's): not offered again, and
                # not run directly beside it, until a supervisor decides it or it expires.
                state, reason, waiting = "pending_approval", "approval_pending", pending[op.code]
            else:
                reason = verification_gap(case, op.code, proof)
                if reason is not None:
                    state = "needs_verification"
            rows.append(OperationAvailability(wallet=wallet, operation=op.code, state=state, reason=reason,
                                              needs_approval=op.needs_approval(actor, case), approval=waiting))
    return rows


# --- running an operation -----------------------------------------------------------------------


def _check(session: Session, actor: Actor, case: Case, wallet: Wallet, operation: str, reason_code: str,
           note: str | None):
    """Every precondition, checked before anything changes; returns the verification used."""
    fields = {"case_ref": case.case_no, "customer_ref": case.customer.customer_no,
              "details": {"requested_reason": reason_code}}
    action = f"wallet.{operation}"
    if operation not in registry.REGISTRY:
        raise InvalidInput("operation", field="operation")
    if reason_code not in policy.current().reason_codes:
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
    waiting = pending_requests(session, case.customer_id).get(operation)
    if waiting is not None:
        raise Conflict("approval_pending", audit={
            "action": "approval.request" if needs_approval(actor, case, operation) else action,
            "outcome": "denied", "reason_code": "already_pending", "approval_id": waiting.id, **fields})
    if not registry.get(operation).needs_verification:
        return None
    proof = verification.valid_verification(session, actor, case)
    gap = verification_gap(case, operation, proof)
    if gap == "verification_too_weak":
        raise refusal(action, gap, verification_id=proof.id, **fields)
    if gap is not None:
        raise refusal(action, gap, **fields)
    return proof


def perform(session: Session, actor: Actor, case: Case, wallet: Wallet, operation: str, *, reason_code: str,
            note: str | None = None) -> Result:
    """Run an operation, or file the approval request it needs."""
    proof = _check(session, actor, case, wallet, operation, reason_code, note)
    if needs_approval(actor, case, operation):
        return Result("pending_approval", approvals.request_approval(
            session, actor, case, wallet, operation, reason_code=reason_code, note=note, proof=proof))
    execute(session, actor, case, wallet, operation, reason_code=reason_code, note=note,
            verification_id=proof.id if proof else None)
    return Result("done")


def execute(session: Session, actor: Actor, case: Case, wallet: Wallet, operation: str, *, reason_code: str,
            note: str | None, verification_id: int | None, approval_id: int | None = None) -> None:
    """The state change itself, its audit event and its SMS."""
    op = registry.get(operation)
    now = utcnow()
    before = wallet_state(wallet)
    branch = case.branch.name.split(" ")[0]
    op.change(session, actor, case, wallet, reason_code=reason_code, verification_id=verification_id, now=now)
    session.flush()
    audit.record(session, actor, op.action, reason_code=reason_code,
                 customer_ref=case.customer.customer_no, case_ref=case.case_no, verification_id=verification_id,
                 approval_id=approval_id, channel=case.channel, before=before, after=wallet_state(wallet),
                 details={"note": note} if note else None)
    notifications.queue_sms(session, case.customer, op.sms_kind, wallet=wallet, branch=branch)


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
