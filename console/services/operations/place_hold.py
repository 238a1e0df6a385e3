"""Place a protective hold: needs no verification (it only protects the customer) and no approval."""
from __future__ import annotations

from ... import permissions as P
from ...i18n_marker import N_
from .registry import Operation, no_approval, register


def place_hold(session, actor, case, wallet, *, reason_code, verification_id, now) -> None:
    wallet.hold_placed_at, wallet.hold_reason, wallet.hold_placed_by = now, reason_code, actor.employee_no


PLACE_HOLD = register(Operation(
    code="place_hold",
    position=50,
    permission=P.HOLD_PLACE,
    verification=None,
    needs_approval=no_approval,
    applies=lambda wallet: wallet.hold_placed_at is None,
    change=place_hold,
    sms_kind="hold_placed",
    sms_template="【{bank}】您的数字钱包已于{time}在{branch}设置保护性止付。如有疑问请致电{hotline}。",
    label=N_("Place a protective hold"),
    help=N_("Stops the wallet from being used until the hold is released."),
    receipt_label=("设置保护性止付", "Protective hold placed"),
    counts_as_reset=False,
))
