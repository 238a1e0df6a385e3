"""Unlock a wallet locked after wrong passwords: medium or strong verification, no approval."""
from __future__ import annotations

from sqlalchemy import update

from ... import permissions as P
from ...i18n_marker import N_
from ...models.customer import Wallet, WalletLock
from ..cases import refusal
from .registry import STRONG_OR_MEDIUM, Operation, no_approval, register


def unlock(session, actor, case, wallet: Wallet, *, reason_code, verification_id, now) -> None:
    # Conditional, and the wallet's row first (as the lockout engine takes it): a lock that
    # lapsed meanwhile, with new attempts counted since, is not wiped by a stale page.
    unlocked = session.execute(
        update(Wallet).where(Wallet.id == wallet.id, Wallet.lock_kind.is_not(None))
        .values(lock_kind=None, lock_until=None, locked_at=None, failed_count=0)
        .execution_options(synchronize_session=False)
    ).rowcount
    if unlocked != 1:
        session.refresh(wallet)
        raise refusal("wallet.unlock", "not_applicable", customer_ref=case.customer.customer_no,
                      case_ref=case.case_no)
    session.execute(update(WalletLock).where(WalletLock.wallet_id == wallet.id, WalletLock.ended_at.is_(None))
                    .values(ended_at=now, ended_by=actor.employee_no).execution_options(synchronize_session=False))
    session.refresh(wallet)


UNLOCK = register(Operation(
    code="unlock",
    position=10,
    permission=P.WALLET_UNLOCK,
    verification={"counter": STRONG_OR_MEDIUM, "phone": STRONG_OR_MEDIUM},
    needs_approval=no_approval,
    applies=lambda wallet: wallet.lock_kind is not None,
    change=unlock,
    sms_kind="wallet_unlocked",
    sms_template="【{bank}】您的数字钱包已于{time}在{branch}解锁。如非本人办理，请立即致电{hotline}。",
    label=N_("Unlock the wallet"),
    help=N_("Ends the failure lock at once; the customer can sign in with the current password."),
    receipt_label=("解锁钱包", "Wallet unlocked"),
    counts_as_reset=True,
    default_reason="locked_after_wrong_passwords",
))
