"""Wallet credentials: the customer password policy, password changes, temporary passwords and
security questions (DESIGN.md section 3, NIST SP 800-63B)."""
from __future__ import annotations

import secrets
import string
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .. import codes, policy
from ..identity import normalise_answer
from ..models.customer import SecurityQuestion, Wallet, WalletPasswordHistory
from ..passwords import hash_password, is_common, verify_password
from ..timeutil import utcnow
from . import audit, notifications
from .actor import Actor
from .customers import customer_id_number, password_expiry
from .errors import InvalidInput

# The question codes a customer may choose; the questions people read are labels at the edge
# (``console/web/labels.py``).
SECURITY_QUESTIONS = codes.SECURITY_QUESTIONS


def password_problems(wallet: Wallet, password: str) -> list[str]:
    """Every rule of DESIGN.md section 3 that ``password`` breaks for this wallet."""
    problems = []
    if len(password) < policy.current().wallet_passwords.min_length:
        problems.append("too_short")
    if is_common(password):
        problems.append("common")
    customer = wallet.customer
    mobile = notifications.customer_mobile(customer)
    if mobile and mobile in password:
        problems.append("contains_mobile")
    id_number = customer_id_number(customer)
    lowered = password.upper()
    if id_number and (id_number in lowered or (len(id_number) >= 8 and id_number[-8:] in lowered)):
        problems.append("contains_id_number")
    born = customer.birth_date
    if born and any(form in password for form in (born.strftime("%Y%m%d"), born.strftime("%y%m%d"),
                                                   born.strftime("%Y-%m-%d"), born.strftime("%m%d%Y"))):
        problems.append("contains_birth_date")
    if any(verify_password(h.password_hash, password) for h in recent_passwords(wallet)):
        problems.append("reused")
    return problems


def recent_passwords(wallet: Wallet) -> list[WalletPasswordHistory]:
    return list(wallet.password_history[: policy.current().wallet_passwords.history])


def store_password(session: Session, wallet: Wallet, password: str) -> None:
    """Make ``password`` (already checked against the policy) the wallet's, into its history. Not audited."""
    now = utcnow()
    hashed = hash_password(password)
    wallet.password_hash = hashed
    wallet.password_set_at = now
    wallet.password_expires_at = password_expiry(now)
    wallet.must_change_password = False
    wallet.temp_password_hash = None
    wallet.temp_password_expires_at = None
    session.add(WalletPasswordHistory(wallet_id=wallet.id, password_hash=hashed, set_at=now))
    session.flush()
    keep = [h.id for h in session.scalars(
        select(WalletPasswordHistory).where(WalletPasswordHistory.wallet_id == wallet.id)
        .order_by(WalletPasswordHistory.id.desc()).limit(policy.current().wallet_passwords.history))]
    session.execute(delete(WalletPasswordHistory).where(
        WalletPasswordHistory.wallet_id == wallet.id, WalletPasswordHistory.id.not_in(keep)))
    session.expire(wallet, ["password_history"])


def change_password(session: Session, actor: Actor, wallet: Wallet, new_password: str, *, used_temporary: bool) -> None:
    """Set the customer's new password after the current (or temporary) one was verified."""
    problems = password_problems(wallet, new_password)
    if problems:
        raise InvalidInput("password policy", problems=problems)
    store_password(session, wallet, new_password)
    audit.record(session, actor, "wallet.password_change", customer_ref=wallet.customer.customer_no,
                 after={"wallet_no": wallet.wallet_no, "used_temporary_password": used_temporary})
    notifications.queue_sms(session, wallet.customer, "password_changed", wallet=wallet)


def generate_temporary_password(length: int) -> str:
    alphabet = [c for c in string.ascii_letters + string.digits if c not in "Il1O0o"]
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            return value


def issue_temporary_password(session: Session, actor: Actor, wallet: Wallet, *, reason_code: str,
                             case_ref: str | None = None, verification_id: int | None = None,
                             record: bool = True) -> None:
    """Replace the password with a random single-use one, sent only by SMS: staff never see it.

    ``record=False`` when the caller writes the operation's own audit event.
    """
    rules = policy.current().wallet_passwords
    temporary = generate_temporary_password(rules.temporary_length)
    wallet.temp_password_hash = hash_password(temporary)
    wallet.temp_password_expires_at = utcnow() + timedelta(hours=rules.temporary_hours)
    wallet.must_change_password = True
    if record:
        audit.record(session, actor, "wallet.password_reset", reason_code=reason_code,
                     customer_ref=wallet.customer.customer_no, case_ref=case_ref, verification_id=verification_id,
                     after={"wallet_no": wallet.wallet_no, "temporary_password_sent": True,
                            "expires_at": wallet.temp_password_expires_at.isoformat()})
    notifications.queue_sms(session, wallet.customer, "temporary_password", wallet=wallet, secret=True,
                            password=temporary, hours=rules.temporary_hours)


def set_security_questions(session: Session, actor: Actor, wallet: Wallet, answers: list[tuple[str, str]]) -> None:
    """Replace the security questions; answers are normalised, then hashed."""
    required = policy.current().wallet_passwords.security_questions_required
    codes = [code for code, _answer in answers]
    if len(answers) < required or len(answers) > len(SECURITY_QUESTIONS):
        raise InvalidInput("question_count", field="questions")
    if any(code not in SECURITY_QUESTIONS for code in codes) or len(set(codes)) != len(codes):
        raise InvalidInput("unknown_or_repeated_question", field="questions")
    normalised = [normalise_answer(answer) for _code, answer in answers]
    if any(len(a) < 2 or len(a) > 100 for a in normalised):
        raise InvalidInput("answer_length", field="answers")
    now = utcnow()
    session.execute(delete(SecurityQuestion).where(SecurityQuestion.wallet_id == wallet.id))
    for position, (code, answer) in enumerate(zip(codes, normalised), start=1):
        session.add(SecurityQuestion(wallet_id=wallet.id, position=position, question_code=code,
                                     answer_hash=hash_password(answer), set_at=now))
    session.expire(wallet, ["security_questions"])
    audit.record(session, actor, "wallet.security_questions_set", customer_ref=wallet.customer.customer_no,
                 after={"wallet_no": wallet.wallet_no, "questions": codes})
    notifications.queue_sms(session, wallet.customer, "security_questions_set", wallet=wallet)


def check_security_answer(question: SecurityQuestion, answer: str) -> bool:
    return verify_password(question.answer_hash, normalise_answer(answer))
