"""Finding customers, viewing them, and the cases (受理单) their visits and calls open."""
from __future__ import annotations

import json
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import codes
from ..identity import (document_problem, mask_id_number, mask_mobile, mobile_problem, normalise_id_number,
                        normalise_mobile, normalise_wallet_no)
from ..models.customer import Customer, Wallet
from ..models.service import Approval, Case, CaseNote, Receipt
from ..permissions import APPROVAL_DECIDE, CUSTOMER_VIEW, PII_REVEAL, can
from ..timeutil import utcnow
from . import audit, customers, notifications
from .actor import Actor
from .errors import InvalidInput, NotAllowed, NotFound


def refusal(action: str, reason: str, message: str | None = None, **fields) -> NotAllowed:
    fields.pop("reason_code", None)  # the refusal's own reason is what the event records
    return NotAllowed(message or reason, audit={"action": action, "outcome": "denied", "reason_code": reason,
                                                **fields})


def require(actor: Actor, permission: str, action: str, **fields) -> None:
    if not can(actor, permission):
        raise refusal(action, "not_permitted", **fields)


def require_case_actor(actor: Actor, case: Case, action: str, **fields) -> None:
    """Tellers and agents act on their own cases; supervisors on every case of their branch."""
    if case.staff_id is not None and case.staff_id == actor.staff_id:
        return
    if can(actor, APPROVAL_DECIDE) and case.branch_id is not None and case.branch_id == actor.branch_id:
        return
    raise refusal(action, "not_your_case", case_ref=case.case_no, customer_ref=case.customer.customer_no, **fields)


def search(session: Session, actor: Actor, kind: str, value: str, id_type: str = "resident_id") -> list[Customer]:
    """Exact match only, through the blind index; the query is audited masked."""
    require(actor, CUSTOMER_VIEW, "customer.search")
    value = (value or "").strip()
    if kind == "wallet_no":
        value = normalise_wallet_no(value)  # as read out or printed: "0031 0473 1416 6564" or with dashes
        if not value.isdigit() or len(value) > 20:
            raise InvalidInput("wallet_no_format", field="value")
        shown = value
        found = session.scalars(select(Customer).join(Wallet).where(Wallet.wallet_no == value)).all()
    elif kind == "mobile":
        value = normalise_mobile(value)
        if mobile_problem(value):
            raise InvalidInput("mobile_format", field="value")
        shown = mask_mobile(value)
        found = session.scalars(select(Customer).where(Customer.mobile_index == customers.mobile_index(value))).all()
    elif kind == "id_number":
        value = normalise_id_number(value)
        problem = document_problem(id_type, value)
        if problem:
            raise InvalidInput(problem, field="value")
        shown = mask_id_number(value)
        found = session.scalars(select(Customer).where(
            Customer.id_type == id_type, Customer.id_number_index == customers.document_index(id_type, value))).all()
    else:
        raise InvalidInput("search_kind", field="kind")
    audit.record(session, actor, "customer.search",
                 details={"kind": kind, "query": shown, "results": [c.customer_no for c in found]})
    return list(found)


def get_customer(session: Session, actor: Actor, customer_no: str, *, record_view: bool = True) -> Customer:
    require(actor, CUSTOMER_VIEW, "customer.view", customer_ref=customer_no)
    customer = session.scalar(select(Customer).where(Customer.customer_no == customer_no))
    if customer is None:
        raise NotFound("customer")
    if record_view:
        audit.record(session, actor, "customer.view", customer_ref=customer.customer_no)
    return customer


def reveal(session: Session, actor: Actor, customer: Customer, field: str, reason: str) -> str:
    """A supervisor sees one masked field in full, with a reason; the value is never audited."""
    if not can(actor, PII_REVEAL):
        raise refusal("customer.reveal", "not_permitted", customer_ref=customer.customer_no,
                      details={"field": field})
    reason = (reason or "").strip()
    if len(reason) < 4:
        raise InvalidInput("reason_required", field="reason")
    if field == "mobile":
        value = notifications.customer_mobile(customer)
    elif field == "id_number":
        value = customers.customer_id_number(customer)
    else:
        raise InvalidInput("field", field="field")
    audit.record(session, actor, "customer.reveal", customer_ref=customer.customer_no,
                 details={"field": field, "reason": reason[:200]})
    return value


def _new_case_no(session: Session) -> str:
    today = utcnow().strftime("%Y%m%d")
    while True:
        candidate = f"K{today}{secrets.randbelow(10**6):06d}"
        if not session.scalar(select(Case.id).where(Case.case_no == candidate)):
            return candidate


def open_case(session: Session, actor: Actor, customer: Customer) -> Case:
    require(actor, CUSTOMER_VIEW, "case.open", customer_ref=customer.customer_no)
    channel = "phone" if actor.channel == "phone" else "counter"
    case = Case(case_no=_new_case_no(session), branch_id=actor.branch_id, staff_id=actor.staff_id,
                customer_id=customer.id, channel=channel, status="open", opened_at=utcnow())
    session.add(case)
    session.flush()
    audit.record(session, actor, "case.open", customer_ref=customer.customer_no, case_ref=case.case_no,
                 channel=channel, after={"case_no": case.case_no, "channel": channel})
    return case


def get_case(session: Session, actor: Actor, case_no: str) -> Case:
    """Another branch's case is "not found" (and the attempt is audited by the caller)."""
    case = session.scalar(select(Case).where(Case.case_no == case_no))
    if case is None or case.branch_id != actor.branch_id or not can(actor, CUSTOMER_VIEW):
        raise NotFound("case", audit={"action": "case.view", "outcome": "denied", "reason_code": "not_found_or_other_branch",
                                      "case_ref": case_no[:24]})
    return case


def add_note(session: Session, actor: Actor, case: Case, text: str) -> CaseNote:
    text = (text or "").strip()
    if not text or len(text) > 2000:
        raise InvalidInput("note_length", field="note")
    require(actor, CUSTOMER_VIEW, "case.note", case_ref=case.case_no, customer_ref=case.customer.customer_no)
    require_case_actor(actor, case, "case.note")
    _require_open(case, "case.note")
    note = CaseNote(case_id=case.id, staff_id=actor.staff_id, at=utcnow(), text=text)
    session.add(note)
    audit.record(session, actor, "case.note", customer_ref=case.customer.customer_no, case_ref=case.case_no,
                 channel=case.channel)
    return note


def _require_open(case: Case, action: str) -> None:
    if case.status != "open":
        raise refusal(action, "case_closed", case_ref=case.case_no, customer_ref=case.customer.customer_no)


def case_events(session: Session, case: Case):
    from ..models.audit import AuditEvent

    return session.scalars(select(AuditEvent).where(AuditEvent.case_ref == case.case_no)
                           .order_by(AuditEvent.seq)).all()


def on_receipt(event) -> bool:
    """Whether the receipt lists a case event: the wallet operations, verifications (an adopted one
    included) and approvals, but never a staff member's own input error (``codes.INPUT_ERROR``):
    a slip is not something that happened to the customer."""
    return (event.action.startswith(("wallet.", "verification.", "approval."))
            and event.reason_code != codes.INPUT_ERROR)


def receipt_line(event) -> dict:
    """A receipt's record of one event; an adopted verification names the case it came from."""
    line = {"seq": event.seq, "action": event.action, "outcome": event.outcome, "at": event.occurred_at.isoformat(),
            "reason": event.reason_code}
    if event.action == "verification.adopt":
        details = json.loads(event.details or "{}")
        line["source_case"] = details.get("source_case")
        line["valid_until"] = details.get("valid_until")
    return line


def close_case(session: Session, actor: Actor, case: Case) -> Receipt:
    """Close the case and issue its receipt record: each operation with time, outcome, audit seq."""
    _require_open(case, "case.close")
    if case.staff_id != actor.staff_id and not can(actor, APPROVAL_DECIDE):
        raise refusal("case.close", "not_case_owner", case_ref=case.case_no)
    pending = session.scalar(select(Approval.id).where(Approval.case_id == case.id, Approval.status == "pending"))
    operations = [receipt_line(e) for e in case_events(session, case) if on_receipt(e)]
    now = utcnow()
    receipt = Receipt(receipt_no=f"R{case.case_no[1:]}", case_id=case.id, branch_id=case.branch_id,
                      issued_by=actor.staff_id, issued_at=now,
                      summary=json.dumps({"operations": operations, "pending_approval": bool(pending)},
                                         ensure_ascii=False, sort_keys=True))
    case.status, case.closed_at = "closed", now
    session.add(receipt)
    session.flush()
    audit.record(session, actor, "case.close", customer_ref=case.customer.customer_no, case_ref=case.case_no,
                 receipt_no=receipt.receipt_no, channel=case.channel,
                 details={"operations": len(operations), "pending_approval": bool(pending)})
    return receipt
