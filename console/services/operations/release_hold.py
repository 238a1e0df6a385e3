"""Release a protective hold: medium or strong verification and a supervisor's approval."""
from __future__ import annotations

from ... import permissions as P
from ...i18n_marker import N_
from .registry import STRONG_OR_MEDIUM, Operation, register, supervisor_approval


def release_hold(session, actor, case, wallet, *, reason_code, verification_id, now) -> None:
    wallet.hold_placed_at = wallet.hold_reason = wallet.hold_placed_by = None


RELEASE_HOLD = register(Operation(
    code="release_hold",
    position=60,
    permission=P.HOLD_RELEASE_REQUEST,
    verification={"counter": STRONG_OR_MEDIUM, "phone": STRONG_OR_MEDIUM},
    needs_approval=supervisor_approval,
    applies=lambda wallet: wallet.hold_placed_at is not None,
    change=release_hold,
    sms_kind="hold_released",
    sms_template="【{bank}】您的数字钱包止付已于{time}在{branch}解除。如非本人办理，请立即致电{hotline}。",
    label=N_("Release the protective hold"),
    help=N_("Needs a supervisor's approval."),
    receipt_label=("解除保护性止付", "Protective hold released"),
    counts_as_reset=False,
    default_reason="customer_request",
))
