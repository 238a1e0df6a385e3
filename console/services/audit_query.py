"""Searching the audit trail: validated filters, the reader's scope, keyset pagination."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import codes
from ..models.audit import AuditEvent
from ..models.customer import Customer, Wallet
from ..models.service import Case
from ..permissions import AUDIT_READ_ALL, AUDIT_READ_BRANCH, AUDIT_READ_OWN, can
from ..timeutil import local_midnight_utc
from . import audit
from .actor import Actor
from .errors import NotFound

# What the role, outcome and channel filters accept: the domain's codes (``console.codes``).
ROLES, OUTCOMES, CHANNELS = codes.ROLES, codes.OUTCOMES, codes.CHANNELS
FILTER_KEYS = ("start", "end", "actor", "role", "branch", "wallet", "customer", "action", "outcome", "channel", "case",
               "receipt")
_TOKEN = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
PAGE_SIZE = 50


@dataclass
class Filters:
    start: date | None = None
    end: date | None = None
    actor: str | None = None
    role: str | None = None
    branch: str | None = None
    wallet: str | None = None
    customer: str | None = None
    action: str | None = None
    outcome: str | None = None
    channel: str | None = None
    case: str | None = None
    receipt: str | None = None
    errors: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: (v.isoformat() if isinstance(v, date) else v) for k in FILTER_KEYS if (v := getattr(self, k))}


def parse_filters(args) -> Filters:
    """Read filters from query arguments; every bad value gets a named error, nothing raises."""
    f = Filters()
    for key in ("start", "end"):
        raw = (args.get(key) or "").strip()
        if raw:
            try:
                setattr(f, key, date.fromisoformat(raw))
            except ValueError:
                f.errors[key] = "date"
    if f.start and f.end and f.start > f.end:
        f.errors["end"] = "range"
    for key in ("actor", "branch", "wallet", "customer", "action", "case", "receipt"):
        raw = (args.get(key) or "").strip()
        if raw:
            if not _TOKEN.match(raw):
                f.errors[key] = "format"
            else:
                setattr(f, key, raw)
    if f.wallet and not f.wallet.isdigit():
        f.errors["wallet"] = "format"
    for key, allowed in (("role", ROLES), ("outcome", OUTCOMES), ("channel", CHANNELS)):
        raw = (args.get(key) or "").strip()
        if raw:
            if raw not in allowed:
                f.errors[key] = "choice"
            else:
                setattr(f, key, raw)
    return f


def scope_clause(actor: Actor):
    """Auditors read everything; supervisors their branch; tellers and agents their own cases."""
    if can(actor, AUDIT_READ_ALL):
        return None
    if can(actor, AUDIT_READ_BRANCH):
        return AuditEvent.actor_branch == actor.branch_code
    if can(actor, AUDIT_READ_OWN):
        return AuditEvent.case_ref.in_(select(Case.case_no).where(Case.staff_id == actor.staff_id))
    return AuditEvent.seq < 0  # nothing


def build_query(session: Session, actor: Actor, f: Filters):
    query = select(AuditEvent)
    scope = scope_clause(actor)
    if scope is not None:
        query = query.where(scope)
    if f.start:
        query = query.where(AuditEvent.occurred_at >= local_midnight_utc(f.start))
    if f.end:
        query = query.where(AuditEvent.occurred_at < local_midnight_utc(f.end + timedelta(days=1)))
    if f.actor:
        query = query.where(AuditEvent.actor_employee_no == f.actor)
    if f.role:
        query = query.where(AuditEvent.actor_role == f.role)
    if f.branch:
        query = query.where(AuditEvent.actor_branch == f.branch)
    if f.wallet:
        customer_no = session.scalar(select(Customer.customer_no).join(Wallet).where(Wallet.wallet_no == f.wallet))
        query = query.where(AuditEvent.customer_ref == (customer_no or "-"))
    if f.customer:
        query = query.where(AuditEvent.customer_ref == f.customer)
    if f.action:
        if f.action.endswith("."):
            query = query.where(AuditEvent.action.startswith(f.action))
        else:
            query = query.where(AuditEvent.action == f.action)
    if f.outcome:
        query = query.where(AuditEvent.outcome == f.outcome)
    if f.channel:
        query = query.where(AuditEvent.channel == f.channel)
    if f.case:
        query = query.where(AuditEvent.case_ref == f.case)
    if f.receipt:
        query = query.where(AuditEvent.receipt_no == f.receipt)
    return query


def page(session: Session, actor: Actor, f: Filters, *, before: int | None = None, size: int = PAGE_SIZE):
    """One page, newest first; ``before`` is the last sequence number of the previous page (keyset)."""
    query = build_query(session, actor, f)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    rows = session.scalars(query.order_by(AuditEvent.seq.desc()).limit(size + 1)).all()
    return rows[:size], (rows[size - 1].seq if len(rows) > size else None)


def search(session: Session, actor: Actor, f: Filters, *, before: int | None = None, size: int = PAGE_SIZE):
    """A reader's search: one page (:func:`page`), and the search's own audit event."""
    rows, next_before = page(session, actor, f, before=before, size=size)
    audit.record(session, actor, "audit.search", details={"filter": f.as_dict(), "before": before, "shown": len(rows)})
    return rows, next_before


def view(session: Session, actor: Actor, seq: int) -> AuditEvent:
    """One event in the reader's scope, and the view's own audit event; outside the scope (or
    absent) it is a NotFound whose refusal is recorded."""
    row = in_scope(session, actor, seq)
    if row is None:
        raise NotFound(audit={"action": "audit.view", "outcome": "denied", "reason_code": "not_found_or_out_of_scope",
                              "details": {"seq": seq}})
    audit.record(session, actor, "audit.view", details={"seq": seq})
    return row


def stream(session: Session, actor: Actor, f: Filters, *, batch: int = 1000):
    """Every matching event, oldest first, in keyset batches (flat memory for any size)."""
    base = build_query(session, actor, f)
    last = 0
    while True:
        rows = session.execute(base.where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)).scalars().all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def in_scope(session: Session, actor: Actor, seq: int) -> AuditEvent | None:
    query = select(AuditEvent).where(AuditEvent.seq == seq)
    scope = scope_clause(actor)
    if scope is not None:
        query = query.where(scope)
    return session.scalar(query)
