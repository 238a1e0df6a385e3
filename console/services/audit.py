"""Writing and verifying the hash-chained audit trail (DESIGN.md section 4).

A service calls :func:`record` inside its transaction. The event is chained and
inserted by a ``before_commit`` hook: the chain-head row is updated as the last
statements before COMMIT, so its row lock is held only through the commit and
concurrent writers are serialised on it (never on "the newest event row").
If the transaction rolls back, the pending events go with it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import event, insert, select, update
from sqlalchemy.orm import Session

from ..codes import OUTCOMES
from ..models.audit import GENESIS_HASH, AuditEvent, ChainHead
from ..timeutil import utcnow
from .actor import Actor

CHAIN_VERSION = 1
_PENDING = "audit_pending"

# Fields covered by the hash, in the canonical form of version 1.
CHAINED_FIELDS = (
    "seq", "occurred_at", "actor_type", "actor_id", "actor_employee_no", "actor_role",
    "actor_branch", "source_ip", "session_id", "channel", "action", "outcome", "reason_code",
    "customer_ref", "case_ref", "verification_id", "approval_id", "receipt_no",
    "before_state", "after_state", "details", "chain_version", "prev_hash",
)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    outcome: str = "success",
    reason_code: str | None = None,
    customer_ref: str | None = None,
    case_ref: str | None = None,
    verification_id: int | None = None,
    approval_id: int | None = None,
    receipt_no: str | None = None,
    before: dict | None = None,
    after: dict | None = None,
    details: dict | None = None,
    channel: str | None = None,
) -> dict:
    """Queue an audit event in ``session``'s transaction; it is chained at commit."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    if actor.interface == "api":
        details = {**(details or {}), "interface": "api"}
    row = {
        "occurred_at": utcnow(),  # replaced by the time it is chained, at commit
        "actor_type": actor.kind,
        "actor_id": actor.staff_id,
        "actor_employee_no": actor.employee_no,
        "actor_role": actor.role,
        "actor_branch": actor.branch_code,
        "source_ip": actor.source_ip,
        "session_id": actor.session_id,
        "channel": channel or actor.channel,
        "action": action,
        "outcome": outcome,
        "reason_code": reason_code,
        "customer_ref": customer_ref,
        "case_ref": case_ref,
        "verification_id": verification_id,
        "approval_id": approval_id,
        "receipt_no": receipt_no,
        "before_state": _json(before),
        "after_state": _json(after),
        "details": _json(details),
        "chain_version": CHAIN_VERSION,
    }
    session.info.setdefault(_PENDING, []).append(row)
    return row


def record_refusal(session: Session, actor: Actor, refusal: dict) -> dict:
    """Record a refusal a service described (``DomainError.audit``) after its transaction was rolled back."""
    fields = dict(refusal)
    return record(session, actor, fields.pop("action"), **fields)


def _iso(value) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(row: dict) -> bytes:
    """Canonical JSON (version tag, sorted keys, compact) of the hashed fields."""
    version = row["chain_version"]
    if version != 1:
        raise ValueError(f"unknown chain version {version}")
    doc = {k: row[k] for k in CHAINED_FIELDS}
    doc["occurred_at"] = _iso(row["occurred_at"])
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(prev_hash: str, row: dict) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(row)).hexdigest()


def _append_pending(session: Session) -> None:
    """Chain the transaction's events as its last statements; each carries the time it was chained.

    ``occurred_at`` is taken while the chain-head row is locked, and never earlier than the head's
    last ``updated_at``, so it never runs backwards against ``seq`` (not even across nodes whose
    clocks differ slightly). The event is chained within milliseconds of the change it records,
    in the same transaction.
    """
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    head_seq, prev, last = session.execute(
        update(ChainHead)
        .where(ChainHead.id == 1)
        .values(seq=ChainHead.seq + len(pending))
        .returning(ChainHead.seq, ChainHead.hash, ChainHead.updated_at)
        .execution_options(synchronize_session=False)
    ).one()
    now = utcnow()
    if last is not None and last > now:
        now = last
    seq = head_seq - len(pending)
    for row in pending:
        seq += 1
        row["seq"] = seq
        row["occurred_at"] = now
        row["prev_hash"] = prev
        row["hash"] = prev = event_hash(prev, row)
    session.execute(insert(AuditEvent.__table__), pending)
    session.execute(
        update(ChainHead).where(ChainHead.id == 1).values(hash=prev, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def _drop_pending(session: Session, *args) -> None:
    session.info.pop(_PENDING, None)


def install_hooks() -> None:
    if not event.contains(Session, "before_commit", _before_commit):
        event.listen(Session, "before_commit", _before_commit)
        event.listen(Session, "after_soft_rollback", _drop_pending)


def _before_commit(session: Session) -> None:
    if session.info.get(_PENDING):
        session.flush()
        _append_pending(session)


# --- verification -----------------------------------------------------------------


@dataclass
class ChainReport:
    intact: bool
    count: int
    first_bad_seq: int | None = None
    reason: str | None = None
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    checkpoints: int = 0


def _rows(session: Session, batch: int = 2000) -> Iterable[dict]:
    cols = [AuditEvent.__table__.c[name] for name in CHAINED_FIELDS + ("hash",)]
    last = 0
    while True:
        chunk = session.execute(
            select(*cols).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
        ).mappings().all()
        if not chunk:
            return
        yield from chunk
        last = chunk[-1]["seq"]


def record_verification(session: Session, actor: Actor, report: ChainReport) -> dict:
    """The audit event of a chain verification (the CLI and the auditor's page both write it)."""
    return record(session, actor, "audit.verify", outcome="success" if report.intact else "failed",
                  details={"intact": report.intact, "events": report.count,
                           "first_bad_seq": report.first_bad_seq, "reason": report.reason})


def verify_and_record(session: Session, actor: Actor) -> ChainReport:
    """Verify the chain and record that it was verified, with the result (the auditor's page)."""
    report = verify_chain(session)
    record_verification(session, actor, report)
    return report


def verify_chain(session: Session, *, public_key=None) -> ChainReport:
    """Walk the chain; report the first sequence number changed, removed, reordered or cut off.

    Every signed checkpoint is checked too: its signature, and that the event at its sequence
    number still has the hash it signed, so a chain cut short (head row included) is caught.
    """
    from . import checkpoints

    head = session.get(ChainHead, 1)
    head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
    signed = checkpoints.all_checkpoints(session)
    for cp in signed:
        if not checkpoints.signature_valid(cp, public_key):
            return ChainReport(False, 0, cp.seq, f"checkpoint {cp.id} has an invalid signature", head_seq, head_hash)
    at_seq = {}
    for cp in signed:
        at_seq.setdefault(cp.seq, []).append(cp)
    expected, prev, count = 1, GENESIS_HASH, 0
    for row in _rows(session):
        seq = row["seq"]
        if seq != expected:
            return ChainReport(False, count, expected, f"event {expected} is missing", head_seq, head_hash)
        if row["prev_hash"] != prev:
            return ChainReport(False, count, seq, "link to the previous event is broken (removed or reordered)",
                               head_seq, head_hash)
        if event_hash(prev, dict(row)) != row["hash"]:
            return ChainReport(False, count, seq, "event content was changed", head_seq, head_hash)
        for cp in at_seq.get(seq, ()):
            if cp.hash != row["hash"]:
                return ChainReport(False, count, seq, f"event differs from signed checkpoint {cp.id}",
                                   head_seq, head_hash)
        prev = row["hash"]
        expected += 1
        count += 1
    beyond = [cp for cp in signed if cp.seq > count]
    if beyond:
        return ChainReport(False, count, count + 1,
                           f"events {count + 1}..{beyond[-1].seq} were cut off after signed checkpoint {beyond[-1].id}",
                           head_seq, head_hash)
    if head_seq != count:
        if head_seq > count:
            return ChainReport(False, count, count + 1,
                               f"events {count + 1}..{head_seq} were cut off", head_seq, head_hash)
        return ChainReport(False, count, head_seq + 1, "events beyond the chain head", head_seq, head_hash)
    if head_hash != prev:
        return ChainReport(False, count, count or None, "chain head hash does not match the last event",
                           head_seq, head_hash)
    return ChainReport(True, count, head_seq=head_seq, head_hash=head_hash, checkpoints=len(signed))
