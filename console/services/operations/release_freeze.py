"""Release the risk monitor's freeze (and resolve its open alerts): medium or strong verification and
a supervisor's approval."""
from __future__ import annotations

from sqlalchemy import update

from ... import permissions as P
from ...i18n_marker import N_
from ...models.customer import RiskAlert
from .registry import STRONG_OR_MEDIUM, Operation, register, supervisor_approval


def release_freeze(session, actor, case, wallet, *, reason_code, verification_id, now) -> None:
    wallet.frozen_at = wallet.frozen_reason = None
    session.execute(update(RiskAlert).where(RiskAlert.wallet_id == wallet.id, RiskAlert.status == "open")
                    .values(status="resolved", resolved_at=now).execution_options(synchronize_session=False))


RELEASE_FREEZE = register(Operation(
    code="release_freeze",
    position=70,
    permission=P.HOLD_RELEASE_REQUEST,
    verification={"counter": STRONG_OR_MEDIUM, "phone": STRONG_OR_MEDIUM},
    needs_approval=supervisor_approval,
    applies=lambda wallet: wallet.frozen_at is not None,
    change=release_freeze,
    sms_kind="freeze_released",
    sms_template="【{bank}】您的数字钱包风险冻结已于{time}在{branch}解除。如非本人办理，请立即致电{hotline}。",
    label=N_("Release the risk freeze"),
    help=N_("Needs a supervisor's approval."),
    receipt_label=("解除风险冻结", "Risk freeze released"),
    counts_as_reset=False,
    default_reason="risk_reviewed",
))
