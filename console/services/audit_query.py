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
# What a page of results shows (templates/auditing/events.html): read as plain rows, not ORM
# objects, so the search's own commit cannot expire them (50 reloads, one per row) and the states,
# details and hashes of 50 events are not fetched for a list that shows none of them.
# Criteria are written on the table's columns (``_E``), so a page of plain rows is a Core SELECT,
# read without the ORM's per-row work; a SELECT of whole events (exports, one event) is ORM as before.
_E = AuditEvent.__table__.c
LIST_COLUMNS = tuple(_E[name] for name in (
    "seq", "occurred_at", "actor_type", "actor_employee_no", "actor_role", "actor_branch", "channel", "action",
    "outcome", "reason_code", "customer_ref", "case_ref"))


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
        return _E.actor_branch == actor.branch_code
    if can(actor, AUDIT_READ_OWN):
        cases = Case.__table__.c
        return _E.case_ref.in_(select(cases.case_no).where(cases.staff_id == actor.staff_id))
    return _E.seq < 0  # nothing


def build_query(session: Session, actor: Actor, f: Filters, *, columns=None):
    """The reader's scope and ``f`` as a SELECT of whole events (or of ``columns``)."""
    query = select(*columns) if columns else select(AuditEvent)
    scope = scope_clause(actor)
    if scope is not None:
        query = query.where(scope)
    if f.start:
        query = query.where(_E.occurred_at >= local_midnight_utc(f.start))
    if f.end:
        query = query.where(_E.occurred_at < local_midnight_utc(f.end + timedelta(days=1)))
    if f.actor:
        query = query.where(_E.actor_employee_no == f.actor)
    if f.role:
        query = query.where(_E.actor_role == f.role)
    if f.branch:
        query = query.where(_E.actor_branch == f.branch)
    if f.wallet:
        customer_no = session.scalar(select(Customer.customer_no).join(Wallet).where(Wallet.wallet_no == f.wallet))
        query = query.where(_E.customer_ref == (customer_no or "-"))
    if f.customer:
        query = query.where(_E.customer_ref == f.customer)
    if f.action:
        if f.action.endswith("."):
            query = query.where(_E.action.startswith(f.action))
        else:
            query = query.where(_E.action == f.action)
    if f.outcome:
        query = query.where(_E.outcome == f.outcome)
    if f.channel:
        query = query.where(_E.channel == f.channel)
    if f.case:
        query = query.where(_E.case_ref == f.case)
    if f.receipt:
        query = query.where(_E.receipt_no == f.receipt)
    return query


def page(session: Session, actor: Actor, f: Filters, *, before: int | None = None, size: int = PAGE_SIZE):
    """One page, newest first, as rows of :data:`LIST_COLUMNS`; ``before`` is the last sequence number
    of the previous page (keyset)."""
    query = build_query(session, actor, f, columns=LIST_COLUMNS)
    if before is not None:
        query = query.where(_E.seq < before)
    rows = session.execute(query.order_by(_E.seq.desc()).limit(size + 1)).all()
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
