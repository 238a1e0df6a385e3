"""Unbind the 2FA device: strong verification at a counter; by phone, medium and a supervisor's approval."""
from __future__ import annotations

from ... import permissions as P
from ...i18n_marker import N_
from ...permissions import can
from .registry import STRONG, STRONG_OR_MEDIUM, Operation, register


def needs_approval(actor, case) -> bool:
    # In person with the document, a teller or supervisor resets it; by phone a supervisor approves.
    return case.channel == "phone" or not can(actor, P.TWOFA_RESET)


def reset_2fa(session, actor, case, wallet, *, reason_code, verification_id, now) -> None:
    binding = wallet.active_binding
    binding.unbound_at, binding.unbound_reason = now, reason_code


RESET_2FA = register(Operation(
    code="reset_2fa",
    position=40,
    permission=P.TWOFA_RESET,
    request_permission=P.TWOFA_RESET_REQUEST,
    verification={"counter": STRONG, "phone": STRONG_OR_MEDIUM},
    needs_approval=needs_approval,
    applies=lambda wallet: wallet.active_binding is not None,
    change=reset_2fa,
    sms_kind="twofa_reset",
    sms_template="【{bank}】您的数字钱包双重认证设备绑定已于{time}在{branch}解除，请登录钱包重新绑定。如非本人办理，请立即致电{hotline}。",
    label=N_("Reset the two-factor device binding"),
    help=N_("Unbinds the current 2FA device; the customer binds a new one in the wallet app."),
    receipt_label=("解除双重认证设备绑定", "2FA device binding reset"),
    counts_as_reset=True,
))
