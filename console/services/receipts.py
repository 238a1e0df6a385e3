"""Receipts (业务回单): rendered when a case closes, reprinted as marked copies, checked by QR."""
from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from .. import codes, crypto, policy
from ..identity import mask_name
from ..models.audit import AuditEvent
from ..models.service import Approval, Receipt
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
    "approval.reject": ("主管审批", "Supervisor's decision"),
    "approval.expire": ("主管审批", "Supervisor's decision"),
}
OUTCOMES = {"success": ("成功", "Succeeded"), "failed": ("未通过", "Failed"), "denied": ("被拒绝", "Refused")}
# A decision against a request is what the customer reads in the outcome column.
DECISION_OUTCOMES = {"approval.reject": ("未获批准", "Not approved"), "approval.expire": ("已过期", "Expired")}
CHANNELS = {"counter": ("柜面", "Counter"), "phone": ("电话", "Phone")}

# What happens next, in the customer's words, after an operation that succeeded. The numbers come
# from the policy (``next_steps``); an operation without an entry here is covered by the SMS line.
NEXT_STEPS = {
    "unlock": ("钱包已解锁，您现在即可使用原登录密码登录。",
               "Your wallet is unlocked: sign in with your current password."),
    "reset_password": ("临时登录密码将以短信发送至您的预留手机 {mobile}，{hours} 小时内有效，仅可使用一次；"
                       "首次登录时须设置新密码。本行工作人员不会向您索要该密码。",
                       "A temporary password is on its way by SMS to your registered mobile {mobile}. It is valid "
                       "for {hours} hours and works once; choose a new password when you first sign in. "
                       "Bank staff will never ask you for it."),
    "reset_questions": ("原密保问题已清除，请登录钱包 App 重新设置 {questions} 个密保问题。",
                        "Your security questions were cleared: set {questions} new ones in the wallet app."),
    "reset_2fa": ("原双重认证设备已解绑，请登录钱包 App 绑定新设备。",
                  "Your old two-factor device is unbound: bind your new device in the wallet app."),
    "place_hold": ("钱包已设置保护性止付，暂停使用。解除止付须本人核实身份并经主管审批。",
                   "Your wallet is on a protective hold and cannot be used. Releasing it needs your identity "
                   "checked and a supervisor's approval."),
    "release_hold": ("保护性止付已解除，钱包恢复正常使用。",
                     "The protective hold is released: your wallet works normally again."),
    "release_freeze": ("风险冻结已解除，钱包恢复正常使用。",
                       "The risk freeze is released: your wallet works normally again."),
}
APPROVAL_PENDING = ("“{operation_zh}”须经主管审批，审批通过后即时办理，并以短信通知您。",
                    "{operation_en}: this needs a supervisor's approval; once approved it is done at once and "
                    "you are told by SMS.")
SMS_NOTICE = ("办理结果均以短信通知您的预留手机 {mobile}。",
              "Each operation is confirmed by SMS to your registered mobile {mobile}.")
VERIFICATION_FAILED = ("身份核验未通过，相关业务未办理。如需继续办理，请携带本人有效身份证件到网点柜面。",
                       "Your identity could not be confirmed, so nothing was changed. To go on, bring your "
                       "own valid ID document to a branch counter.")
NOTHING_DONE = ("本次未办理业务。", "No operation was performed this time.")
HOTLINE = ("如非本人办理，或对本回单有疑问，请致电客服热线 {hotline}。",
           "Not you, or any question about this receipt? Call our hotline {hotline}.")


def action_label(action: str) -> tuple[str, str] | None:
    """(Chinese, English) for an audit action the receipt lists, or None when it lists no such action."""
    operation = registry.by_action(action)
    return operation.receipt_label if operation is not None else ACTION_LABELS.get(action)


def mask_wallet_no(wallet_no: str | None) -> str:
    """0031 **** **** 1234: the first and last four digits, enough for the customer to recognise it."""
    if not wallet_no:
        return ""
    if len(wallet_no) <= 8:
        return wallet_no[:2] + "*" * max(len(wallet_no) - 4, 0) + wallet_no[-2:]
    hidden = "*" * (len(wallet_no) - 8)
    middle = " ".join(hidden[i:i + 4] for i in range(0, len(hidden), 4))
    return f"{wallet_no[:4]} {middle} {wallet_no[-4:]}"


def check_code(receipt_no: str) -> str:
    key = crypto.key("BLIND_INDEX_KEY")
    return hmac.new(key, b"receipt-check\x00" + receipt_no.encode(), hashlib.sha256).hexdigest()[:16]


def check_url(receipt_no: str) -> str:
    """The receipt check page at the configured public address (``PUBLIC_BASE_URL``): the QR code."""
    base = policy.current().bank.public_base_url.rstrip("/")
    return f"{base}/receipts/check/{receipt_no}?c={check_code(receipt_no)}"


def _local(value) -> str:
    return format_local(value, "%Y-%m-%d %H:%M:%S")


def _about(session: Session | None, ops: list[dict]) -> dict[int, tuple[str | None, str | None]]:
    """(wallet number, operation asked for) of each listed event, by seq: from its audit event, or
    for an approval from the request it decides (one query for the events)."""
    if session is None or not ops:
        return {}
    found = {}
    for event in session.scalars(select(AuditEvent).where(AuditEvent.seq.in_([op["seq"] for op in ops]))):
        state = json.loads(event.after_state or event.before_state or "{}")
        wallet_no = state.get("wallet_no") if isinstance(state, dict) else None
        if not wallet_no and event.approval_id:
            approval = session.get(Approval, event.approval_id)
            wallet_no = approval.wallet.wallet_no if approval is not None else None
        details = json.loads(event.details or "{}")
        found[event.seq] = (wallet_no, details.get("operation") if isinstance(details, dict) else None)
    return found


def receipt_lines(receipt: Receipt) -> list[dict]:
    """The receipt's operations as the customer reads them, in order: the PDF and the public check
    page list exactly these (a staff member's input error is never one: none is summarised)."""
    summary = json.loads(receipt.summary)
    pinned = summary.get("receipt", {}).get("lines")
    if pinned is not None:
        return pinned
    session = object_session(receipt)
    ops = [op for op in summary["operations"]
           if action_label(op["action"]) is not None and op.get("reason") != codes.INPUT_ERROR]
    about = _about(session, ops)
    lines = []
    for op in ops:
        zh, en = action_label(op["action"])
        wallet_no, asked = about.get(op["seq"], (None, None))
        operation = registry.by_action(op["action"])
        code = operation.code if operation is not None else asked
        if op["action"] == "verification.adopt" and op.get("source_case"):
            source = op["source_case"]
            zh, en = f"沿用受理单 {source} 的身份核验", f"Verification carried over from case {source}"
        if op["action"].startswith("approval."):
            if code in registry.REGISTRY:
                asked_zh, asked_en = registry.get(code).receipt_label
                zh, en = f"{zh}：{asked_zh}", f"{en}: {asked_en}"
        ozh, oen = DECISION_OUTCOMES.get(op["action"]) or OUTCOMES.get(op["outcome"], (op["outcome"], op["outcome"]))
        lines.append({"time": _local(datetime.fromisoformat(op["at"]))[11:16], "label_zh": zh, "label_en": en,
                      "outcome_zh": ozh, "outcome_en": oen, "outcome": op["outcome"], "seq": op["seq"],
                      "action": op["action"], "operation": code, "wallet": mask_wallet_no(wallet_no)})
    return lines


def next_steps(lines: list[dict], *, mobile: str) -> list[tuple[str, str]]:
    """What happens next, Chinese and English, with the policy's numbers."""
    rules = policy.current()
    numbers = {"mobile": mobile, "hours": rules.wallet_passwords.temporary_hours,
               "questions": rules.wallet_passwords.security_questions_required}
    steps: list[tuple[str, str]] = []
    done = [line for line in lines if line["outcome"] == "success"]
    for index, line in enumerate(done):
        later = {(other["action"], other["operation"]) for other in done[index + 1:]}
        if line["action"] == "approval.request" and line["operation"] in registry.REGISTRY:
            if later & {(registry.get(line["operation"]).action, line["operation"]),
                        ("approval.reject", line["operation"]), ("approval.expire", line["operation"])}:
                continue  # decided while the customer was there: its own line says how
            asked_zh, asked_en = registry.get(line["operation"]).receipt_label
            steps.append((APPROVAL_PENDING[0].format(operation_zh=asked_zh),
                          APPROVAL_PENDING[1].format(operation_en=asked_en)))
        elif line["action"].startswith("wallet.") and line["operation"] in NEXT_STEPS:
            zh, en = NEXT_STEPS[line["operation"]]
            steps.append((zh.format(**numbers), en.format(**numbers)))
    wallet_done = any(line["action"].startswith("wallet.") for line in done)
    if wallet_done:
        steps.append((SMS_NOTICE[0].format(**numbers), SMS_NOTICE[1].format(**numbers)))
    elif [line["outcome"] for line in lines if line["action"].startswith("verification.")][-1:] == ["failed"]:
        steps.append(VERIFICATION_FAILED)  # the last attempt failed: nothing could be done
    elif not steps:
        steps.append(NOTHING_DONE)
    return list(dict.fromkeys(steps))  # each sentence once, in order


def presentation(receipt: Receipt) -> dict:
    """Everything the receipt shows, as it stands when the case closes; ``finalise`` pins it in the
    receipt's summary so a reprint renders the same bytes even after a name, a mobile number, the
    hotline or a policy number has changed."""
    case, bank = receipt.case, policy.current().bank
    lines = receipt_lines(receipt)
    mobile = case.customer.mobile_masked or ""
    return {
        "bank": bank.name_zh, "bank_en": bank.name, "hotline": bank.hotline,
        "branch": case.branch.name, "channel": case.channel,
        "customer": mask_name(case.customer.name), "id_number": case.customer.id_number_masked, "mobile": mobile,
        "served_by": {"name": case.staff.name, "employee_no": case.staff.employee_no},
        "lines": lines, "next_steps": next_steps(lines, mobile=mobile),
        "hotline_line": [HOTLINE[0].format(hotline=bank.hotline), HOTLINE[1].format(hotline=bank.hotline)],
        "check_url": check_url(receipt.receipt_no),
    }


def receipt_data(receipt: Receipt) -> dict:
    """What ``console.pdf.receipt`` draws (see its docstring)."""
    case = receipt.case
    shown = json.loads(receipt.summary).get("receipt") or presentation(receipt)
    channel_zh, channel_en = CHANNELS.get(shown["channel"], (shown["channel"], shown["channel"]))
    wallets = list(dict.fromkeys(line["wallet"] for line in shown["lines"] if line["wallet"]))
    return {
        "bank": shown["bank"], "bank_en": shown["bank_en"], "hotline": shown["hotline"],
        "branch": shown["branch"], "receipt_no": receipt.receipt_no, "case_no": case.case_no,
        "customer": shown["customer"], "id_number": shown["id_number"], "wallets": wallets,
        "channel": f"{channel_zh} {channel_en}", "channel_zh": channel_zh, "channel_en": channel_en,
        "served_by": shown["served_by"], "issued_at": _local(receipt.issued_at),
        "operations": shown["lines"], "next_steps": [tuple(step) for step in shown["next_steps"]],
        "hotline_line": tuple(shown["hotline_line"]),
        "last_seq": receipt.last_event_seq or 0, "last_hash": receipt.last_event_hash or "",
        "check_url": shown["check_url"], "counter": shown["channel"] == "counter",
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
    from . import sequencer

    sequencer.catch_up(session)
    last = session.scalar(select(AuditEvent).where(AuditEvent.case_ref == receipt.case.case_no)
                          .order_by(AuditEvent.seq.desc()).limit(1))
    receipt.last_event_seq, receipt.last_event_hash = (last.seq, last.hash) if last else (0, "")
    summary = json.loads(receipt.summary)
    summary["receipt"] = presentation(receipt)
    receipt.summary = json.dumps(summary, ensure_ascii=False, sort_keys=True)
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
    """What the public check page says: does this receipt match the audit trail? It lists what the
    receipt lists (the same lines, times, outcomes and audit sequence numbers, the same last event),
    and nothing personal: no name, no document, no wallet number."""
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
    data = receipt_data(receipt)
    public = ("time", "label_zh", "label_en", "outcome_zh", "outcome_en", "outcome", "seq")
    return {"found": True, "matches": bool(ok), "receipt_no": receipt.receipt_no, "branch": data["branch"],
            "channel_zh": data["channel_zh"], "channel_en": data["channel_en"], "issued_at": data["issued_at"],
            "operations": [{k: line[k] for k in public} for line in data["operations"]],
            "last_seq": data["last_seq"], "last_hash": data["last_hash"]}


def _event_intact(event: AuditEvent) -> bool:
    row = {k: getattr(event, k) for k in audit.CHAINED_FIELDS}
    return audit.event_hash(row) == event.hash
