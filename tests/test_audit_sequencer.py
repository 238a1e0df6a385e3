"""The audit sequencer: appends that don't wait on each other, chained in batches (#14 part 1).

Writers put their events in the intake in their own transaction; the sequencer numbers and chains
them. Proved here: nothing is chained twice or skipped when the sequencer dies between any two of
its statements; an intake row edited while it waits is refused; the database streams events in
exactly the canonical form the chain hashes (COPY); parallel verification joins its segments and
still names the first bad sequence number; and two nodes writing under load, with the sequencer
killed mid-run, leave a gapless intact chain holding every committed event exactly once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from console import audit_verifier
from console.extensions import db
from console.models.audit import AuditEvent, AuditIntake, ChainHead
from console.services import audit, sequencer
from console.services.actor import Actor

from .conftest import audit_events
from .faults.crash import Crash, crash_before_statement

ROOT = Path(__file__).resolve().parent.parent
NASTY = "tab\there, newline\nthere, back\\slash, \\N, bell\x07, cr\r, 中文 «», quote \" '"


@pytest.fixture
def background(app):
    """Writers don't chain: the events wait in the intake until a test runs the sequencer."""
    app.config["AUDIT_CHAIN_MODE"] = "background"
    yield app
    app.config["AUDIT_CHAIN_MODE"] = "commit"


def _commit_events(n: int, *, per_txn: int = 1, **details) -> None:
    for i in range(n):
        for j in range(per_txn):
            audit.record(db.session, Actor.system(), "test.event", details={"i": i, "j": j, **details})
        db.session.commit()


def _state():
    db.session.expire_all()
    head = db.session.get(ChainHead, 1)
    state = (db.session.scalar(select(func.count()).select_from(AuditEvent)),
             db.session.scalar(select(func.count()).select_from(AuditIntake)), head.seq, head.hash)
    db.session.rollback()  # end the read (SQLite: let the sequencer's connection write)
    return state


def _verify(**kwargs):
    report = audit.verify_chain(db.session, **kwargs)
    db.session.rollback()
    return report


def test_writers_leave_events_in_the_intake_and_the_sequencer_chains_them(background):
    _commit_events(3, per_txn=2)
    events, intake, head_seq, _ = _state()
    assert (events, intake, head_seq) == (0, 3, 0)
    report = _verify()
    assert report.intact and report.pending == 3 and report.lag_seconds is not None and report.lag_seconds >= 0
    assert sequencer.chain_pending(db.engine) == 6
    chained = audit_events()
    assert [e.seq for e in chained] == [1, 2, 3, 4, 5, 6]
    assert [json.loads(e.details)["i"] for e in chained] == [0, 0, 1, 1, 2, 2]  # a transaction's events stay together
    report = _verify()
    assert report.intact and report.count == 6 and report.pending == 0 and report.lag_seconds is None


def test_commit_mode_chains_before_the_commit_returns(app):
    _commit_events(2)
    assert _state()[:3] == (2, 0, 2)


def test_a_rolled_back_transaction_leaves_nothing(background):
    audit.record(db.session, Actor.system(), "test.event")
    db.session.rollback()
    db.session.commit()
    assert _state()[:3] == (0, 0, 0)


@pytest.mark.parametrize("field, value", [
    ("reason_code", "x" * 33),  # longer than its column (PostgreSQL would refuse it when chaining)
    ("customer_ref", "C0001\x00"),  # PostgreSQL text cannot hold NUL
    ("case_ref", "\ud800"),  # a lone surrogate cannot be encoded
    ("receipt_no", 12345),  # not text
    ("verification_id", 2**31),  # past a 32-bit integer
    ("approval_id", 1.5),
    ("approval_id", True),
    ("details", {"note": "\udfff"}),
])
def test_a_value_its_column_cannot_hold_is_refused_when_recorded_not_when_chained(background, field, value):
    """One event the sequencer could not insert would stop the chain for everyone: it is refused in
    the writer's own call, and the chain goes on."""
    with pytest.raises(ValueError):
        audit.record(db.session, Actor.system(), "test.event", **{field: value})
    db.session.rollback()
    audit.record(db.session, Actor.system(), "test.event", customer_ref="C" * 32, approval_id=2**31 - 1)
    db.session.commit()
    assert sequencer.chain_pending(db.engine) == 1
    assert _state()[:3] == (1, 0, 1)
    assert _verify().intact


def test_a_client_address_longer_than_its_column_is_kept_to_its_first_64_characters(background):
    """Behind a proxy configured with too many hops the client chooses X-Forwarded-For: the action
    is still recorded (not refused), with the address cut to the column's width."""
    chosen = "203.0.113.7, " + "x" * 100
    actor = Actor(kind="staff", staff_id=1, employee_no="T1001", role="teller", source_ip=chosen)
    audit.record(db.session, actor, "test.event")
    db.session.commit()
    assert sequencer.chain_pending(db.engine) == 1
    assert audit_events("test.event")[0].source_ip == chosen[:64]
    assert _verify().intact


def test_text_that_fills_its_columns_chains_and_verifies(background):
    """Tabs, newlines, backslashes, emoji and Chinese in the top-level columns and in the JSON, at
    their columns' full length, go through the intake and the batch insert unchanged."""
    fields = {name: text.ljust(32, "码") for name, text in (
        ("reason_code", "原因\t😀\n\\N"), ("customer_ref", "客户\r\n😀\x07"), ("case_ref", "\\" * 32),
        ("receipt_no", "😀"))}
    audit.record(db.session, Actor.system(), "test.nasty", details={"text": NASTY, "emoji": "😀"}, **fields)
    db.session.commit()
    assert sequencer.chain_pending(db.engine) == 1
    event = audit_events("test.nasty")[0]
    assert {name: getattr(event, name) for name in fields} == fields
    assert json.loads(event.details) == {"text": NASTY, "emoji": "😀"}
    assert _verify().intact


def test_the_sequencer_dying_between_any_two_statements_chains_nothing_twice_and_nothing_lost(background, backend):
    _commit_events(4, per_txn=2)
    db.session.remove()
    before = _state()
    assert before[:3] == (0, 4, 0)
    # Crash before the 1st, 2nd, ... statement of a run until one completes: every run either
    # changed nothing or chained everything, exactly once (a crash after its COMMIT, e.g. in the
    # automatic checkpoint that follows, leaves the chain complete).
    n, untouched = 1, 0
    while True:
        crashed = False
        with crash_before_statement(db.engine, n):
            try:
                sequencer.chain_pending(db.engine)
            except Crash:
                crashed = True
        db.session.remove()
        state = _state()
        if state == before:
            untouched += 1
        else:
            assert state[:3] == (8, 0, 8), f"a crash before statement {n} left a partial chain: {state}"
        if not crashed:
            break
        n += 1
    assert untouched >= 5  # lock, read, insert, delete, head move (and the COMMIT) each crashed on
    assert _state()[:3] == (8, 0, 8)
    assert sequencer.chain_pending(db.engine) == 0
    report = _verify()
    assert report.intact and report.count == 8


@pytest.mark.parametrize("point", ["sequencer.numbered", "sequencer.inserted", "sequencer.committing"])
def test_an_exception_inside_the_chaining_transaction_rolls_all_of_it_back(background, point):
    from console import faults

    _commit_events(2)
    before = _state()

    def boom(name):
        raise RuntimeError(f"connection lost at {name}")

    with faults.installed(point, boom):
        with pytest.raises(RuntimeError):
            sequencer.chain_pending(db.engine)
    assert _state() == before
    assert sequencer.chain_pending(db.engine) == 2
    assert _verify().intact


def test_an_intake_row_edited_while_it_waits_is_refused_not_chained(background, caplog):
    _commit_events(1, who="first")
    _commit_events(1, who="second")
    first = db.session.scalar(select(AuditIntake.id).order_by(AuditIntake.id))
    forged = db.session.get(AuditIntake, first).events.replace("first", "forged")
    db.session.execute(text("UPDATE audit_intake SET events = :e WHERE id = :i"), {"e": forged, "i": first})
    db.session.commit()
    assert sequencer.chain_pending(db.engine) == 1
    assert [json.loads(e.details)["who"] for e in audit_events()] == ["second"]
    assert "fails its digest" in caplog.text
    report = _verify()
    assert report.intact and report.pending == 1  # visible: left waiting, never chained


def test_the_canonical_line_round_trips_and_hashes_both_versions(app):
    audit.record(db.session, Actor.system(), "test.nasty", reason_code=None, details={"text": NASTY},
                 customer_ref="C\t1")
    db.session.commit()
    event = audit_events("test.nasty")[0]
    row = {k: getattr(event, k) for k in audit.CHAINED_FIELDS}
    line = audit_verifier.encode_v2(row)
    assert b"\n" not in line and line.count(b"\t") == len(audit.CHAINED_FIELDS) - 1
    decoded = audit_verifier.decode_v2(line)
    assert decoded == {**row, "occurred_at": audit_verifier.pg_time(row["occurred_at"])}
    assert audit_verifier.event_hash(row) == event.hash
    assert _verify().intact


@pytest.mark.postgres_only
def test_postgresql_streams_exactly_the_canonical_line(app):
    audit.record(db.session, Actor.system(), "test.nasty", details={"text": NASTY}, customer_ref="C\\1\n")
    db.session.commit()
    event = audit_events("test.nasty")[0]
    row = {k: getattr(event, k) for k in audit.CHAINED_FIELDS}
    conn = db.session.connection().connection.driver_connection
    with conn.cursor() as cur, cur.copy(audit._copy_sql(event.seq, event.seq)) as copy:
        streamed = b"".join(bytes(chunk) for chunk in copy)
    assert streamed == audit_verifier.encode_v2(row) + b"\t" + event.hash.encode() + b"\n"


@pytest.mark.postgres_only
@pytest.mark.parametrize("tamper, first_bad, reason", [
    (None, None, None),
    # A row moved in storage (deleted and written back unchanged) is out of storage order, not
    # tampered: the fast unsorted read notices and reads again in sequence order.
    ("WITH moved AS (DELETE FROM audit_event WHERE seq = 3 RETURNING *) INSERT INTO audit_event SELECT * FROM moved",
     None, None),
    ("UPDATE audit_event SET outcome = 'failed' WHERE seq = 7", 7, "event content was changed"),
    ("UPDATE audit_event SET outcome = 'failed' WHERE seq = 8", 8, "event content was changed"),
    ("DELETE FROM audit_event WHERE seq = 8", 8, "event 8 is missing"),
    ("DELETE FROM audit_event WHERE seq = 9", 9, "event 9 is missing"),
    ("DELETE FROM audit_event WHERE seq = 15", 15, "events 15..15 were cut off"),
    ("INSERT INTO audit_event SELECT * FROM audit_event WHERE seq = 7", 7, "sequence number 7 occurs twice"),
])
def test_parallel_verification_joins_its_segments_and_names_the_first_bad_seq(app, monkeypatch, tamper, first_bad,
                                                                               reason):
    """Two worker processes take seq 1..8 and 9..15 (the join at 8|9 is where a cut hides)."""
    _commit_events(15)
    monkeypatch.setattr(audit, "PARALLEL_FROM", 1)
    if tamper:
        db.session.execute(text("ALTER TABLE audit_event DISABLE TRIGGER USER"))
        db.session.execute(text("ALTER TABLE audit_event DROP CONSTRAINT IF EXISTS pk_audit_event"))
        db.session.execute(text(tamper))
        db.session.commit()
    report = _verify(workers=2)
    assert report.intact is (first_bad is None)
    assert report.first_bad_seq == first_bad
    if reason:
        assert report.reason.startswith(reason)
    single = _verify(workers=1)
    assert (single.intact, single.first_bad_seq, single.reason) == (report.intact, report.first_bad_seq, report.reason)


# --- two nodes under load, the sequencer killed mid-run -----------------------------------------

NODE_SCRIPT = r'''
import json, os, sys, threading, time
sys.path.insert(0, os.environ["ROOT"])
from console import create_app, faults
from console.extensions import db
from console.services import audit, sequencer
from console.services.actor import Actor

url, node, writes, threads, role = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
app = create_app("testing", {"DATABASE_URL": url, "AUDIT_CHAIN_MODE": "background",
                             "AUDIT_SEQUENCER_INTERVAL": 0.05})


def wait_for(path):
    deadline = time.monotonic() + 90
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(f"{node}: gave up waiting for {path}")
        time.sleep(0.01)


if role == "sequencer-dies":
    count = {"n": 0}
    def die(name):
        count["n"] += 1
        if count["n"] >= int(os.environ["DIE_AFTER"]):
            os._exit(9)  # killed while it holds the head lock, events inserted, nothing committed
    faults.install("sequencer.inserted", die)
    open(os.environ["READY_FILE"], "w").close()
    with app.app_context():
        sequencer.run(db.engine, interval=0.02)
    sys.exit(0)
# Until the doomed sequencer is dead it is the only one, and half of every writer's writes wait
# for its death: it is certainly chaining this load when it dies, and the nodes' own sequencers
# take the head over from a holder that died mid-transaction.
wait_for(os.environ["READY_FILE"])
out = open(os.environ["CONFIRM_FILE"], "a", buffering=1)
lock = threading.Lock()
def writer(t):
    with app.app_context():
        for i in range(writes):
            if i == writes // 2:
                wait_for(os.environ["DEAD_FILE"])
            audit.record(db.session, Actor.system(), "test.load", details={"node": node, "t": t, "i": i})
            audit.record(db.session, Actor.system(), "test.load.second", details={"node": node, "t": t, "i": i})
            db.session.commit()
            with lock:
                out.write(f"{node}/{t}/{i}\n")
        db.session.remove()
def take_over():
    wait_for(os.environ["DEAD_FILE"])
    with app.app_context():
        sequencer.ensure_background(app)
workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
workers.append(threading.Thread(target=take_over))
for w in workers: w.start()
for w in workers: w.join()
with app.app_context():
    assert sequencer.wait_chained(db.engine, timeout=30)
'''


@pytest.mark.postgres_only
def test_two_nodes_under_load_with_the_sequencer_killed_mid_run(app, database_url, tmp_path):
    script = tmp_path / "node.py"
    script.write_text(NODE_SCRIPT)
    confirm, dead = tmp_path / "confirmed.txt", tmp_path / "dead"
    env = {**os.environ, "ROOT": str(ROOT), "CONFIRM_FILE": str(confirm), "DIE_AFTER": "3",
           "READY_FILE": str(tmp_path / "ready"), "DEAD_FILE": str(dead)}
    env.pop("CONSOLE_ENV", None)
    # A sequencer-only process that dies (os._exit) inside its third chaining transaction.
    doomed = subprocess.Popen([sys.executable, str(script), database_url, "S", "0", "0", "sequencer-dies"], env=env)
    nodes = [subprocess.Popen([sys.executable, str(script), database_url, name, "60", "4", "node"], env=env)
             for name in ("A", "B")]
    try:
        assert doomed.wait(timeout=120) == 9, "the sequencer process should have died mid-transaction"
        dead.touch()
        for node in nodes:
            assert node.wait(timeout=180) == 0
    finally:
        for process in [doomed, *nodes]:
            if process.poll() is None:
                process.kill()
                process.wait()
    confirmed = confirm.read_text().split()
    assert len(confirmed) == 2 * 4 * 60
    sequencer.chain_pending(db.engine)
    report = _verify()
    assert report.intact and report.pending == 0
    events = db.session.execute(select(AuditEvent.seq, AuditEvent.action, AuditEvent.details)
                                .where(AuditEvent.action.like("test.load%")).order_by(AuditEvent.seq)).all()
    firsts = [e for e in events if e.action == "test.load"]
    keys = [f"{d['node']}/{d['t']}/{d['i']}" for d in (json.loads(e.details) for e in firsts)]
    assert sorted(keys) == sorted(confirmed)  # every committed event exactly once
    assert len(events) == 2 * len(confirmed)
    # A transaction's two events are chained next to each other, first then second.
    for first in firsts:
        assert (first.seq + 1, "test.load.second") in {(e.seq, e.action) for e in events}
    seqs = db.session.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)).all()
    assert seqs == list(range(1, len(seqs) + 1))  # gapless
