"""Proving who the customer is (DESIGN.md section 3; PCI DSS 8.3.3: identity first).

Counter (strong): the document typed from the card must match the record through the blind
index, pass the GB 11643 check digit and birth-date checks, be unexpired, match in the
citizen-ID registry, and the teller attests the photo. Phone (medium): a 6-digit code sent
to the registered mobile (single use; by default valid 5 minutes, with 3 tries that a new code
does not reset: the policy's ``verification`` rules) plus two security answers. Security
answers alone never verify anyone.

Verification measures the customer, not the operator. What the staff member got wrong (a
number of the wrong format or with a wrong check digit or birth date, the photo not attested, an
expired document, a code of the wrong format, a question left unanswered) is found *before* the
attempt counts: it is refused as :class:`InvalidInput` (a field and a code,
``codes.VERIFICATION_SLIPS``), audited on its own as an input error, and leaves no failed
verification, nothing in the 24-hour failure count and nothing on the receipt. Only a well-formed
document that does not match the record or the registry, or a wrong code or answers given by the
caller, is a customer failure (``codes.CUSTOMER_FAILURES``).

A verification belongs to one case. A new case verifies again, or adopts a still-valid
verification of the same staff member for the same customer from an earlier case, visibly: a
verification of the new case that carries the source's strength and expiry (never extended) and
names the source, audited as ``verification.adopt`` on the new case.
"""
from __future__ import annotations

import json
import math
import secrets
from datetime import timedelta

from limits import parse as parse_limit
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import codes, faults, policy
from ..identity import document_problem, mask_id_number, normalise_answer, normalise_id_number
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
    """The customer's failures of the last ``flag_hours`` hours that say something about the
    customer: failed verifications at the desk (``codes.CUSTOMER_FAILURES``: a staff member's slip is
    never one, nor a registry outage) and failed self-service recoveries (``codes.RECOVERY_FAILURES``)."""
    from . import recovery

    since = utcnow() - timedelta(hours=_rules().flag_hours)
    desk = session.scalar(select(func.count(Verification.id)).where(
        Verification.customer_id == customer_id, Verification.status == "failed",
        Verification.failure_reason.in_(codes.CUSTOMER_FAILURES), Verification.created_at > since)) or 0
    return desk + recovery.failed_recently(session, customer_id, since)


def is_flagged(session: Session, customer_id: int) -> bool:
    """Repeated failures (by default three within 24 hours, desk and self-service together): phone
    help and self-service recovery are refused, counter only."""
    return flagged_by(failed_recently(session, customer_id))


def note_customer_failure(session: Session, customer: Customer, *, source: str) -> bool:
    """After a failure that counts against the customer (in this transaction): the failure that
    reaches the limit flags the customer for the counter, recorded and told by SMS. True then."""
    # The customer's row first (PostgreSQL): concurrent failures take turns, so the one that reaches
    # the limit sees it, and records it, exactly once.
    session.execute(select(Customer.id).where(Customer.id == customer.id).with_for_update())
    failures = failed_recently(session, customer.id)
    if failures != _rules().failures_to_flag:
        return False
    audit.record(session, Actor.system("risk"), "customer.flagged_counter_only", reason_code="repeated_failures",
                 customer_ref=customer.customer_no,
                 details={"failures": failures, "hours": _rules().flag_hours, "last_failure": source})
    notifications.queue_sms(session, customer, "counter_only")
    return True


def flagged_by(failures: int) -> bool:
    """Whether this many recent failed verifications send the customer to the counter."""
    return failures >= _rules().failures_to_flag


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
    if not passed and reason in codes.CUSTOMER_FAILURES:
        session.flush()
        note_customer_failure(session, case.customer, source=f"verification.{row.channel}")
    return row


def _slip(action: str, case: Case, problems: dict[str, str], details: dict | None = None,
          verification_id: int | None = None) -> InvalidInput:
    """The staff member's slip: invalid input (its first field and code; ``problems`` has every
    field's), audited on its own as an input error of ``action`` once the boundary has rolled back;
    no verification is stored or changed, and nothing counts against the customer."""
    field, code = next(iter(problems.items()))
    return InvalidInput(code, field=field, problems=dict(problems), audit={
        "action": action, "outcome": codes.DENIED, "reason_code": codes.INPUT_ERROR,
        "case_ref": case.case_no, "customer_ref": case.customer.customer_no, "channel": case.channel,
        "verification_id": verification_id,
        "details": {"code": code, "field": field, "problems": dict(problems), **(details or {})}})


def verify_at_counter(session: Session, actor: Actor, case: Case, *, id_type: str, id_number: str,
                      photo_matches: bool, registry) -> Verification:
    """Strong verification with the ID document the customer hands over.

    The teller's slips (the number's format, check digit or birth date; the photo not attested;
    the customer's own number under another document type; an expired document) raise :class:`InvalidInput` before anything counts. A well-formed
    document that does not match the record or the registry is a failed verification."""
    if not can(actor, VERIFY_COUNTER):
        raise refusal("verification.counter", "not_permitted", case_ref=case.case_no,
                      customer_ref=case.customer.customer_no)
    require_case_actor(actor, case, "verification.counter")
    if case.status != "open" or case.channel != "counter":
        raise refusal("verification.counter", "wrong_case", case_ref=case.case_no,
                      customer_ref=case.customer.customer_no)
    number = normalise_id_number(id_number)
    customer = case.customer
    evidence = {"document_type": id_type, "document": mask_id_number(number), "photo_attested": bool(photo_matches)}
    problems = {}
    problem = document_problem(id_type, number)
    if problem:
        problems["id_number"] = problem
    if not photo_matches:
        problems["photo_matches"] = "photo_not_attested"
    if problems:
        raise _slip("verification.counter", case, problems, evidence)
    if id_type != customer.id_type and _is_customers_document(customer, number):
        # The customer's own number with the wrong document type chosen: the teller's slip.
        raise _slip("verification.counter", case, {"id_type": "document_type_mismatch"}, evidence)
    if id_type != customer.id_type or customers.document_index(id_type, number) != customer.id_number_index:
        return _finish(session, actor, case, _counter_row(session, actor, case), False, "document_mismatch", evidence)
    if customer.id_expires_on and customer.id_expires_on < utcnow().date():
        raise _slip("verification.counter", case, {"id_number": "document_expired"}, evidence)
    row = _counter_row(session, actor, case)
    result = registry.check(id_type, number, customer.name)
    evidence["registry"] = f"{registry.name}:{result}"
    if result != "match":
        return _finish(session, actor, case, row, False, f"registry_{result}", evidence)
    return _finish(session, actor, case, row, True, None, evidence)


def _is_customers_document(customer: Customer, number: str) -> bool:
    return (document_problem(customer.id_type, number) is None
            and customers.document_index(customer.id_type, number) == customer.id_number_index)


def _counter_row(session, actor, case) -> Verification:
    return _start(session, actor, case, channel=codes.COUNTER, method="id_document", strength=codes.STRONG)


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


CODE_KINDS = ("verification_code", "recovery_code")


def codes_sent_to_customer(session: Session, customer_id: int, since) -> int:
    """Codes queued for one customer since ``since``, by any staff member and channel, self-service
    recovery included (the outbox is the record of what was sent)."""
    return _codes_since(session, customer_id, since)[0]


def _codes_since(session: Session, customer_id: int, since):
    """(how many codes were queued for the customer since ``since``, when the oldest of them was)."""
    count, oldest = session.execute(select(func.count(Notification.id), func.min(Notification.created_at)).where(
        Notification.customer_id == customer_id, Notification.kind.in_(CODE_KINDS),
        Notification.created_at > since)).one()
    return count or 0, oldest


def sms_cap():
    """The per-customer cap on codes (``LIMIT_OTP_PER_CUSTOMER``), as a ``limits`` rate."""
    return parse_limit(_rules().codes_per_customer)


def _check_customer_cap(session: Session, case: Case) -> None:
    """At most the policy's ``codes_per_customer`` (LIMIT_OTP_PER_CUSTOMER) codes to one customer's mobile, whoever sends them and
    however (console, API): counted in the outbox, under the customer's row lock so concurrent
    senders (PostgreSQL) take turns; SQLite has one writer at a time anyway."""
    limit = sms_cap()
    session.execute(select(Customer.id).where(Customer.id == case.customer_id).with_for_update())
    now = utcnow()
    since = now - timedelta(seconds=limit.get_expiry())
    sent, oldest = _codes_since(session, case.customer_id, since)
    if sent >= limit.amount:
        refused = refusal("verification.code_sent", "customer_sms_cap", case_ref=case.case_no,
                          customer_ref=case.customer.customer_no, channel="phone",
                          details={"codes_sent_in_window": sent, "limit": str(_rules().codes_per_customer)})
        # When the oldest code in the window leaves it (a slot is free then, unless the cap was lowered).
        waited = (now - oldest).total_seconds() if oldest is not None else 0
        refused.details["retry_after_seconds"] = max(1, math.ceil(limit.get_expiry() - waited))
        raise refused


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
    """Check the code the customer reads out and the two answers. The agent's slips (a code that is
    not 6 digits; the right code with a question left unanswered) raise :class:`InvalidInput`
    before the try counts; a wrong code, or wrong answers, given by the caller is a failure."""
    require_phone_verifier(session, actor, case)
    if row.status != "pending" or row.staff_id != actor.staff_id or row.case_id != case.id:
        raise refusal("verification.phone", "verification_not_pending", case_ref=case.case_no)
    code = (code or "").strip()
    asked = row.question_codes.split(",")
    if not (len(code) == 6 and code.isdigit()):
        raise _slip("verification.phone", case, {"code": "code_format"}, verification_id=row.id)
    now = utcnow()
    expired = row.code_expires_at is None or row.code_expires_at <= now
    right = not expired and verify_password(row.code_hash, code)
    unanswered = {f"answers.{c}": "answer_missing" for c in asked if not normalise_answer(answers.get(c) or "")}
    if right and unanswered:
        # The right code, but a question left unanswered: the agent's slip, found before the try
        # counts; the code stays usable. (A wrong code counts whatever the answers.)
        raise _slip("verification.phone", case, unanswered, verification_id=row.id)
    evidence = {"codes_sent": row.codes_sent, "questions": asked}
    row.code_tries += 1
    evidence["code_tries"] = row.code_tries
    if expired:
        return _finish(session, actor, case, row, False, "code_expired", evidence)
    if not right:
        if row.code_tries >= _rules().code_tries:
            return _finish(session, actor, case, row, False, "code_wrong_no_tries_left", evidence)
        audit.record(session, actor, "verification.phone", outcome="failed", reason_code="code_wrong",
                     customer_ref=case.customer.customer_no, case_ref=case.case_no, verification_id=row.id,
                     channel="phone", details={"code_tries": row.code_tries})
        return row
    row.code_hash = None  # single use
    questions = {q.question_code: q for q in wallet.security_questions}
    wrong = [c for c in asked
             if c not in questions or not wallet_credentials.check_security_answer(questions[c], answers.get(c, ""))]
    if wrong:
        evidence["wrong_answers"] = len(wrong)
        return _finish(session, actor, case, row, False, "security_answers_wrong", evidence)
    return _finish(session, actor, case, row, True, None, evidence)


def valid_verification(session: Session, actor: Actor, case: Case) -> Verification | None:
    """The newest passed, unexpired verification of this case's customer by this staff member, in
    this case (made in it, or adopted into it: :func:`adopt_verification`)."""
    return session.scalar(select(Verification).where(
        Verification.case_id == case.id, Verification.customer_id == case.customer_id,
        Verification.staff_id == actor.staff_id, Verification.status == "passed",
        Verification.expires_at > utcnow(),
    ).order_by(Verification.id.desc()).limit(1))


def adoptable_verification(session: Session, actor: Actor, case: Case) -> Verification | None:
    """A still-valid verification this staff member made (or adopted) for the case's customer in an
    earlier case on the same channel, which this case may adopt; None if there is none, or if the
    case already has its own."""
    if actor.staff_id is None or case.status != "open":
        return None
    if valid_verification(session, actor, case) is not None:
        return None
    if case.channel == codes.PHONE and is_flagged(session, case.customer_id):
        return None  # counter only now: no phone help, not even with an earlier verification
    return session.scalar(select(Verification).where(
        Verification.case_id != case.id, Verification.customer_id == case.customer_id,
        Verification.staff_id == actor.staff_id, Verification.channel == case.channel,
        Verification.status == "passed", Verification.expires_at > utcnow(),
    ).order_by(Verification.expires_at.desc(), Verification.id.desc()).limit(1))


def adoption_source(row: Verification) -> dict | None:
    """For a verification adopted from an earlier case: ``{"case_no", "verification_id",
    "origin_verification_id"}``; None for one made in its own case."""
    adopted = json.loads(row.evidence or "{}").get("adopted_from")
    return adopted if isinstance(adopted, dict) else None


def adopt_verification(session: Session, actor: Actor, case: Case, source_id: int) -> Verification:
    """Use a still-valid verification of an earlier case in this one, visibly: a verification of
    this case with the source's channel, method, strength and expiry (never extended), naming the
    source in its evidence, and a ``verification.adopt`` event on this case (its log and receipt).
    Only the staff member's own verification of the same customer, on the case's channel."""
    action = "verification.adopt"
    fields = {"case_ref": case.case_no, "customer_ref": case.customer.customer_no}
    if not can(actor, VERIFY_COUNTER if case.channel == codes.COUNTER else VERIFY_PHONE):
        raise refusal(action, "not_permitted", **fields)
    require_case_actor(actor, case, action)
    if case.status != "open" or case.staff_id != actor.staff_id:
        raise refusal(action, "case_not_open_or_not_yours", **fields)
    if valid_verification(session, actor, case) is not None:
        raise refusal(action, "already_verified", **fields)
    if case.channel == codes.PHONE and is_flagged(session, case.customer_id):
        raise refusal(action, "customer_flagged_counter_only", **fields)
    source = session.get(Verification, source_id) if isinstance(source_id, int) else None
    now = utcnow()
    if (source is None or source.case_id == case.id or source.customer_id != case.customer_id
            or source.staff_id != actor.staff_id or source.channel != case.channel or source.status != "passed"
            or source.expires_at is None or source.expires_at <= now):
        raise refusal(action, "verification_not_adoptable", **fields,
                      details={"source_verification_id": source_id if isinstance(source_id, int) else None})
    earlier = adoption_source(source)
    origin = earlier["origin_verification_id"] if earlier else source.id
    adopted_from = {"case_no": source.case.case_no, "verification_id": source.id, "origin_verification_id": origin}
    summary = json.loads(source.evidence or "{}")
    summary.pop("adopted_from", None)
    row = Verification(case_id=case.id, customer_id=case.customer_id, staff_id=actor.staff_id,
                       channel=source.channel, method=source.method, strength=source.strength, status="passed",
                       created_at=now, completed_at=now, expires_at=source.expires_at, code_tries=0, codes_sent=0,
                       evidence=json.dumps({**summary, "adopted_from": adopted_from}, ensure_ascii=False,
                                           sort_keys=True))
    session.add(row)
    session.flush()
    faults.point("verification.adopt")  # between the new case's verification and its event (tests)
    audit.record(session, actor, action, customer_ref=case.customer.customer_no, case_ref=case.case_no,
                 verification_id=row.id, channel=case.channel,
                 details={"source_case": source.case.case_no, "source_verification_id": source.id,
                          "origin_verification_id": origin, "method": row.method, "strength": row.strength,
                          "valid_until": row.expires_at.isoformat()})
    return row


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

