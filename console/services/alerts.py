"""Risk alerts: whose they are, and how a supervisor takes one in hand.

An alert's scope is the wallet's home branch (``Wallet.home_branch_id``, 归属网点: where the wallet
was opened, unless assigned). The supervisors of that branch see the alert, open it and acknowledge
it; a supervisor of another branch neither sees it nor acts on it (the alert is "not found" for
them, and the attempt is audited). A wallet with no home branch (opened from the command line)
raises alerts that no branch's supervisors see until one is assigned.

Acknowledging names the owner (a staff member of the branch who serves customers, who follows the
alert up) and a note; it can be done again to hand the alert over. The alert stays open until the
freeze it reports is released (``operations/release_freeze.py`` resolves it).
"""
from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import codes
from ..models.customer import RiskAlert, Wallet
from ..models.staff import Staff
from ..permissions import APPROVAL_DECIDE, CUSTOMER_VIEW, can, permissions_for
from ..timeutil import utcnow
from . import audit
from .actor import Actor
from .cases import refusal
from .errors import InvalidInput, NotFound

NOTE_MAX = 1000


def may_handle(actor: Actor) -> bool:
    """Supervisors handle the alerts of their branch (as they decide its approvals)."""
    return can(actor, APPROVAL_DECIDE) and actor.branch_id is not None


def branch_alerts(session: Session, actor: Actor, *, limit: int = 50) -> list[RiskAlert]:
    """The open alerts of the actor's branch (acknowledged or not), newest first; none for anyone
    who does not handle alerts."""
    if not may_handle(actor):
        return []
    return session.scalars(
        select(RiskAlert).join(Wallet, Wallet.id == RiskAlert.wallet_id)
        .where(RiskAlert.status == "open", Wallet.home_branch_id == actor.branch_id)
        .order_by(RiskAlert.id.desc()).limit(limit)).all()


def get_alert(session: Session, actor: Actor, alert_id: int) -> RiskAlert:
    """An alert of the actor's branch; anything else is "not found" (and audited by the boundary)."""
    row = session.get(RiskAlert, alert_id)
    if row is None or not may_handle(actor) or row.wallet.home_branch_id != actor.branch_id:
        raise NotFound("alert", audit={"action": "alert.view", "outcome": "denied",
                                       "reason_code": "not_found_or_other_branch",
                                       "details": {"alert_id": alert_id}})
    return row


def owner_candidates(session: Session, actor: Actor) -> list[Staff]:
    """Who may own an alert of the actor's branch: its active staff who serve customers."""
    serving = [role for role in codes.ROLES if CUSTOMER_VIEW in permissions_for(role)]
    return session.scalars(select(Staff).where(Staff.branch_id == actor.branch_id, Staff.active.is_(True),
                                               Staff.role.in_(serving))
                           .order_by(Staff.employee_no)).all()


def acknowledge(session: Session, actor: Actor, alert: RiskAlert, *, owner_id: int | None, note: str) -> RiskAlert:
    """Take the alert in hand: its owner and a note, recorded with who did it and when."""
    fields = {"customer_ref": alert.wallet.customer.customer_no, "details": {"alert_id": alert.id}}
    if not may_handle(actor) or alert.wallet.home_branch_id != actor.branch_id:
        raise refusal("alert.acknowledge", "not_permitted", **fields)
    if alert.status != "open":
        raise refusal("alert.acknowledge", "alert_resolved", **fields)
    note = (note or "").strip()
    if not note or len(note) > NOTE_MAX:
        raise InvalidInput("alert_note_required", field="note")
    owner = next((s for s in owner_candidates(session, actor) if s.id == owner_id), None)
    if owner is None:
        raise InvalidInput("alert_owner", field="owner")
    before = {"acknowledged": alert.acknowledged_at is not None,
              "owner": alert.owner.employee_no if alert.owner else None}
    now = utcnow()
    changed = session.execute(
        update(RiskAlert).where(RiskAlert.id == alert.id, RiskAlert.status == "open")
        .values(acknowledged_at=now, acknowledged_by_id=actor.staff_id, owner_id=owner.id, handling_note=note)
        .execution_options(synchronize_session=False)).rowcount
    if changed != 1:  # resolved meanwhile (the freeze was released)
        raise refusal("alert.acknowledge", "alert_resolved", **fields)
    session.refresh(alert)
    audit.record(session, actor, "alert.acknowledge", customer_ref=alert.wallet.customer.customer_no,
                 before=before, after={"acknowledged": True, "owner": owner.employee_no},
                 details={"alert_id": alert.id, "wallet_no": alert.wallet.wallet_no, "rule": alert.rule,
                          "note": note})
    return alert
