"""Receipts (业务回单): rendered when a case closes, reprinted as marked copies, checked by QR."""
from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import codes, crypto, policy
from ..identity import mask_name
from ..models.audit import AuditEvent
from ..models.service import Receipt
from ..pdf.receipt import build_receipt_pdf
from ..permissions import APPROVAL_DECIDE, AUDIT_READ_ALL, CUSTOMER_VIEW, can
from ..timeutil import format_local
from . import audit
from .actor import Actor
from .cases import refusal
from .errors import NotFound
from .operations import registry

# Both languages go on the receipt, whatever the staff member's UI language. Wallet operations
# declare their own (``operations.registry``); see ``action_label``.
ACTION_LABELS = {
    "verification.counter": ("柜面证件核验", "ID document verification"),
    "verification.phone": ("电话身份核验", "Phone verification"),
    "verification.adopt": ("沿用先前受理单的身份核验", "Verification carried over from an earlier case"),
    "approval.request": ("提交主管审批", "Sent for supervisor approval"),
}
OUTCOMES = {"success": ("成功", "Succeeded"), "failed": ("未通过", "Failed"), "denied": ("被拒绝", "Refused")}


def action_label(action: str) -> tuple[str, str] | None:
    """(Chinese, English) for an audit action the receipt lists, or None when it lists no such action."""
    operation = registry.by_action(action)
    return operation.receipt_label if operation is not None else ACTION_LABELS.get(action)


def check_code(receipt_no: str) -> str:
    key = crypto.key("BLIND_INDEX_KEY")
    return hmac.new(key, b"receipt-check\x00" + receipt_no.encode(), hashlib.sha256).hexdigest()[:16]


def check_url(receipt_no: str) -> str:
    base = policy.current().bank.public_base_url.rstrip("/")
    return f"{base}/receipts/check/{receipt_no}?c={check_code(receipt_no)}"


def _local(value) -> str:
    return format_local(value, "%Y-%m-%d %H:%M:%S")


def receipt_data(receipt: Receipt) -> dict:
    case = receipt.case
    summary = json.loads(receipt.summary)
    operations = []
    for op in summary["operations"]:
        label = action_label(op["action"])
        if label is None or op.get("reason") == codes.INPUT_ERROR:
            continue  # (a staff member's input error is never on a receipt; none is summarised)
        zh, en = label
        if op["action"] == "verification.adopt" and op.get("source_case"):
            source = op["source_case"]
            zh, en = f"沿用受理单 {source} 的身份核验", f"Verification carried over from case {source}"
        ozh, oen = OUTCOMES.get(op["outcome"], (op["outcome"], op["outcome"]))
        operations.append({"time": _local(datetime.fromisoformat(op["at"]))[11:], "label_zh": zh, "label_en": en,
                           "outcome_zh": ozh, "outcome_en": oen, "seq": op["seq"]})
    return {
        "bank": policy.current().bank.name_zh, "branch": case.branch.name, "receipt_no": receipt.receipt_no,
        "case_no": case.case_no, "customer": mask_name(case.customer.name), "id_number": case.customer.id_number_masked,
        "channel": "柜面 Counter" if case.channel == "counter" else "电话 Phone",
        "issued_at": _local(receipt.issued_at), "operations": operations,
        "last_seq": receipt.last_event_seq or 0, "last_hash": receipt.last_event_hash or "",
        "check_url": check_url(receipt.receipt_no), "counter": case.channel == "counter",
    }


def render(receipt: Receipt, *, copy: bool = False) -> bytes:
    return build_receipt_pdf(receipt_data(receipt), copy=copy, font_path=policy.current().review.pdf_font_path)


def close_and_issue(session: Session, actor: Actor, case) -> Receipt:
    """Close a case and issue its receipt, in one transaction."""
    from .cases import close_case

    receipt = close_case(session, actor, case)
    finalise(session, actor, receipt)
    return receipt


def finalise(session: Session, actor: Actor, receipt: Receipt) -> bytes:
    """At closing: pin the last audit event of the case, render, and record the PDF's SHA-256."""
    last = session.scalar(select(AuditEvent).where(AuditEvent.case_ref == receipt.case.case_no)
                          .order_by(AuditEvent.seq.desc()).limit(1))
    receipt.last_event_seq, receipt.last_event_hash = (last.seq, last.hash) if last else (0, "")
    pdf = render(receipt)
    receipt.pdf_sha256 = hashlib.sha256(pdf).hexdigest()
    audit.record(session, actor, "receipt.issue", case_ref=receipt.case.case_no, receipt_no=receipt.receipt_no,
                 customer_ref=receipt.case.customer.customer_no,
                 details={"pdf_sha256": receipt.pdf_sha256, "last_event_seq": receipt.last_event_seq})
    return pdf


def get_receipt(session: Session, actor: Actor, receipt_no: str) -> Receipt:
    receipt = session.scalar(select(Receipt).where(Receipt.receipt_no == receipt_no))
    if receipt is None or (receipt.branch_id != actor.branch_id and not can(actor, AUDIT_READ_ALL)):
        raise NotFound("receipt", audit={"action": "receipt.view", "outcome": "denied",
                                         "reason_code": "not_found_or_other_branch", "receipt_no": receipt_no[:24]})
    return receipt


def may_print(actor: Actor, receipt: Receipt) -> bool:
    """Tellers and agents print their own receipts (issued by them, or of a case they opened);
    supervisors their branch's; auditors any."""
    if can(actor, AUDIT_READ_ALL):
        return True
    if actor.staff_id is not None and actor.staff_id in (receipt.issued_by, receipt.case.staff_id):
        return True
    return can(actor, APPROVAL_DECIDE) and receipt.branch_id is not None and receipt.branch_id == actor.branch_id


def print_receipt(session: Session, actor: Actor, receipt: Receipt) -> tuple[bytes, bool]:
    """The first print is the original; every later one is marked as a copy. Both are audited."""
    if not can(actor, CUSTOMER_VIEW) and not can(actor, AUDIT_READ_ALL):
        raise refusal("receipt.print", "not_permitted", receipt_no=receipt.receipt_no)
    if not may_print(actor, receipt):
        raise refusal("receipt.print", "not_your_receipt", receipt_no=receipt.receipt_no,
                      case_ref=receipt.case.case_no, customer_ref=receipt.case.customer.customer_no)
    copy = (receipt.prints or 0) > 0
    pdf = render(receipt, copy=copy)
    receipt.prints = (receipt.prints or 0) + 1
    audit.record(session, actor, "receipt.reprint" if copy else "receipt.print", receipt_no=receipt.receipt_no,
                 case_ref=receipt.case.case_no, customer_ref=receipt.case.customer.customer_no,
                 details={"pdf_sha256": hashlib.sha256(pdf).hexdigest(), "copy": copy, "print_no": receipt.prints})
    return pdf, copy


def check(session: Session, receipt_no: str, code: str) -> dict:
    """What the public check page says: does this receipt match the audit trail?"""
    receipt = session.scalar(select(Receipt).where(Receipt.receipt_no == receipt_no))
    if receipt is None or not hmac.compare_digest(check_code(receipt_no), (code or "")[:32]):
        return {"found": False}
    issue = session.scalar(select(AuditEvent).where(AuditEvent.action == "receipt.issue",
                                                    AuditEvent.receipt_no == receipt_no).limit(1))
    last = session.get(AuditEvent, receipt.last_event_seq) if receipt.last_event_seq else None
    ok = issue is not None and _event_intact(issue)
    ok = ok and json.loads(issue.details or "{}").get("pdf_sha256") == receipt.pdf_sha256
    ok = ok and (receipt.last_event_seq == 0 or (last is not None and last.hash == receipt.last_event_hash
                                                   and _event_intact(last)))
    return {"found": True, "matches": bool(ok), "receipt_no": receipt.receipt_no, "branch": receipt.case.branch.name,
            "issued_at": _local(receipt.issued_at), "operations": len(json.loads(receipt.summary)["operations"]),
            "seq": issue.seq if issue else None}


def _event_intact(event: AuditEvent) -> bool:
    row = {k: getattr(event, k) for k in audit.CHAINED_FIELDS}
    return audit.event_hash(event.prev_hash, row) == event.hash
