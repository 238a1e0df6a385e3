"""Reset the wallet password to a temporary one sent only by SMS: medium or strong verification."""
from __future__ import annotations

from ... import permissions as P
from ...i18n_marker import N_
from .. import wallet_credentials
from .registry import STRONG_OR_MEDIUM, Operation, no_approval, register


def reset_password(session, actor, case, wallet, *, reason_code, verification_id, now) -> None:
    # The operation's own event is written by the engine, hence record=False.
    wallet_credentials.issue_temporary_password(session, actor, wallet, reason_code=reason_code,
                                                case_ref=case.case_no, verification_id=verification_id,
                                                record=False)


RESET_PASSWORD = register(Operation(
    code="reset_password",
    position=20,
    permission=P.CREDENTIALS_RESET,
    verification={"counter": STRONG_OR_MEDIUM, "phone": STRONG_OR_MEDIUM},
    needs_approval=no_approval,
    applies=lambda wallet: True,
    change=reset_password,
    sms_kind="password_reset",
    sms_template="【{bank}】您的数字钱包登录密码已于{time}在{branch}重置，临时密码将另行短信发送。如非本人办理，请立即致电{hotline}。",
    label=N_("Reset the wallet password"),
    help=N_("A random temporary password goes by SMS to the registered mobile. Nobody at the bank sees it; the customer must change it at first sign-in."),
    receipt_label=("重置登录密码", "Password reset"),
    counts_as_reset=True,
    default_reason="forgot_password",
))
