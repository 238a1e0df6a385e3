"""The sequencer: numbers, chains and files the audit events that transactions committed.

Writers put their events in ``audit_intake`` (one row per transaction, in that transaction; see
``audit.record``). :func:`chain_pending` takes the committed intake rows in id order, under the
chain-head row's lock: it checks each row's digest, gives its events the next gapless sequence
numbers, chains them (chain version 2), inserts them into ``audit_event``, deletes the intake rows
and moves the head, all in ONE transaction. A crash or a dropped connection anywhere in it rolls
all of it back and the rows wait for the next run; nothing is numbered twice or skipped.

The head row's lock is the election: one sequencer at a time across nodes. A sequencer that is
killed releases it with its connection, and the next one (any node, any mode) takes over.

Modes (``AUDIT_CHAIN_MODE``): "commit", the committing process chains right after its own COMMIT
(waiting for a sequencer that is busy), so a request's events are in ``audit_event`` when it
returns; "background", writers don't wait: a thread in every process (and ``flask audit
sequencer``, if run) chains every ``AUDIT_SEQUENCER_INTERVAL`` seconds and whenever a local commit
wakes it. See docs/audit-chain.md for the argument.

The sequencer commits: like the SMS worker it is a worker, not a service inside a request's
transaction (``boundary.commit`` is the requests' single commit; this is the chain's).
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from datetime import datetime
from functools import lru_cache

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from .. import audit_verifier, faults
from ..models.audit import AuditEvent, AuditIntake, ChainHead
from ..timeutil import utcnow
from . import audit

log = logging.getLogger(__name__)

BATCH_ROWS = 500  # intake rows per chaining transaction


def _lock_head(session: Session, wait: bool):
    """The head row, locked for this transaction; None if another sequencer holds it (no wait)."""
    query = select(ChainHead.seq, ChainHead.hash, ChainHead.updated_at).where(ChainHead.id == 1)
    if session.get_bind().dialect.name == "sqlite":
        # Take SQLite's write lock first: a read that later upgrades could fail with "busy".
        session.execute(text("UPDATE audit_chain_head SET seq = seq WHERE id = 1"))
        return session.execute(query).first()
    return session.execute(query.with_for_update(skip_locked=not wait)).first()


@lru_cache(maxsize=1)
def _recordset_insert():
    """One INSERT for a whole batch on PostgreSQL: the events as one JSON array, unpacked by
    ``json_to_recordset``. An executemany is a statement per event there, and each statement fires
    the sequence guard's statement trigger (console/models/audit_partitions.py) once more."""
    table = AuditEvent.__table__
    columns = audit.CHAINED_FIELDS + ("hash",)
    types = ", ".join(f"{name} {table.c[name].type.compile(dialect=postgresql.dialect())}" for name in columns)
    names = ", ".join(columns)
    return text(f"INSERT INTO audit_event ({names}) SELECT {names} "
                f"FROM json_to_recordset(CAST(:rows AS json)) AS r({types})")


def _insert_events(session: Session, events: list[dict]) -> None:
    if session.get_bind().dialect.name != "postgresql":
        session.execute(insert(AuditEvent.__table__), events)
        return
    # The column holds naive UTC (models/types.py UTCDateTime), exact to the microsecond.
    rows = [{**event, "occurred_at": audit_verifier._as_utc(event["occurred_at"]).isoformat()} for event in events]
    session.execute(_recordset_insert(), {"rows": json.dumps(rows, ensure_ascii=False, separators=(",", ":"))})


_DELETE_TAKEN = text("DELETE FROM audit_intake WHERE id = ANY(CAST(:ids AS bigint[]))")


def _delete_taken(session: Session, taken: list[int]) -> None:
    """Delete the intake rows just chained. On PostgreSQL the ids go as one array parameter: the
    statement's text is the same for every batch (an IN list has a parameter per row, so a new
    statement for every batch size, for the driver to parse and the server to plan)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_DELETE_TAKEN, {"ids": taken})
    else:
        session.execute(delete(AuditIntake).where(AuditIntake.id.in_(taken)))


def _chain_batch(bind, *, wait: bool, limit: int) -> tuple[int, int]:
    """One transaction: (events chained, intake rows taken); taken is -1 if another sequencer had the head."""
    with Session(bind=bind, expire_on_commit=False) as session:
        head = _lock_head(session, wait)
        if head is None:
            session.rollback()
            return 0, -1
        rows = session.execute(
            select(AuditIntake.id, AuditIntake.events, AuditIntake.digest).order_by(AuditIntake.id).limit(limit)
        ).all()
        if not rows:
            session.rollback()
            return 0, 0
        key = audit._intake_key()
        seq, prev = head.seq, head.hash
        # An event's time is when its transaction recorded it, but never earlier than the event
        # chained before it: time never runs backwards against seq, not even across nodes whose
        # clocks differ slightly or for a long transaction that commits late.
        last = head.updated_at
        events, taken = [], []
        for row in rows:
            if not hmac.compare_digest(audit.intake_digest(row.events, key), row.digest):
                log.error("audit intake row %s fails its digest: left in the intake, not chained", row.id)
                continue
            for event in json.loads(row.events):
                at = datetime.fromisoformat(event["occurred_at"])
                if last is not None and at < last:
                    at = last
                event["occurred_at"] = last = at
                seq += 1
                event["seq"] = seq
                event["prev_hash"] = prev
                event["hash"] = prev = audit_verifier.event_hash(event)
                events.append(event)
            taken.append(row.id)
        if not taken:
            session.rollback()
            return 0, len(rows)
        faults.point("sequencer.numbered")
        _insert_events(session, events)
        faults.point("sequencer.inserted")
        _delete_taken(session, taken)
        session.execute(update(ChainHead).where(ChainHead.id == 1)
                        .values(seq=seq, hash=prev, updated_at=last)
                        .execution_options(synchronize_session=False))
        faults.point("sequencer.committing")
        session.commit()
        return len(events), len(rows)


def chain_pending(bind, *, wait: bool = True, limit: int = BATCH_ROWS) -> int:
    """Chain every committed intake row; the number of events chained (-1: another sequencer had
    the head and ``wait`` was False, so nothing was looked at).

    ``wait``: wait for a sequencer that is busy (then chain what it left), rather than return -1.
    """
    total = 0
    while True:
        chained, taken = _chain_batch(bind, wait=wait, limit=limit)
        if taken < 0:
            return -1 if total == 0 else total
        total += chained
        if taken < limit:
            break
    if total:
        _after_chaining(bind)
    return total


def _after_chaining(bind) -> None:
    """Checkpoints taken automatically (every N events or T seconds), after a batch was chained."""
    from . import checkpoints

    auto = getattr(checkpoints, "auto_checkpoint", None)
    if auto is None:
        return
    try:
        with Session(bind=bind) as session:
            if auto(session) is not None:
                session.commit()
    except Exception:  # the chain is committed; a checkpoint missed now is taken next time
        log.exception("automatic audit checkpoint failed")


def backlog(session: Session) -> tuple[int, float | None]:
    """(intake rows not yet chained, seconds since the oldest of them was recorded)."""
    count, oldest = session.execute(select(func.count(), func.min(AuditIntake.recorded_at))).one()
    if not count:
        return 0, None
    return count, waited(oldest)


def waited(recorded_at: datetime) -> float:
    """Seconds since an intake row was recorded (as read: the column type returns aware UTC)."""
    return max(0.0, (utcnow() - recorded_at).total_seconds())


# --- when to chain -------------------------------------------------------------------

_wake = threading.Event()
_thread: threading.Thread | None = None
_thread_pid: int | None = None
_thread_lock = threading.Lock()


def _mode() -> str:
    from flask import has_app_context

    from .. import policy

    return policy.current().audit.chain_mode if has_app_context() else "commit"


COMMIT_WAIT_SECONDS = 10  # then the request returns anyway; the next run chains its events


def after_commit(session: Session, intake_id: int) -> None:
    """A transaction committed intake row ``intake_id``: chain it now ("commit") or wake the thread.

    In "commit" mode the writer chains what is waiting unless another sequencer is at it (no
    queue of writers on the head's lock: one chains a batch, the others see their row gone).
    """
    if _mode() == "background":
        _wake.set()
        return
    bind = session.get_bind()
    deadline = time.monotonic() + COMMIT_WAIT_SECONDS
    try:
        while True:
            if chain_pending(bind, wait=False) >= 0:
                return  # this process had the head and read the intake after its own COMMIT
            # Another sequencer has the head: its batch likely holds this row. Poll cheaply for a
            # while before trying again (a row committed after its snapshot waits for the next).
            for _ in range(5):
                if not _waiting(bind, intake_id):
                    return
                if time.monotonic() > deadline:
                    return
                time.sleep(0.002)
    except Exception:  # the change and its events are committed; the next run chains them
        log.exception("chaining after commit failed; the events wait in the intake")


def catch_up(session: Session) -> None:
    """Before a read that must see every event committed so far (a receipt pins the case's last
    event): in background mode on PostgreSQL, chain what is waiting first. (In "commit" mode every
    earlier request already did; SQLite serialises writers, and its caller holds the write lock.)"""
    if _mode() != "background" or session.get_bind().dialect.name == "sqlite":
        return
    chain_pending(session.get_bind(), wait=True)


def _waiting(bind, intake_id: int) -> bool:
    with Session(bind=bind) as session:
        return session.execute(select(AuditIntake.id).where(AuditIntake.id == intake_id)).first() is not None


def run(bind, *, interval: float, stop: threading.Event | None = None, wake: threading.Event | None = None) -> None:
    """Chain forever: every ``interval`` seconds, or sooner when woken while idle. Survives
    database outages.

    After a run that chained something the next one starts one interval after it started, woken
    or not: under load the events of an interval are chained as one batch (a transaction's fixed
    cost, its statements, COMMIT and checkpoint check, paid once per interval rather than once per
    commit that woke it), and a run that took longer than the interval is followed at once. Idle,
    a commit wakes the sequencer at once (within an interval of a run that chained something, it
    waits for the rest of that interval). This is per process: each worker's thread keeps its own
    cadence.
    """
    stop = stop or threading.Event()
    wake = wake or _wake
    idle_check = time.monotonic()
    while not stop.is_set():
        chained, started = 0, time.monotonic()
        try:
            chained = chain_pending(bind, wait=False)
            if chained > 0:
                idle_check = time.monotonic()
            elif time.monotonic() - idle_check >= 1.0:
                # The time rule of automatic checkpoints holds when the bank goes quiet too.
                idle_check = time.monotonic()
                _after_chaining(bind)
        except Exception:
            log.exception("audit sequencer run failed; retrying")
            stop.wait(min(5.0, interval * 10))
        if chained > 0:
            stop.wait(max(0.0, started + interval - time.monotonic()))
        else:
            wake.wait(interval)
        wake.clear()


def ensure_background(app) -> None:
    """Start this process's sequencer thread (background mode), once per process (after a fork too)."""
    global _thread, _thread_pid
    from .. import policy

    if policy.current().audit.chain_mode != "background":
        return
    pid = os.getpid()
    if _thread_pid == pid and _thread is not None and _thread.is_alive():
        return
    with _thread_lock:
        if _thread_pid == pid and _thread is not None and _thread.is_alive():
            return
        interval = policy.current().audit.sequencer_interval_seconds

        def target():
            with app.app_context():
                from ..extensions import db

                run(db.engine, interval=interval)

        _thread = threading.Thread(target=target, name="audit-sequencer", daemon=True)
        _thread_pid = pid
        _thread.start()


def init_app(app) -> None:
    """In background mode each process starts its sequencer thread with its first request (after
    a fork). The mode and interval are checked with the rest of the policy (console/policy.py)."""
    app.before_request(lambda: ensure_background(app))


def wait_chained(bind, timeout: float = 5.0) -> bool:
    """Until the intake is empty (tests, CLI): True if it emptied within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(bind=bind) as session:
            if not session.execute(select(func.count()).select_from(AuditIntake)).scalar():
                return True
        time.sleep(0.02)
    return False
