"""Writing and verifying the hash-chained audit trail (DESIGN.md section 4, docs/audit-chain.md).

A service calls :func:`record` inside its transaction. At COMMIT the transaction's events are
written as one ``audit_intake`` row (with an HMAC digest), in that transaction: the events exist
if and only if the change does. Writers never touch the chain head, so they do not wait on each
other's COMMIT. The sequencer (``sequencer.chain_pending``) then numbers the committed intake rows'
events gaplessly, chains them (chain version 2, ``console/audit_verifier.py``) and moves them into
``audit_event`` in one transaction, in batches. In the default "commit" mode the committing
process chains right after its own COMMIT, so a request's events are in ``audit_event`` when it
returns; in "background" mode a sequencer thread does it within a fraction of a second.
If the transaction rolls back, the pending events go with it.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import event, func, insert, select
from sqlalchemy.orm import Session, scoped_session

from .. import audit_verifier
from ..codes import OUTCOMES
from ..models.audit import GENESIS_HASH, AuditEvent, AuditIntake, ChainHead
from ..timeutil import utcnow
from .actor import Actor

CHAIN_VERSION = audit_verifier.CURRENT_VERSION
CHAINED_FIELDS = audit_verifier.FIELDS
_PENDING = "audit_pending"
_WROTE_INTAKE = "audit_wrote_intake"


def _json(value: Any) -> str | None:
    if value is None:
        return None
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    if not _encodable(text):
        raise ValueError(f"audit JSON holds a lone surrogate, which cannot be stored: {text!r:.80}")
    return text


def _encodable(text: str) -> bool:
    """False for text with a lone surrogate (UTF-8 cannot encode it; neither database stores it)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# The fields a caller's values reach (seq, prev_hash and chain_version are the chain's own;
# occurred_at is record()'s): the bounded text columns by their width, the 32-bit integers.
_COLUMNS = AuditEvent.__table__.c
_CALLERS_FIELDS = [name for name in CHAINED_FIELDS
                   if name not in ("seq", "occurred_at", "chain_version", "prev_hash")]
_TEXT_LIMITS = {name: _COLUMNS[name].type.length for name in _CALLERS_FIELDS
                if getattr(_COLUMNS[name].type, "length", None)}
_INT_FIELDS = tuple(name for name in _CALLERS_FIELDS if name in audit_verifier.INT_FIELDS)
_INT_RANGE = range(-2**31, 2**31)


def _check(row: dict) -> None:
    """Refuse, in the writer's own transaction, a value its column cannot hold.

    The sequencer chains every committed event in order: an event the database refused at that
    point (text too long for its column, a NUL, an integer out of range, a value of another type)
    would stop the chain for the whole bank. So it is refused here, where only the request that
    wrote it fails.
    """
    for name, limit in _TEXT_LIMITS.items():
        value = row[name]
        if value is None:
            continue
        if type(value) is not str or len(value) > limit or "\x00" in value or not _encodable(value):
            raise ValueError(f"audit field {name} must be text of at most {limit} characters, without NUL "
                             f"or a lone surrogate, not {value!r:.80}")
    for name in _INT_FIELDS:
        value = row[name]
        if value is not None and (type(value) is not int or value not in _INT_RANGE):
            raise ValueError(f"audit field {name} must be a 32-bit integer, not {value!r:.40}")


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
    """Queue an audit event in ``session``'s transaction; it is written to the intake at commit."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    if actor.interface == "api":
        details = {**(details or {}), "interface": "api"}
    row = {
        "occurred_at": utcnow(),
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
    _check(row)
    own = session() if isinstance(session, scoped_session) else session
    if not own.in_transaction():
        # Begin the session's transaction (no SQL yet) so that a rollback before any statement
        # still drops this event: SQLAlchemy fires no rollback event for a session never begun.
        own.begin()
    session.info.setdefault(_PENDING, []).append(row)
    return row


def record_refusal(session: Session, actor: Actor, refusal: dict) -> dict:
    """Record a refusal a service described (``DomainError.audit``) after its transaction was rolled back."""
    fields = dict(refusal)
    return record(session, actor, fields.pop("action"), **fields)


def canonical(row: dict) -> bytes:
    """The canonical bytes an event's hash covers (version 1: JSON; version 2: one line)."""
    if row["chain_version"] == 1:
        return audit_verifier.canonical_v1(row)
    if row["chain_version"] == 2:
        return audit_verifier.encode_v2(row)
    raise ValueError(f"unknown chain version {row['chain_version']}")


def event_hash(row: dict) -> str:
    return audit_verifier.event_hash(row)


# --- the intake: what a transaction hands to the sequencer ----------------------------


def _intake_key() -> bytes:
    from .. import crypto

    return _derive_intake_key(crypto.key("AUDIT_SIGNING_KEY"))


@lru_cache(maxsize=4)
def _derive_intake_key(signing_key: bytes) -> bytes:
    return hmac.new(signing_key, b"branch-console audit intake v1", hashlib.sha256).digest()


def intake_digest(events_json: str, key: bytes | None = None) -> str:
    """HMAC-SHA256 of an intake row's events: a row edited while it waits is refused, not chained."""
    return hmac.digest(key or _intake_key(), events_json.encode(), "sha256").hex()


def _encode_intake(pending: list[dict]) -> str:
    rows = [{**row, "occurred_at": audit_verifier.iso_utc(row["occurred_at"])} for row in pending]
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=False)


_INSERT_INTAKE = insert(AuditIntake.__table__).returning(AuditIntake.__table__.c.id)


def _write_intake(session: Session) -> None:
    """The transaction's events, as its last statement before COMMIT: one intake row."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    body = _encode_intake(pending)
    session.info[_WROTE_INTAKE] = session.execute(
        _INSERT_INTAKE, {"recorded_at": utcnow(), "events": body, "digest": intake_digest(body)}).scalar_one()


def _drop_pending(session: Session, *args) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_WROTE_INTAKE, None)


def install_hooks() -> None:
    if not event.contains(Session, "before_commit", _before_commit):
        event.listen(Session, "before_commit", _before_commit)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_soft_rollback", _drop_pending)


def _before_commit(session: Session) -> None:
    if session.info.get(_PENDING):
        session.flush()
        _write_intake(session)


def _after_commit(session: Session) -> None:
    intake_id = session.info.pop(_WROTE_INTAKE, None)
    if intake_id is not None:
        from . import sequencer

        sequencer.after_commit(session, intake_id)


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
    anchors: int = 0
    pending: int = 0  # intake rows (transactions) committed but not chained yet
    lag_seconds: float | None = None  # how long the oldest of them has waited


_KIND_REASONS = {
    "missing": "event {seq} is missing",
    "duplicate": "sequence number {seq} occurs twice (duplicate)",
    "link": "link to the previous event is broken (removed or reordered)",
    "content": "event content was changed",
}

# The fields as the database streams them in canonical order; ``hash`` last.
_COPY_COLUMNS = ", ".join(CHAINED_FIELDS) + ", hash"
PARALLEL_FROM = 200_000  # below this many events one process is faster than starting workers


def _copy_sql(lo: int, hi: int, *, ordered: bool = True) -> str:
    return (f"COPY (SELECT {_COPY_COLUMNS} FROM audit_event WHERE seq BETWEEN {int(lo)} AND {int(hi)}"
            + (" ORDER BY seq" if ordered else "") + ") TO STDOUT")


def _scan_copy_once(conn, lo: int, hi: int, want, prev_hash: str | None, ordered: bool):
    checker = audit_verifier.LineChecker(lo, prev_hash, want, ordered=ordered)
    with conn.cursor() as cur:
        cur.execute("SET LOCAL DateStyle = 'ISO, YMD'")  # the canonical form of occurred_at
        with cur.copy(_copy_sql(lo, hi, ordered=ordered)) as copy:
            # Read to the end even after a problem: a COPY left half-read leaves the connection busy.
            for lines in audit_verifier.split_lines(copy):
                if checker.problem is None:
                    checker.feed(lines)
    return checker


def _scan_copy(conn, lo: int, hi: int, want, prev_hash: str | None) -> audit_verifier.LineChecker:
    """The events lo..hi as the database stores them (no sort: that is sequence order unless rows
    were moved); read again in sequence order only if they are not, to name the problem exactly."""
    checker = _scan_copy_once(conn, lo, hi, want, prev_hash, False)
    if checker.problem is not None and checker.problem[1] == "unordered":
        checker = _scan_copy_once(conn, lo, hi, want, prev_hash, True)
    return checker


def _segment_worker(dsn: str, lo: int, hi: int, want) -> dict:
    """One segment, in a worker process with its own connection (``flask audit verify``).

    With PostgreSQL's ``psql`` at hand the rows come through it: the driver hands Python one row
    per call, psql writes the stream in large blocks that are split in C (measured: the segment
    checks about twice as fast); otherwise through the driver.
    """
    import shutil
    import subprocess

    from sqlalchemy.engine import make_url

    psql = shutil.which("psql")
    if psql is None:
        import psycopg

        with psycopg.connect(dsn, autocommit=False) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            checker = _scan_copy(conn, lo, hi, want, None)
    else:
        url = make_url(dsn)
        env = {**os.environ, "PGOPTIONS": "-c DateStyle=ISO,YMD -c default_transaction_read_only=on"}
        if url.password:
            env["PGPASSWORD"] = url.password
        target = url.set(password=None).render_as_string(hide_password=False)

        def run(ordered: bool) -> audit_verifier.LineChecker:
            checker = audit_verifier.LineChecker(lo, None, want, ordered=ordered)
            proc = subprocess.Popen([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target,
                                     "-c", _copy_sql(lo, hi, ordered=ordered).replace("\n", " ")],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            try:
                rest = b""
                while True:
                    block = proc.stdout.read(1 << 20)
                    if not block:
                        break
                    if checker.problem is not None:
                        continue  # drain
                    lines = (rest + block).split(b"\n")
                    rest = lines.pop()
                    checker.feed(lines)
                if rest and checker.problem is None:
                    checker.feed([rest])
            finally:
                error = proc.stderr.read()
                if proc.wait() != 0:
                    raise RuntimeError(f"psql failed: {error.decode(errors='replace').strip()}")
            return checker

        checker = run(False)
        if checker.problem is not None and checker.problem[1] == "unordered":
            checker = run(True)
    return {"expected": checker.expected, "count": checker.count, "problem": checker.problem,
            "first_prev": checker.first_prev, "last": checker.last_hash, "seen": checker.seen}


def _scan_sqlite(session: Session, want, top: int) -> audit_verifier.LineChecker:
    from ..models.audit import AuditEvent

    cols = [AuditEvent.__table__.c[name] for name in CHAINED_FIELDS + ("hash",)]
    checker = audit_verifier.LineChecker(1, GENESIS_HASH, want)
    last = None
    while True:
        query = select(*cols).where(AuditEvent.seq <= top).order_by(AuditEvent.seq).limit(5000)
        if last is not None:
            query = query.where(AuditEvent.seq > last)
        chunk = session.execute(query).mappings().all()
        if not chunk:
            return checker
        lines = [audit_verifier.encode_v2(row) + b"\t" + row["hash"].encode() for row in chunk]
        if not checker.feed(lines):
            return checker
        last = chunk[-1]["seq"]


def _whole(c: audit_verifier.LineChecker) -> dict:
    """A one-segment walk's result, as :func:`_scan` joins them."""
    return {"count": c.count, "problem": c.problem, "last": c.last_hash or GENESIS_HASH, "seen": c.seen,
            "expected": c.expected}


def _scan(session: Session, head_seq: int, want, workers: int) -> dict:
    """Walk every event in sequence order; the first problem and the hashes at ``want``."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return _whole(_scan_sqlite(session, want, head_seq))
    top = head_seq  # events chained after the head was read are not this verification's
    if workers <= 1 or top < PARALLEL_FROM:
        conn = session.connection().connection.driver_connection
        return _whole(_scan_copy(conn, 1, max(top, 1), want, GENESIS_HASH))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    dsn = bind.url.set(drivername="postgresql").render_as_string(hide_password=False)
    step = -(-top // workers)
    bounds = [(lo, min(top, lo + step - 1)) for lo in range(1, top + 1, step)]
    with ProcessPoolExecutor(len(bounds), mp_context=multiprocessing.get_context("fork")) as pool:
        parts = list(pool.map(_segment_worker, [dsn] * len(bounds), [b[0] for b in bounds],
                              [b[1] for b in bounds], [frozenset(want)] * len(bounds)))
    # Join the segments at their boundaries: each must start where the previous one ended.
    count, prev, seen = 0, GENESIS_HASH, {}
    for (lo, hi), part in zip(bounds, parts):
        seen.update(part["seen"])
        if part["first_prev"] is not None and part["first_prev"] != prev:
            return {"count": count, "problem": (lo, "link"), "last": prev, "seen": seen, "expected": lo}
        count += part["count"]
        if part["problem"] is not None:
            return {"count": count, "problem": part["problem"], "last": part["last"] or prev, "seen": seen,
                    "expected": part["expected"]}
        if part["expected"] != hi + 1 and hi != bounds[-1][1]:  # a short last segment is a cut tail
            return {"count": count, "problem": (part["expected"], "missing"), "last": part["last"] or prev,
                    "seen": seen, "expected": part["expected"]}
        prev = part["last"] or prev
    return {"count": count, "problem": None, "last": prev, "seen": seen, "expected": count + 1}


def record_verification(session: Session, actor: Actor, report: ChainReport) -> dict:
    """The audit event of a chain verification (the CLI and the auditor's page both write it)."""
    return record(session, actor, "audit.verify", outcome="success" if report.intact else "failed",
                  details={"intact": report.intact, "events": report.count, "anchors": report.anchors,
                           "first_bad_seq": report.first_bad_seq, "reason": report.reason,
                           "pending": report.pending})


def verify_and_record(session: Session, actor: Actor) -> ChainReport:
    """Verify the chain and record that it was verified, with the result (the auditor's page)."""
    report = verify_chain(session)
    record_verification(session, actor, report)
    return report


def verify_chain(session: Session, *, public_key=None, anchors=None, workers: int = 1) -> ChainReport:
    """Walk the chain; report the first sequence number changed, removed, duplicated, reordered or cut off.

    Every signed checkpoint is checked too, those in the database and the ``anchors`` an auditor
    holds outside it (checked with ``public_key``, the auditor's copy of the key): its signature,
    and that the event at its sequence number still has the hash it signed. So a chain cut short
    (head row included), or rewritten with every later hash recomputed, is caught, and deleting the
    checkpoint rows does not hide it. ``workers`` > 1 verifies segments in parallel processes
    (PostgreSQL, ``flask audit verify``) and joins them at their boundaries.
    """
    from . import checkpoints, sequencer

    from ..models.audit import AuditEvent

    # The head and the highest stored seq in one statement (one snapshot): a sequencer chaining
    # meanwhile moves both together, so only a row past the head that was put there is "beyond".
    head = session.execute(select(ChainHead.seq, ChainHead.hash, select(func.max(AuditEvent.seq)).scalar_subquery())
                           .where(ChainHead.id == 1)).first()
    head_seq, head_hash, max_seq = (head[0], head[1], head[2] or 0) if head else (0, GENESIS_HASH, 0)
    pending, lag = sequencer.backlog(session)

    def report(intact, count, bad=None, reason=None, signed=(), held=()):
        return ChainReport(intact, count, bad, reason, head_seq, head_hash, len(signed), len(held), pending, lag)

    signed = checkpoints.all_checkpoints(session)
    held = list(anchors or ())
    for cp in signed:
        if not checkpoints.signature_valid(cp, public_key):
            return report(False, 0, cp.seq, f"checkpoint {cp.id} has an invalid signature", signed, held)
    for anchor in held:
        if not checkpoints.anchor_valid(anchor, public_key):
            return report(False, 0, anchor["seq"],
                          f"the held checkpoint at seq {anchor['seq']} does not verify with the given public key",
                          signed, held)
    # Every signed statement, in sequence order, named as the auditor would name it.
    marks = sorted({(cp.seq, cp.hash, f"signed checkpoint {cp.id}") for cp in signed}
                   | {(a["seq"], a["hash"], f"held checkpoint at seq {a['seq']}") for a in held})
    scan = _scan(session, head_seq, {m[0] for m in marks}, workers)
    count = scan["count"]
    problems = []
    if scan["problem"] is not None:
        seq, kind = scan["problem"]
        problems.append((seq, 0, _KIND_REASONS[kind].format(seq=seq)))
    end = scan["problem"][0] - 1 if scan["problem"] is not None else count
    previous = 0
    for seq, signed_hash, name in marks:
        if seq > end:
            if scan["problem"] is None:
                problems.append((end + 1, 1, f"events {end + 1}..{seq} were cut off after {name}"))
            break
        if seq == 0:
            continue
        if scan["seen"].get(seq) != signed_hash:
            problems.append((previous + 1, 1, f"events between seq {previous + 1} and {seq} were rewritten "
                                                f"(they no longer match {name})"))
            break
        previous = seq
    stored = {(cp.seq, cp.hash) for cp in signed}
    for anchor in held:
        if (anchor["seq"], anchor["hash"]) not in stored:
            problems.append((anchor["seq"], 2, f"the checkpoint at seq {anchor['seq']} held outside the database "
                                                "is missing from it (checkpoint rows deleted)"))
            break
    if not problems and head_seq != count:
        problems.append((count + 1, 3, f"events {count + 1}..{head_seq} were cut off"))
    if max_seq > head_seq:
        problems.append((head_seq + 1, 3, f"events {head_seq + 1}..{max_seq} lie beyond the chain head"))
    if not problems and head_hash != scan["last"]:
        problems.append((count or None, 3, "chain head hash does not match the last event"))
    if problems:
        # An event problem first; a checkpoint row missing from the database ranks after every one of them
        # (it is where the trail was covered up, not where it was changed).
        seq, _rank, reason = min(problems, key=lambda p: (p[1] == 2, p[0] or 0, p[1]))
        return report(False, count, seq, reason, signed, held)
    return report(True, count, signed=signed, held=held)
