"""Read models: what the desk's pages and the staff API show of a customer, a case, the approvals
waiting, the risk alerts and the audit chain. One definition each, so the two never disagree;
views render them, the API serialises them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from ..models.audit import ChainHead
from ..models.customer import Customer, RiskAlert, Wallet
from ..models.service import Approval, Case, Receipt, Verification
from ..permissions import APPROVAL_DECIDE, can
from ..timeutil import utcnow
from . import cases, checkpoints, operations, verification, wallet_signin
from .actor import Actor
from .cases import refusal


@dataclass
class WalletOverview:
    wallet: Wallet
    failures: list  # the last 24 hours' failed sign-ins
    sources: dict  # failed sign-ins per source address
    alerts: list  # open risk alerts
    lock_reason: str | None
    sign_in: wallet_signin.SignInState

    def state(self) -> dict:
        return {**operations.wallet_state(self.wallet), "tier": self.wallet.tier, "lock_reason": self.lock_reason,
                "sign_in": self.sign_in.as_json()}


@dataclass
class CustomerOverview:
    customer: Customer
    wallets: list[WalletOverview]
    past_cases: list[Case]  # of the actor's own branch; the others are counted, never named
    cases_elsewhere: int
    flagged: bool  # counter-only after repeated failed verifications
    failed_verifications: int


def customer_overview(session: Session, actor: Actor, customer: Customer) -> CustomerOverview:
    since = utcnow() - timedelta(hours=24)
    wallets = []
    for wallet in customer.wallets:
        failures = wallet_signin.recent_failures(session, wallet, since=since)
        sources: dict[str, int] = {}
        for attempt in failures:
            sources[attempt.source_ip or "-"] = sources.get(attempt.source_ip or "-", 0) + 1
        alerts = session.scalars(select(RiskAlert).where(RiskAlert.wallet_id == wallet.id,
                                                         RiskAlert.status == "open")).all()
        wallets.append(WalletOverview(wallet, failures, sources, alerts, wallet_signin.lock_reason(wallet),
                                      wallet_signin.sign_in_state(session, wallet)))
    past = session.scalars(select(Case).where(Case.customer_id == customer.id, Case.branch_id == actor.branch_id)
                           .order_by(Case.id.desc()).limit(10)).all()
    elsewhere = session.scalar(select(func.count(Case.id)).where(
        Case.customer_id == customer.id, or_(Case.branch_id != actor.branch_id, Case.branch_id.is_(None)))) or 0
    failed = verification.failed_recently(session, customer.id)
    return CustomerOverview(customer, wallets, past, elsewhere, verification.flagged_by(failed), failed)


@dataclass
class CaseOverview:
    case: Case
    proof: Verification | None  # the actor's valid verification in this case (made or adopted in it)
    pending: Verification | None  # a phone verification waiting for the code and answers
    question_codes: list[str]
    last: Verification | None
    receipt: Receipt | None
    flagged: bool
    events: list
    operations: list = field(default_factory=list)  # operations.availability rows, while the case is open
    # Without a verification of its own: the actor's still-valid one of an earlier case, which this
    # case may adopt (verification.adopt_verification); never used without that.
    adoptable: Verification | None = None


def case_overview(session: Session, actor: Actor, case: Case) -> CaseOverview:
    proof = verification.valid_verification(session, actor, case)
    pending = verification.pending_phone_verification(session, actor, case)
    codes = pending.question_codes.split(",") if pending and pending.question_codes else []
    return CaseOverview(
        case=case, proof=proof, pending=pending, question_codes=codes,
        last=case.verifications[-1] if case.verifications else None,
        receipt=session.scalar(select(Receipt).where(Receipt.case_id == case.id)),
        flagged=verification.is_flagged(session, case.customer_id),
        events=cases.case_events(session, case),
        operations=operations.availability(session, actor, case, proof) if case.status == "open" else [],
        adoptable=verification.adoptable_verification(session, actor, case) if proof is None else None)


def pending_approvals(session: Session, actor: Actor) -> list[Approval]:
    """The requests waiting for a supervisor of the actor's branch (stale ones expire first)."""
    if not can(actor, APPROVAL_DECIDE):
        raise refusal("approval.list", "not_permitted")
    operations.expire_stale(session)
    return operations.pending_for_branch(session, actor)


@dataclass(frozen=True)
class AlertView:
    raised_at: object
    wallet_no: str
    customer_name: str
    failures: int | None
    sources: int | None
    minutes: int | None


def open_alerts(session: Session, actor: Actor, *, limit: int = 20) -> list[AlertView]:
    """Open risk alerts, newest first, for those who decide on them (supervisors)."""
    if not can(actor, APPROVAL_DECIDE):
        return []
    rows = session.scalars(select(RiskAlert).where(RiskAlert.status == "open")
                           .order_by(RiskAlert.id.desc()).limit(limit)).all()
    views = []
    for alert in rows:
        details = json.loads(alert.details or "{}")
        views.append(AlertView(alert.raised_at, alert.wallet.wallet_no, alert.wallet.customer.name,
                               details.get("failures"), details.get("sources"), details.get("window_minutes")))
    return views


@dataclass(frozen=True)
class ChainState:
    head: ChainHead | None
    checkpoints: list  # the newest signed checkpoints, newest first
    key_id: str


def chain_state(session: Session, *, last: int = 20) -> ChainState:
    return ChainState(session.get(ChainHead, 1), checkpoints.all_checkpoints(session)[-last:][::-1],
                      checkpoints.key_id())
