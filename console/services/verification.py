"""Proving who the customer is (DESIGN.md section 3; PCI DSS 8.3.3: identity first).

Counter (strong): the document typed from the card must match the record through the blind
index, pass the GB 11643 check digit and birth-date checks, be unexpired, match in the
citizen-ID registry, and the teller attests the photo. Phone (medium): a 6-digit code sent
to the registered mobile (single use; by default valid 5 minutes, with 3 tries that a new code
does not reset: the policy's ``verification`` rules) plus two security answers. Security
answers alone never verify anyone.
"""
from __future__ import annotations

import json
import secrets
from datetime import timedelta

from limits import parse as parse_limit
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import codes, policy
from ..identity import document_problem, mask_id_number, normalise_id_number
from ..models.customer import Customer
from ..models.notification import Notification
from ..models.service import Case, Verification
from ..passwords import hash_password, verify_password
from ..permissions import VERIFY_COUNTER, VERIFY_PHONE, can
from ..timeutil import utcnow
from . import audit, customers, notifications, wallet_credentials
from .actor import Actor
from .cases import refusal, require_case_actor
from .errors import Forbidden, InvalidInput, NotAllowed


def _rules():
    return policy.current().verification


def failed_recently(session: Session, customer_id: int) -> int:
    since = utcnow() - timedelta(hours=_rules().flag_hours)
    return session.scalar(select(func.count(Verification.id)).where(
        Verification.customer_id == customer_id, Verification.status == "failed",
        Verification.created_at > since)) or 0


def is_flagged(session: Session, customer_id: int) -> bool:
    """Repeated failed verifications (by default three within 24 hours): phone help is refused, counter only."""
    return failed_recently(session, customer_id) >= _rules().failures_to_flag


def _start(session, actor, case, *, channel, method, strength) -> Verification:
    row = Verification(case_id=case.id, customer_id=case.customer_id, staff_id=actor.staff_id, channel=channel,
                       method=method, strength=strength, status="pending", created_at=utcnow(), code_tries=0,
                       codes_sent=0)
    session.add(row)
    session.flush()
    return row


def _finish(session, actor, case, row: Verification, passed: bool, reason: str | None, evidence: dict) -> Verification:
    now = utcnow()
    row.status = "passed" if passed else "failed"
    row.failure_reason = reason
    row.completed_at = now
    row.evidence = json.dumps(evidence, ensure_ascii=False, sort_keys=True)
    if passed:
        row.expires_at = now + timedelta(minutes=_rules().valid_minutes)
    audit.record(session, actor, f"verification.{row.channel}", outcome="success" if passed else "failed",
                 reason_code=reason, customer_ref=case.customer.customer_no, case_ref=case.case_no,
                 verification_id=row.id, channel=row.channel,
                 details={"method": row.method, "strength": row.strength, **evidence})
    return row


def verify_at_counter(session: Session, actor: Actor, case: Case, *, id_type: str, id_number: str,
                      photo_matches: bool, registry) -> Verification:
    """Strong verification with the ID document the customer hands over."""
    if not can(actor, VERIFY_COUNTER):
        raise refusal("verification.counter", "not_permitted", case_ref=case.case_no,
                      customer_ref=case.customer.customer_no)
    require_case_actor(actor, case, "verification.counter")
    if case.status != "open" or case.channel != "counter":
        raise refusal("verification.counter", "wrong_case", case_ref=case.case_no,
                      customer_ref=case.customer.customer_no)
    number = normalise_id_number(id_number)
    customer = case.customer
    row = _start(session, actor, case, channel=codes.COUNTER, method="id_document", strength=codes.STRONG)
    evidence = {"document_type": id_type, "document": mask_id_number(number), "photo_attested": bool(photo_matches)}
    problem = document_problem(id_type, number)
    if problem:
        return _finish(session, actor, case, row, False, problem, evidence)
    if id_type != customer.id_type or customers.document_index(id_type, number) != customer.id_number_index:
        return _finish(session, actor, case, row, False, "document_mismatch", evidence)
    if customer.id_expires_on and customer.id_expires_on < utcnow().date():
        return _finish(session, actor, case, row, False, "document_expired", evidence)
    result = registry.check(id_type, number, customer.name)
    evidence["registry"] = f"{registry.name}:{result}"
    if result != "match":
        return _finish(session, actor, case, row, False, f"registry_{result}", evidence)
    if not photo_matches:
        return _finish(session, actor, case, row, False, "photo_not_attested", evidence)
    return _finish(session, actor, case, row, True, None, evidence)


def _choose_questions(wallet) -> list[str]:
    codes = [q.question_code for q in wallet.security_questions]
    rng = secrets.SystemRandom()
    return rng.sample(codes, min(2, len(codes)))


def require_phone_verifier(session: Session, actor: Actor, case: Case) -> None:
    """Phone verification needs its permission, and the actor's own case (a supervisor: the
    branch's). Every phone step checks this first, so a teller is refused, not sent elsewhere."""
    try:
        if not can(actor, VERIFY_PHONE):
            raise refusal("verification.phone", "not_permitted", case_ref=case.case_no,
                          customer_ref=case.customer.customer_no)
        require_case_actor(actor, case, "verification.phone")
    except NotAllowed as exc:
        raise Forbidden(exc.message, audit=exc.audit) from None


def start_phone_verification(session: Session, actor: Actor, case: Case, wallet) -> Verification:
    """Send a code to the registered mobile and pick two of the customer's questions."""
    customer = case.customer
    fields = {"case_ref": case.case_no, "customer_ref": customer.customer_no}
    require_phone_verifier(session, actor, case)
    if case.status != "open" or case.channel != "phone":
        raise refusal("verification.phone", "wrong_case", **fields)
    if is_flagged(session, customer.id):
        raise refusal("verification.phone", "customer_flagged_counter_only", **fields)
    if len(wallet.security_questions) < 2:
        raise refusal("verification.phone", "no_security_questions", **fields)
    row = _start(session, actor, case, channel=codes.PHONE, method="sms_code_and_questions",
                 strength=codes.MEDIUM)
    row.question_codes = ",".join(_choose_questions(wallet))
    _send_code(session, actor, case, row)
    return row


def resend_code(session: Session, actor: Actor, case: Case, row: Verification) -> None:
    """A new code replaces the old one; the tries already used still count."""
    require_phone_verifier(session, actor, case)
    if row.status != "pending" or row.staff_id != actor.staff_id or row.case_id != case.id:
        raise refusal("verification.phone", "verification_not_pending", case_ref=case.case_no)
    _send_code(session, actor, case, row)


def codes_sent_to_customer(session: Session, customer_id: int, since) -> int:
    """Verification codes queued for one customer since ``since``, by any staff member and channel
    (the outbox is the record of what was sent)."""
    return session.scalar(select(func.count(Notification.id)).where(
        Notification.customer_id == customer_id, Notification.kind == "verification_code",
        Notification.created_at > since)) or 0


def _check_customer_cap(session: Session, case: Case) -> None:
    """At most the policy's ``codes_per_customer`` (LIMIT_OTP_PER_CUSTOMER) codes to one customer's mobile, whoever sends them and
    however (console, API): counted in the outbox, under the customer's row lock so concurrent
    senders (PostgreSQL) take turns; SQLite has one writer at a time anyway."""
    limit = parse_limit(_rules().codes_per_customer)
    session.execute(select(Customer.id).where(Customer.id == case.customer_id).with_for_update())
    sent = codes_sent_to_customer(session, case.customer_id, utcnow() - timedelta(seconds=limit.get_expiry()))
    if sent >= limit.amount:
        raise refusal("verification.code_sent", "customer_sms_cap", case_ref=case.case_no,
                      customer_ref=case.customer.customer_no, channel="phone",
                      details={"codes_sent_in_window": sent, "limit": str(_rules().codes_per_customer)})


def _send_code(session, actor, case, row: Verification) -> None:
    _check_customer_cap(session, case)
    code = f"{secrets.randbelow(10**6):06d}"
    row.code_hash = hash_password(code)
    row.code_expires_at = utcnow() + timedelta(minutes=_rules().code_valid_minutes)
    row.codes_sent += 1
    notifications.queue_sms(session, case.customer, "verification_code", secret=True, code=code,
                            minutes=_rules().code_valid_minutes)
    audit.record(session, actor, "verification.code_sent", customer_ref=case.customer.customer_no,
                 case_ref=case.case_no, verification_id=row.id, channel="phone",
                 details={"codes_sent": row.codes_sent, "to": case.customer.mobile_masked})


def check_phone_verification(session: Session, actor: Actor, case: Case, row: Verification, wallet, *,
                             code: str, answers: dict[str, str]) -> Verification:
    """Check the code the customer reads out and the two answers."""
    require_phone_verifier(session, actor, case)
    if row.status != "pending" or row.staff_id != actor.staff_id or row.case_id != case.id:
        raise refusal("verification.phone", "verification_not_pending", case_ref=case.case_no)
    code = (code or "").strip()
    if not (len(code) == 6 and code.isdigit()):
        raise InvalidInput("code_format", field="code")
    evidence = {"codes_sent": row.codes_sent, "questions": row.question_codes.split(",")}
    now = utcnow()
    row.code_tries += 1
    evidence["code_tries"] = row.code_tries
    if row.code_expires_at is None or row.code_expires_at <= now:
        return _finish(session, actor, case, row, False, "code_expired", evidence)
    if not verify_password(row.code_hash, code):
        if row.code_tries >= _rules().code_tries:
            return _finish(session, actor, case, row, False, "code_wrong_no_tries_left", evidence)
        audit.record(session, actor, "verification.phone", outcome="failed", reason_code="code_wrong",
                     customer_ref=case.customer.customer_no, case_ref=case.case_no, verification_id=row.id,
                     channel="phone", details={"code_tries": row.code_tries})
        return row
    row.code_hash = None  # single use
    questions = {q.question_code: q for q in wallet.security_questions}
    wrong = [c for c in row.question_codes.split(",")
             if c not in questions or not wallet_credentials.check_security_answer(questions[c], answers.get(c, ""))]
    if wrong:
        evidence["wrong_answers"] = len(wrong)
        return _finish(session, actor, case, row, False, "security_answers_wrong", evidence)
    return _finish(session, actor, case, row, True, None, evidence)


def valid_verification(session: Session, actor: Actor, case: Case) -> Verification | None:
    """The newest passed, unexpired verification of this customer by this staff member."""
    return session.scalar(select(Verification).where(
        Verification.customer_id == case.customer_id, Verification.staff_id == actor.staff_id,
        Verification.status == "passed", Verification.expires_at > utcnow(),
    ).order_by(Verification.id.desc()).limit(1))


def pending_phone_verification(session: Session, actor: Actor, case: Case) -> Verification | None:
    return session.scalar(select(Verification).where(
        Verification.case_id == case.id, Verification.staff_id == actor.staff_id,
        Verification.status == "pending", Verification.channel == "phone").order_by(Verification.id.desc()).limit(1))


def registry_entry_for(session: Session, id_type: str, id_number: str, name: str, status: str = "valid"):
    """Seed the local registry (demo data and tests)."""
    from ..models.service import RegistryEntry

    entry = RegistryEntry(id_number_index=customers.document_index(id_type, normalise_id_number(id_number)),
                          name=name, status=status)
    session.add(entry)
    return entry

