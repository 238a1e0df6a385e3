"""Read models: what the desk's pages and the staff API show of a customer, a case, the approvals
waiting, the risk alerts and the audit chain. One definition each, so the two never disagree;
views render them, the API serialises them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from .. import codes
from ..models.audit import AuditEvent, ChainHead
from ..models.customer import Customer, RiskAlert, Wallet
from ..models.service import Approval, Case, Receipt, Verification
from ..models.staff import Staff
from ..permissions import ADMIN_MANAGE, APPROVAL_DECIDE, CUSTOMER_VIEW, can
from ..timeutil import local, local_midnight_utc, utcnow
from . import alerts, cases, checkpoints, operations, verification, wallet_signin
from .operations.registry import reset_actions
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


def pending_approval_count(session: Session, actor: Actor) -> int:
    """How many requests of the actor's branch wait for the actor's decision (their own requests,
    which they may not decide, are not counted); 0 for anyone who does not decide approvals.
    Reads only: a request past its expiry is not counted, marked or not."""
    if not can(actor, APPROVAL_DECIDE) or actor.branch_id is None:
        return 0
    return session.scalar(select(func.count(Approval.id)).where(
        Approval.branch_id == actor.branch_id, Approval.status == "pending", Approval.expires_at > utcnow(),
        Approval.maker_id != actor.staff_id)) or 0


def approval_state(row: Approval, now=None) -> str:
    """What a request is now: pending, expired (also when past its expiry but not marked yet),
    approved, rejected or executed."""
    if row.status == "pending" and row.expires_at <= (now or utcnow()):
        return "expired"
    return row.status


@dataclass(frozen=True)
class ApprovalNotice:
    """A request as its maker (or whoever serves the customer next) sees it."""

    approval: Approval
    state: str  # approval_state
    other_case: bool  # filed in another case of the customer (pending ones block this case too)


def case_approvals(session: Session, case: Case) -> list[ApprovalNotice]:
    """The requests filed in this case, and those of the customer still waiting from other cases,
    newest first. The caller has already been allowed to see the case."""
    now = utcnow()
    rows = session.scalars(select(Approval).where(or_(
        Approval.case_id == case.id,
        and_(Approval.customer_id == case.customer_id, Approval.status == "pending", Approval.expires_at > now)))
        .order_by(Approval.id.desc()).limit(20)).all()
    return [ApprovalNotice(row, approval_state(row, now), row.case_id != case.id) for row in rows]


def filed_approvals(session: Session, actor: Actor, *, days: int = 7, limit: int = 10) -> list[ApprovalNotice]:
    """The requests the actor filed in the last ``days`` days, newest first, with their decisions."""
    now = utcnow()
    rows = session.scalars(select(Approval).where(Approval.maker_id == actor.staff_id,
                                                  Approval.created_at > now - timedelta(days=days))
                           .order_by(Approval.id.desc()).limit(limit)).all()
    return [ApprovalNotice(row, approval_state(row, now), False) for row in rows]


@dataclass(frozen=True)
class RiskSignal:
    """Something a checker should weigh before deciding; the words are at the edge (by ``code``)."""

    code: str  # see approval_review
    level: str  # high, warn, info
    at: datetime | None = None
    minutes: int | None = None  # how long before the request was filed (negative: after it)
    count: int | None = None
    sources: int | None = None
    action: str | None = None  # recent_change, answers_just_set: the audit action of the change
    by: str | None = None  # who made the change: an employee number, or the actor kind


@dataclass
class ApprovalReview:
    approval: Approval
    state: str  # approval_state
    verification: dict | None  # what the maker's verification was, as filed (no full identifier)
    verified_at: datetime | None  # when that verification was completed
    wallet_then: dict  # the wallet's state when the request was filed (``lock_until`` a datetime)
    signals: list[RiskSignal]

    @property
    def high(self) -> int:
        return sum(1 for s in self.signals if s.level == "high")

    @property
    def warn(self) -> int:
        return sum(1 for s in self.signals if s.level == "warn")


def _instant(value) -> datetime | None:
    """A time kept as ISO text in a JSON snapshot, back as a datetime (None if absent or unreadable)."""
    try:
        return datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None


# Changes to a wallet's credentials that a checker should know about when they happened shortly
# before a request: the operations that count as resets and the customer's own changes.
_OWN_CHANGES = ("wallet.password_change", "wallet.security_questions_set", "wallet.password_reset")
_QUESTION_CHANGES = ("wallet.reset_questions", "wallet.security_questions_set")
_LEVELS = {"high": 0, "warn": 1, "info": 2}


def approval_review(session: Session, actor: Actor, approval: Approval) -> ApprovalReview:
    """What the checker reads: the request, the evidence as filed and the risk signals, high first.

    Signals: a credential change of the customer's wallets in the 24 hours before the request (or
    since), ``answers_just_set`` when the security answers that verified a caller had just been set;
    recent failed verifications (``counter_only`` once the customer is flagged); the wallet frozen,
    on hold or locked; its open risk alerts; failed sign-ins of the last 24 hours and from how many
    addresses; a phone verification (medium strength) behind the request. The caller has already
    been allowed to see the request (``operations.get_approval``)."""
    now = utcnow()
    filed = approval.created_at
    evidence = json.loads(approval.evidence or "{}")
    proof = evidence.get("verification")
    by_phone = bool(proof) and proof.get("strength") == codes.MEDIUM
    signals: list[RiskSignal] = []

    def minutes_before(at) -> int:
        return int((filed - at).total_seconds() // 60)

    changes = set(reset_actions()) | set(_OWN_CHANGES)
    events = session.scalars(select(AuditEvent).where(
        AuditEvent.customer_ref == approval.customer.customer_no, AuditEvent.occurred_at > filed - timedelta(hours=24),
        AuditEvent.outcome == codes.SUCCESS, AuditEvent.action.in_(changes))
        .order_by(AuditEvent.seq.desc()).limit(20)).all()
    seen = set()
    for event in events:  # newest first: the latest change of each kind speaks for the others
        if event.approval_id == approval.id or event.action in seen:
            continue  # this request's own execution, or an earlier change of the same kind
        seen.add(event.action)
        minutes = minutes_before(event.occurred_at)
        questions = event.action in _QUESTION_CHANGES
        code = "answers_just_set" if questions and by_phone and minutes >= 0 else "recent_change"
        level = "high" if code == "answers_just_set" or 0 <= minutes <= 60 else "warn"
        signals.append(RiskSignal(code, level, at=event.occurred_at, minutes=minutes, action=event.action,
                                  by=event.actor_employee_no or event.actor_type))

    failed = verification.failed_recently(session, approval.customer_id)
    if verification.flagged_by(failed):
        signals.append(RiskSignal("counter_only", "high", count=failed))
    elif failed:
        signals.append(RiskSignal("failed_verifications", "warn", count=failed))

    wallet = approval.wallet
    if wallet.frozen_at is not None:
        level = "info" if approval.operation == "release_freeze" else "high"
        signals.append(RiskSignal("wallet_frozen", level, at=wallet.frozen_at))
    if wallet.hold_placed_at is not None:
        signals.append(RiskSignal("protective_hold", "warn", at=wallet.hold_placed_at, by=wallet.hold_placed_by))
    if wallet.lock_kind is not None:
        signals.append(RiskSignal("wallet_locked", "info", at=wallet.locked_at))
    for alert in session.scalars(select(RiskAlert).where(RiskAlert.wallet_id == wallet.id,
                                                         RiskAlert.status == "open")).all():
        count, sources, minutes = alert_counts(alert)
        signals.append(RiskSignal("open_recovery_alert" if alert.rule == "recovery_burst" else "open_alert", "high",
                                  at=alert.raised_at, count=count, sources=sources, minutes=minutes))
    attempts = wallet_signin.recent_failures(session, wallet, since=now - timedelta(hours=24), limit=200)
    if attempts:
        sources = len({a.source_ip or "-" for a in attempts})
        signals.append(RiskSignal("failed_signins", "warn" if sources > 1 or len(attempts) >= 5 else "info",
                                  count=len(attempts), sources=sources))
    if by_phone:
        signals.append(RiskSignal("verified_by_phone", "info"))
    signals.sort(key=lambda s: _LEVELS[s.level])
    wallet_then = dict(evidence.get("wallet") or {})
    wallet_then["lock_until"] = _instant(wallet_then.get("lock_until"))
    return ApprovalReview(approval, approval_state(approval, now), proof,
                          _instant(proof.get("completed_at")) if proof else None, wallet_then, signals)


@dataclass(frozen=True)
class AlertView:
    raised_at: object
    wallet_no: str
    customer_name: str
    failures: int | None
    sources: int | None
    minutes: int | None
    id: int | None = None
    customer_no: str | None = None
    acknowledged_at: datetime | None = None
    owner: Staff | None = None
    acknowledged_by: Staff | None = None
    note: str | None = None
    rule: str | None = None


def alert_counts(alert: RiskAlert) -> tuple[int | None, int | None, int | None]:
    """(what was counted, from how many addresses, within how many minutes) of an alert's rule:
    failed sign-ins for ``failure_burst``, self-service recoveries (addresses or devices, whichever
    reached the limit) for ``recovery_burst``."""
    details = json.loads(alert.details or "{}")
    if alert.rule == "recovery_burst":
        sources = max(details.get("addresses") or 0, details.get("devices") or 0)
        return details.get("recoveries"), sources, details.get("window_minutes")
    return details.get("failures"), details.get("sources"), details.get("window_minutes")


def alert_view(alert: RiskAlert) -> AlertView:
    return AlertView(alert.raised_at, alert.wallet.wallet_no, alert.wallet.customer.name, *alert_counts(alert),
                     id=alert.id, customer_no=alert.wallet.customer.customer_no,
                     acknowledged_at=alert.acknowledged_at, owner=alert.owner, acknowledged_by=alert.acknowledged_by,
                     note=alert.handling_note, rule=alert.rule)


def open_alerts(session: Session, actor: Actor, *, limit: int = 20) -> list[AlertView]:
    """Open risk alerts of the actor's branch (the wallets' home branch), newest first, for those
    who handle them (supervisors); see console/services/alerts.py."""
    return [alert_view(alert) for alert in alerts.branch_alerts(session, actor, limit=limit)]


@dataclass(frozen=True)
class ChainState:
    head: ChainHead | None
    checkpoints: list  # the newest signed checkpoints, newest first
    key_id: str
    pending: int = 0  # transactions committed whose events are not chained yet
    lag_seconds: float | None = None  # how long the oldest of them has waited
    stream: dict | None = None  # the SIEM stream's progress (siem.status)


def chain_state(session: Session, *, last: int = 20) -> ChainState:
    from . import sequencer, siem

    pending, lag = sequencer.backlog(session)
    return ChainState(session.get(ChainHead, 1), checkpoints.all_checkpoints(session)[-last:][::-1],
                      checkpoints.key_id(), pending, lag, siem.status(session))


# --- home pages: the work in front of each role ------------------------------------------------------


@dataclass(frozen=True)
class StaffCases:
    open: list  # the actor's cases still open, oldest first (the ones to finish)
    today: list  # every case the actor opened today (local day), newest first


def staff_cases(session: Session, actor: Actor, *, limit: int = 20) -> StaffCases:
    """The actor's own cases: those still open, and today's."""
    if not can(actor, CUSTOMER_VIEW) or actor.staff_id is None:
        return StaffCases([], [])
    still_open = session.scalars(select(Case).where(Case.staff_id == actor.staff_id, Case.status == "open")
                                 .order_by(Case.id).limit(limit)).all()
    midnight = local_midnight_utc(local(utcnow()).date())
    today = session.scalars(select(Case).where(Case.staff_id == actor.staff_id, Case.opened_at >= midnight)
                            .order_by(Case.id.desc()).limit(limit)).all()
    return StaffCases(list(still_open), list(today))


# What an administrator does (``codes.AUDIT_ACTIONS``, "Administration").
ADMIN_ACTIONS = ("staff.create", "staff.update", "staff.unlock", "staff.password_reset", "staff.totp_reset",
                 "branch.create", "branch.update")


@dataclass(frozen=True)
class AdminAction:
    event: AuditEvent
    target: str  # the staff account's employee number or the branch's code it was done to


def recent_admin_actions(session: Session, actor: Actor, *, limit: int = 10) -> list[AdminAction]:
    """The latest administration events (staff and branches; never a customer), for administrators."""
    if not can(actor, ADMIN_MANAGE):
        return []
    rows = session.scalars(select(AuditEvent).where(AuditEvent.action.in_(ADMIN_ACTIONS))
                           .order_by(AuditEvent.seq.desc()).limit(limit)).all()
    actions = []
    for event in rows:
        state = json.loads(event.after_state or event.before_state or "{}")
        actions.append(AdminAction(event, str(state.get("employee_no") or state.get("code") or "")))
    return actions
