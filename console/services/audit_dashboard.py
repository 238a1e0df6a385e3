"""The auditor's review dashboard: events per day, per action and per branch, and the
exception lists that deserve a look. Every list links into the search."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Integer, and_, cast, func, literal_column, or_, select
from sqlalchemy.orm import Session

from .. import policy
from ..models.audit import AuditEvent
from ..timeutil import utc_offset, utcnow
from .actor import Actor
from .audit_query import scope_clause
from .operations import registry


def reset_actions() -> tuple[str, ...]:
    """The audit actions counted as unlocks or resets: the operations that declare ``counts_as_reset``."""
    return registry.reset_actions()


def _offset_minutes() -> int:
    # The bank's zone (Asia/Shanghai) has no daylight saving: one offset for every event.
    return int(utc_offset().total_seconds() // 60)


def _local_day(session: Session):
    """The local calendar day of an event, in SQL, on either backend."""
    minutes = _offset_minutes()
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(AuditEvent.occurred_at + literal_column(f"interval '{minutes} minutes'"), "YYYY-MM-DD")
    return func.date(AuditEvent.occurred_at, f"{minutes:+d} minutes")


def _local_hour(session: Session):
    minutes = _offset_minutes()
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("hour", AuditEvent.occurred_at + literal_column(f"interval '{minutes} minutes'"))
    return cast(func.strftime("%H", AuditEvent.occurred_at, f"{minutes:+d} minutes"), Integer)


def build(session: Session, actor: Actor, *, days: int = 14) -> dict:
    since = utcnow() - timedelta(days=days)
    where = [AuditEvent.occurred_at >= since]
    scope = scope_clause(actor)
    if scope is not None:
        where.append(scope)
    cond = and_(*where)
    day = _local_day(session).label("day")
    per_day = session.execute(select(day, AuditEvent.outcome, func.count()).where(cond)
                              .group_by(day, AuditEvent.outcome).order_by(day)).all()
    per_action = session.execute(select(AuditEvent.action, func.count()).where(cond).group_by(AuditEvent.action)
                                 .order_by(func.count().desc()).limit(12)).all()
    per_branch = session.execute(select(AuditEvent.actor_branch, func.count()).where(cond, AuditEvent.actor_branch.is_not(None))
                                 .group_by(AuditEvent.actor_branch).order_by(func.count().desc()).limit(12)).all()
    staff = AuditEvent.actor_type == "staff"
    hour = _local_hour(session)
    start, end = policy.current().review.business_hours
    after_hours = session.scalars(select(AuditEvent).where(cond, staff, or_(hour < start, hour >= end))
                                  .order_by(AuditEvent.seq.desc()).limit(10)).all()
    heavy = session.execute(
        select(AuditEvent.actor_employee_no, AuditEvent.actor_branch, func.count())
        .where(cond, AuditEvent.action.in_(reset_actions()), AuditEvent.outcome == "success")
        .group_by(AuditEvent.actor_employee_no, AuditEvent.actor_branch)
        .having(func.count() >= policy.current().review.heavy_resets)
        .order_by(func.count().desc()).limit(10)).all()
    denied = session.scalars(select(AuditEvent).where(cond, AuditEvent.outcome == "denied")
                             .order_by(AuditEvent.seq.desc()).limit(10)).all()
    self_approval = session.scalars(select(AuditEvent).where(cond, AuditEvent.reason_code == "self_approval")
                                    .order_by(AuditEvent.seq.desc()).limit(10)).all()
    repeated = session.execute(
        select(AuditEvent.customer_ref, func.count())
        .where(cond, AuditEvent.action.in_(reset_actions()), AuditEvent.outcome == "success",
               AuditEvent.customer_ref.is_not(None))
        .group_by(AuditEvent.customer_ref).having(func.count() >= policy.current().review.repeated_resets)
        .order_by(func.count().desc()).limit(10)).all()
    failed_verifications = session.scalars(
        select(AuditEvent).where(cond, AuditEvent.action.startswith("verification."), AuditEvent.outcome == "failed")
        .order_by(AuditEvent.seq.desc()).limit(10)).all()
    self_service = self_service_exceptions(session, cond)
    days_list = sorted({d for d, _o, _n in per_day})
    by_day = {d: {"success": 0, "denied": 0, "failed": 0} for d in days_list}
    for d, outcome, n in per_day:
        by_day[d][outcome] = n
    return {
        "since": since, "by_day": by_day, "per_action": per_action, "per_branch": per_branch,
        "after_hours": after_hours, "heavy": heavy, "denied": denied, "self_approval": self_approval,
        "repeated": repeated, "failed_verifications": failed_verifications,
        "business_hours": (start, end), **self_service,
    }


# Changes that hand the wallet to whoever holds the new factor: after a recovery, worth a look.
TAKEOVER_ACTIONS = ("wallet.reset_2fa", "wallet.reset_questions", "wallet.security_questions_set")


def self_service_exceptions(session: Session, cond) -> dict:
    """Self-service recovery worth a look (DESIGN.md section 5): many recoveries of one customer's
    wallet, recoveries of one wallet from many addresses, and a completed recovery followed soon by
    a 2FA or security-question change."""
    rules = policy.current()
    starts = and_(cond, AuditEvent.action == "recovery.start", AuditEvent.customer_ref.is_not(None))
    addresses_of = func.count(func.distinct(AuditEvent.source_ip))
    # One pass over the starts for both lists: (customer, recoveries, addresses).
    flagged = session.execute(
        select(AuditEvent.customer_ref, func.count(), addresses_of).where(starts).group_by(AuditEvent.customer_ref)
        .having((func.count() >= rules.review.repeated_recoveries) | (addresses_of >= rules.risk.recovery_sources))
        ).all()
    many = sorted(((ref, n, a) for ref, n, a in flagged if n >= rules.review.repeated_recoveries),
                  key=lambda r: -r[1])[:10]
    addresses = sorted(((ref, a, n) for ref, n, a in flagged if a >= rules.risk.recovery_sources),
                       key=lambda r: -r[1])[:10]
    completed = session.scalars(select(AuditEvent).where(
        cond, AuditEvent.action == "wallet.password_reset", AuditEvent.channel == "self_service")
        .order_by(AuditEvent.seq.desc()).limit(200)).all()
    followed = []
    window = timedelta(days=rules.review.recovery_followup_days)
    refs = {e.customer_ref for e in completed if e.customer_ref}
    if refs:
        changes = session.scalars(select(AuditEvent).where(
            AuditEvent.customer_ref.in_(refs), AuditEvent.action.in_(TAKEOVER_ACTIONS),
            AuditEvent.outcome == "success", AuditEvent.occurred_at >= min(e.occurred_at for e in completed))
            .order_by(AuditEvent.seq)).all()
        for recovered in completed:
            after = next((c for c in changes if c.customer_ref == recovered.customer_ref
                          and recovered.occurred_at <= c.occurred_at <= recovered.occurred_at + window), None)
            if after is not None:
                followed.append((recovered, after))
    return {"recoveries_many": many, "recoveries_addresses": addresses, "recoveries_followed": followed[:10],
            "recovery_followup_days": rules.review.recovery_followup_days}


def bar_chart_svg(series: dict[str, dict[str, int]], *, width: int = 640, height: int = 200,
                  outcome_words: dict[str, str] | None = None, title: str = "",
                  day_word: str = "") -> str:
    """Stacked bars per day (success, denied, failed), drawn on the server: no script, no CDN.
    ``outcome_words``: what a reader sees for each outcome (the page's labels; the code without).
    The chart is an image named ``title``, followed by the same numbers as a visually hidden table
    (its first column headed ``day_word``) for screen readers."""
    colours = {"success": "#3a8f5c", "denied": "#c0392b", "failed": "#d68910"}
    words = {outcome: _esc((outcome_words or {}).get(outcome, outcome)) for outcome in colours}
    days = list(series)
    peak = max([sum(v.values()) for v in series.values()] + [1])
    pad, bottom = 36, 24
    bar_w = min(40, max(4, (width - pad - 8) / max(len(days), 1) - 4))
    parts = [_svg_open(width, height, title)]
    for i in range(5):
        y = height - bottom - (height - bottom - 8) * i / 4
        parts.append(f'<line x1="{pad}" y1="{y:.1f}" x2="{width}" y2="{y:.1f}" stroke="#eef1f5"/>'
                     f'<text x="{pad - 4}" y="{y + 3:.1f}" text-anchor="end" font-size="9" fill="#5b6475">{peak * i // 4}</text>')
    for index, day in enumerate(days):
        x = pad + 4 + index * (bar_w + 4)
        y = height - bottom
        for outcome in ("success", "denied", "failed"):
            n = series[day].get(outcome, 0)
            h = (height - bottom - 8) * n / peak
            if n:
                parts.append(f'<rect x="{x:.1f}" y="{y - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                             f'fill="{colours[outcome]}"><title>{day} {words[outcome]}: {n}</title></rect>')
            y -= h
        if len(days) <= 16 or index % 2 == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 8}" text-anchor="middle" font-size="9" '
                         f'fill="#5b6475">{day[5:]}</text>')
    parts.append("</svg>")
    rows = [[day] + [series[day].get(outcome, 0) for outcome in colours] for day in days]
    parts.append(_hidden_table(title, [day_word] + list(words.values()), rows))
    return "".join(parts)


def hbar_svg(items: list[tuple[str, int]], *, width: int = 420, title: str = "",
             headers: tuple[str, str] = ("", "")) -> str:
    """Horizontal bars for a ranked list (actions, branches): an image named ``title``, followed by
    the same list as a visually hidden table with the two column ``headers`` for screen readers."""
    row = 20
    height = row * max(len(items), 1) + 6
    peak = max([n for _k, n in items] + [1])
    parts = [_svg_open(width, height, title)]
    for i, (label, n) in enumerate(items):
        w = (width - 200) * n / peak
        y = i * row + 4
        parts.append(f'<text x="0" y="{y + 12}" font-size="10" fill="#1d2433">{_esc(label)}</text>'
                     f'<rect x="150" y="{y}" width="{w:.1f}" height="14" fill="#b4161b" opacity="0.8"/>'
                     f'<text x="{154 + w:.1f}" y="{y + 11}" font-size="10" fill="#5b6475">{n}</text>')
    parts.append("</svg>")
    parts.append(_hidden_table(title, list(headers), [[label, n] for label, n in items]))
    return "".join(parts)


def _svg_open(width: int, height: int, title: str) -> str:
    """A chart's opening tag: an image with a name (aria-label, and <title> for a pointer's tooltip)."""
    name = _esc(title).replace('"', "&quot;") if title else ""
    label = f' aria-label="{name}"' if name else ""
    tooltip = f"<title>{name}</title>" if name else ""
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" class="chart"{label}>{tooltip}'


def _hidden_table(caption: str, headers: list[str], rows: list[list]) -> str:
    """What a chart shows, as a table only screen readers see (the chart's text alternative)."""
    head = "".join(f'<th scope="col">{_esc(h) if h else ""}</th>' for h in headers)
    body = "".join("<tr>" + f'<th scope="row">{_esc(r[0])}</th>' + "".join(f"<td>{v}</td>" for v in r[1:]) + "</tr>"
                   for r in rows)
    return (f'<table class="visually-hidden">{f"<caption>{_esc(caption)}</caption>" if caption else ""}'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _esc(text) -> str:
    return str(text or "-").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
