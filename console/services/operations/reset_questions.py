"""Clear the security questions (the customer sets new ones in the app): medium or strong verification."""
from __future__ import annotations

from ... import permissions as P
from ...i18n_marker import N_
from ...models.customer import SecurityQuestion
from .registry import STRONG_OR_MEDIUM, Operation, no_approval, register


def reset_questions(session, actor, case, wallet, *, reason_code, verification_id, now) -> None:
    session.query(SecurityQuestion).filter(SecurityQuestion.wallet_id == wallet.id).delete()
    session.expire(wallet, ["security_questions"])


RESET_QUESTIONS = register(Operation(
    code="reset_questions",
    position=30,
    permission=P.CREDENTIALS_RESET,
    verification={"counter": STRONG_OR_MEDIUM, "phone": STRONG_OR_MEDIUM},
    needs_approval=no_approval,
    applies=lambda wallet: bool(wallet.security_questions),
    change=reset_questions,
    sms_kind="security_questions_reset",
    sms_template="【{bank}】您的数字钱包密保问题已于{time}在{branch}重置，请登录钱包重新设置。如非本人办理，请立即致电{hotline}。",
    label=N_("Reset the security questions"),
    help=N_("Clears the security questions; the customer sets new ones in the wallet app."),
    receipt_label=("重置密保问题", "Security questions reset"),
    counts_as_reset=True,
    default_reason="forgot_security_answers",
))
