"""Issue #14 part 0: checkpoints that leave the database, and the tamper review's scenarios.

The attacker is PostgreSQL's superuser: every trigger is bypassed (``session_replication_role =
replica``), as in the review. What the database alone cannot show, the checkpoints held outside it
(the witness directory, checked with the auditor's copy of the public key) must: each scenario
asserts ``verify_chain(..., anchors=..., public_key=...)`` names the first bad sequence number and
what happened. docs/audit-anchors.md describes the design.
"""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError, IntegrityError

from console import audit_verifier, timeutil
from console.extensions import db
from console.models.audit import GENESIS_HASH, AuditCheckpoint, AuditEvent
from console.models.audit_partitions import add_months, month_start, partition_name
from console.services import audit, checkpoints
from console.services.actor import Actor
from console.timeutil import utcnow

COLUMNS = [AuditEvent.__table__.c[name] for name in audit_verifier.FIELDS + ("hash",)]


@pytest.fixture
def witness(app, tmp_path):
    """The operator's witness directory, and the auditor's copy of the public key. Checkpoints are
    taken by hand only, unless a test switches the automatic ones on."""
    directory = tmp_path / "witness"
    app.config.update(AUDIT_WITNESS_DIR=str(directory), AUDIT_CHECKPOINT_EVERY=0, AUDIT_CHECKPOINT_SECONDS=0)
    pem = tmp_path / "auditor-key.pem"
    pem.write_text(checkpoints.public_key_pem())
    return directory, checkpoints.load_public_key(pem)


def _events(n: int, action: str = "test.event") -> int:
    """n events in one transaction; the chain head after they are chained."""
    for i in range(n):
        audit.record(db.session, Actor.operator(), action, details={"i": i})
    db.session.commit()
    return _head()[0]


def _head() -> tuple[int, str]:
    db.session.rollback()
    head = db.session.execute(text("SELECT seq, hash FROM audit_chain_head WHERE id = 1")).one()
    db.session.rollback()
    return head.seq, head.hash


def _checkpoint() -> tuple[int, int]:
    """A checkpoint of the head by hand (as `flask audit checkpoint`): (its seq, its id)."""
    row = checkpoints.create_checkpoint(db.session, Actor.operator())
    seq, cp_id = row.seq, row.id
    db.session.commit()
    return seq, cp_id


def _as_superuser(*steps) -> None:
    """Run SQL as the superuser with every trigger off, in one transaction; a step is a statement,
    (statement, params), or a callable taking the connection."""
    db.session.rollback()
    with db.engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        for step in steps:
            if callable(step):
                step(conn)
            elif isinstance(step, tuple):
                conn.execute(text(step[0]), step[1])
            else:
                conn.execute(text(step))
    db.session.expire_all()


def _rewrite_from(first: int, change: dict, *, table: str = "audit_event"):
    """A step: change event ``first`` and recompute every later hash (in ``table``), head included."""
    def step(conn):
        rows = conn.execute(text(f"SELECT * FROM {table} WHERE seq >= :s ORDER BY seq"), {"s": first}).mappings().all()
        prev = (conn.execute(text(f"SELECT hash FROM {table} WHERE seq = :s"), {"s": first - 1}).scalar()
                or conn.execute(text("SELECT hash FROM audit_event WHERE seq = :s"), {"s": first - 1}).scalar()
                or GENESIS_HASH)
        for original in rows:
            row = dict(original)
            if row["seq"] == first:
                row.update(change)
            row["prev_hash"] = prev
            row["hash"] = prev = audit_verifier.event_hash(row)
            sets = ", ".join(f"{name} = :{name}" for name in list(change) + ["prev_hash", "hash"])
            conn.execute(text(f"UPDATE {table} SET {sets} WHERE seq = :seq"), row)
        conn.execute(text("UPDATE audit_chain_head SET hash = :h WHERE id = 1"), {"h": prev})
    return step


def _verify(anchors_from=None, key=None):
    db.session.rollback()
    anchors = checkpoints.load_anchors(anchors_from) if anchors_from is not None else None
    report = audit.verify_chain(db.session, public_key=key, anchors=anchors)
    db.session.rollback()
    return report


def _verdict(report):
    return report.intact, report.first_bad_seq, report.reason


# --- the tamper review, scenario by scenario (PostgreSQL superuser, triggers off) ---------------


@pytest.mark.postgres_only
def test_tail_cut_past_the_newest_checkpoint_with_the_head_rewritten(app, witness):
    directory, key = witness
    _events(5)
    _checkpoint()                      # at 5 (its event is 6)
    _events(5)                         # 7..11
    newest, newest_id = _checkpoint()  # at 11 (its event is 12)
    _events(3)                         # 13..15
    assert _verify(directory, key).intact
    # Cut back to 9, past the newest checkpoint left in the database, and rewrite the head row.
    _as_superuser(f"DELETE FROM audit_checkpoint WHERE id = {newest_id}",
                  "DELETE FROM audit_event WHERE seq > 9",
                  "UPDATE audit_chain_head SET seq = 9, hash = (SELECT hash FROM audit_event WHERE seq = 9)")
    assert _verify().intact  # the database alone cannot tell (the review's finding)
    assert _verdict(_verify(directory, key)) == (
        False, 10, f"events 10..{newest} were cut off after held checkpoint at seq {newest}")


@pytest.mark.postgres_only
def test_an_edit_with_every_later_hash_recomputed_and_no_checkpoint_left_in_the_database(app, witness):
    directory, key = witness
    at = _events(8)
    _checkpoint()  # at 8
    _events(3)
    _as_superuser("DELETE FROM audit_checkpoint", _rewrite_from(3, {"outcome": "failed"}))
    assert _verify().intact  # every hash agrees, and no checkpoint is left to disagree
    assert _verdict(_verify(directory, key)) == (
        False, 1, f"events between seq 1 and {at} were rewritten (they no longer match held checkpoint at seq {at})")


@pytest.mark.postgres_only
def test_an_edit_with_recomputed_hashes_names_the_stretch_between_two_checkpoints(app, witness):
    directory, key = witness
    _events(4)
    first, _ = _checkpoint()           # at 4 (K-1)
    _events(4)                         # 6..9
    second, second_id = _checkpoint()  # at 9 (K)
    _events(2)
    _as_superuser(_rewrite_from(7, {"details": '{"i":99}'}))
    intact, bad, reason = _verdict(_verify())
    assert (intact, bad) == (False, first + 1)
    assert reason == (f"events between seq {first + 1} and {second} were rewritten "
                      f"(they no longer match signed checkpoint {second_id})")
    intact, bad, reason = _verdict(_verify(directory, key))
    assert (intact, bad) == (False, first + 1)
    assert reason.startswith(f"events between seq {first + 1} and {second} were rewritten")


@pytest.mark.postgres_only
def test_deleted_checkpoint_rows(app, witness):
    directory, key = witness
    _events(3)
    first, _ = _checkpoint()
    _events(2)
    _checkpoint()
    _as_superuser("DELETE FROM audit_checkpoint")
    assert _verify().intact and _verify().checkpoints == 0
    assert _verdict(_verify(directory, key)) == (
        False, first, f"the checkpoint at seq {first} held outside the database is missing from it "
                      "(checkpoint rows deleted)")


@pytest.mark.postgres_only
def test_a_detached_edited_recomputed_and_reattached_partition(app, witness):
    directory, key = witness
    this_month = month_start(utcnow().date())
    timeutil.set_offset(-timedelta(days=utcnow().day + 1))  # last month: its own partition
    _events(4)
    first, _ = _checkpoint()  # at 4, last month
    timeutil.set_offset(None)
    _events(4)                # 6..9, this month
    second, _ = _checkpoint()
    _events(2)
    partition = partition_name(this_month)
    bounds = f"FROM ('{this_month.isoformat()}') TO ('{add_months(this_month, 1).isoformat()}')"
    assert db.session.execute(text(f"SELECT min(seq) FROM {partition}")).scalar() == first + 2
    _as_superuser(f"ALTER TABLE audit_event DETACH PARTITION {partition}",
                  _rewrite_from(first + 3, {"outcome": "denied"}, table=partition),
                  f"ALTER TABLE audit_event ATTACH PARTITION {partition} FOR VALUES {bounds}",
                  "DELETE FROM audit_checkpoint")
    assert _verify().intact  # the review's finding: it passed
    intact, bad, reason = _verdict(_verify(directory, key))
    assert (intact, bad) == (False, first + 1)
    assert reason == (f"events between seq {first + 1} and {second} were rewritten "
                      f"(they no longer match held checkpoint at seq {second})")


@pytest.mark.postgres_only
def test_the_database_refuses_a_duplicate_sequence_number_in_another_month(app):
    _events(3)
    rest = ", ".join(name for name in audit_verifier.FIELDS if name not in ("seq", "occurred_at")) + ", hash"

    def copy(seq, months):  # event 2 under ``seq``, dated in a later month (another partition)
        day = add_months(month_start(utcnow().date()), months).replace(day=5)
        return f"SELECT {seq}, TIMESTAMP '{day.isoformat()} 10:00:00', {rest} FROM audit_event WHERE seq = 2"

    next_month = partition_name(add_months(month_start(utcnow().date()), 1))
    for statement in (f"INSERT INTO audit_event {copy('seq', 1)}",
                      f"INSERT INTO {next_month} {copy('seq', 1)}",  # naming the partition
                      f"INSERT INTO audit_event {copy(100, 1)} UNION ALL {copy(100, 2)}"):  # one batch
        with pytest.raises(IntegrityError, match=r"audit_event_seq_unique[\s\S]*\(seq\)=\((2|100)\)"):
            db.session.execute(text(statement))
        db.session.rollback()
    assert db.session.execute(text("SELECT count(*) FROM audit_event WHERE seq IN (2, 100)")).scalar() == 1
    assert _verify().intact


@pytest.mark.postgres_only
def test_a_duplicate_forced_in_is_reported_as_a_duplicate(app, witness):
    directory, key = witness
    _events(4)
    _checkpoint()
    _events(1)

    def forge(conn):
        row = dict(conn.execute(select(*COLUMNS).where(AuditEvent.seq == 2)).mappings().one())
        row.update(occurred_at=row["occurred_at"] + timedelta(days=40), details='{"forged":true}')
        row["hash"] = audit_verifier.event_hash(row)  # a row that is consistent in itself
        conn.execute(AuditEvent.__table__.insert(), row)

    _as_superuser(forge)
    assert db.session.execute(text("SELECT count(*) FROM audit_event WHERE seq = 2")).scalar() == 2
    for report in (_verify(), _verify(directory, key)):
        assert _verdict(report) == (False, 2, "sequence number 2 occurs twice (duplicate)")


@pytest.mark.postgres_only
@pytest.mark.parametrize("attack, bad, reason", [
    ("UPDATE audit_event SET outcome = 'failed' WHERE seq = 3", 3, "event content was changed"),
    ("DELETE FROM audit_event WHERE seq = 3", 3, "event 3 is missing"),
    # 3 and 4 swap places (each keeps its own hashes)
    ("UPDATE audit_event SET seq = CASE seq WHEN 3 THEN 4 ELSE 3 END WHERE seq IN (3, 4)", 3,
     "link to the previous event is broken (removed or reordered)"),
])
def test_edit_delete_and_reorder_are_named_with_and_without_anchors(app, witness, attack, bad, reason):
    directory, key = witness
    _events(6)
    _checkpoint()
    _events(2)
    _as_superuser(attack)
    assert _verdict(_verify()) == (False, bad, reason)
    assert _verdict(_verify(directory, key)) == (False, bad, reason)


@pytest.mark.postgres_only
def test_a_tail_cut_without_rewriting_the_head_is_named(app, witness):
    directory, key = witness
    _events(3)
    _checkpoint()
    head = _events(3)
    _as_superuser(f"DELETE FROM audit_event WHERE seq > {head - 2}")
    for report in (_verify(), _verify(directory, key)):
        assert _verdict(report) == (False, head - 1, f"events {head - 1}..{head} were cut off")


def test_a_forged_anchor_or_another_key_does_not_verify(app, witness, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory, key = witness
    at = _events(2)
    _checkpoint()
    # Whoever can write the witness directory but has no signing key cannot make an anchor.
    path = next(directory.rglob("*.json"))
    forged = {**json.loads(path.read_text()), "hash": "e" * 64}
    path.write_text(json.dumps(forged) + "\n")
    assert _verdict(_verify(directory, key)) == (
        False, at, f"the held checkpoint at seq {at} does not verify with the given public key")
    # And a key that is not the one that signed refuses the database's checkpoints too.
    other = tmp_path / "other.pem"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    report = audit.verify_chain(db.session, public_key=checkpoints.load_public_key(other))
    assert _verdict(report) == (False, at, "checkpoint 1 has an invalid signature")


# --- the database's own guards ------------------------------------------------------------------


def _refused(statement):
    with pytest.raises(DatabaseError) as caught:
        db.session.execute(text(statement))
        db.session.flush()
    db.session.rollback()
    return str(caught.value.orig)


def test_the_chain_head_only_moves_forward_to_an_event_that_exists(app, backend):
    """As the owner, triggers on (the app role is tested in test_partition_grants.py)."""
    head = _events(4)
    third = db.session.execute(text("SELECT hash FROM audit_event WHERE seq = 3")).scalar()
    assert "forward" in _refused(f"UPDATE audit_chain_head SET seq = 3, hash = '{third}'")
    assert "exists with that hash" in _refused(f"UPDATE audit_chain_head SET seq = {head + 1}")
    assert "exists with that hash" in _refused("UPDATE audit_chain_head SET hash = '" + "a" * 64 + "'")
    assert "forward" in _refused(f"UPDATE audit_chain_head SET seq = 0, hash = '{GENESIS_HASH}'")
    assert "one row" in _refused("DELETE FROM audit_chain_head")
    assert "one row" in _refused(f"INSERT INTO audit_chain_head (id, seq, hash) VALUES (2, 0, '{GENESIS_HASH}')")
    if backend == "postgresql":
        assert "TRUNCATE" in _refused("TRUNCATE audit_chain_head")
    # Touching the row without changing (seq, hash) is allowed (the sequencer's lock on SQLite).
    db.session.execute(text("UPDATE audit_chain_head SET seq = seq, updated_at = updated_at"))
    db.session.commit()
    assert _events(2) == head + 2 and _verify().intact


# --- the witness directory ------------------------------------------------------------------------


def test_a_checkpoint_leaves_the_database_after_its_commit(app, witness):
    directory, key = witness
    _events(3)
    row = checkpoints.create_checkpoint(db.session, Actor.operator())
    db.session.flush()
    signed = checkpoints.signed_statement(row)
    path = checkpoints.witness_path(directory, signed)
    assert not path.exists()  # nothing leaves before COMMIT
    db.session.commit()
    assert path.read_text() == json.dumps(signed, sort_keys=True, separators=(",", ":")) + "\n"
    assert path.parent.name == signed["signed_at"][:10]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    held = checkpoints.load_anchors(directory)
    assert [(a["seq"], a["hash"], a["checkpoint"]) for a in held] == [(signed["seq"], signed["hash"], row.id)]
    assert checkpoints.anchor_valid(held[0], key)
    # The checkpoint's event carries the whole signed statement (the SIEM stream's copy).
    details = json.loads(db.session.scalars(select(AuditEvent.details).where(
        AuditEvent.action == "audit.checkpoint")).one())
    assert details == signed and checkpoints.anchor_valid(details, key)


def test_a_checkpoint_rolled_back_leaves_no_copy(app, witness):
    directory, _key = witness
    _events(1)
    checkpoints.create_checkpoint(db.session)
    db.session.rollback()
    assert not directory.exists() or not any(directory.rglob("*.json"))
    assert db.session.scalar(select(AuditCheckpoint.id)) is None


def test_a_copy_lost_between_commit_and_file_is_written_by_the_next_checkpoint_and_by_export(app, witness, caplog):
    directory, _key = witness
    _events(1)
    # The process dies after COMMIT, before the file: as if nothing were configured yet.
    app.config["AUDIT_WITNESS_DIR"] = None
    lost_seq, lost_id = _checkpoint()
    # Or the directory cannot be written: the commit stands, the failure is logged.
    blocker = directory.parent / "not-a-directory"
    blocker.write_text("")
    app.config["AUDIT_WITNESS_DIR"] = str(blocker / "witness")
    _events(1)
    _failed_seq, failed_id = _checkpoint()
    assert "not written to the witness directory" in caplog.text
    assert {row.id for row in checkpoints.all_checkpoints(db.session)} == {lost_id, failed_id}
    app.config["AUDIT_WITNESS_DIR"] = str(directory)
    _events(1)
    _seq, next_id = _checkpoint()
    assert sorted(a["checkpoint"] for a in checkpoints.load_anchors(directory)) == [lost_id, failed_id, next_id]
    # A fresh auditor's copy: every checkpoint of the database, then nothing more to do.
    copy = directory.parent / "auditor-copy"
    first = checkpoints.export_anchors(db.session, copy)
    assert sorted(first.written) == [lost_id, failed_id, next_id] and not first.conflicts
    again = checkpoints.export_anchors(db.session, copy)
    assert (again.written, again.present, again.conflicts) == ([], 3, [])
    assert [a["seq"] for a in checkpoints.load_anchors(copy)][0] == lost_seq


def test_a_witness_file_is_never_overwritten(app, witness):
    directory, _key = witness
    _events(1)
    row = checkpoints.create_checkpoint(db.session)
    db.session.flush()
    signed = checkpoints.signed_statement(row)
    path = checkpoints.witness_path(directory, signed)
    path.parent.mkdir(parents=True)
    other = {**signed, "hash": "b" * 64}
    path.write_text(json.dumps(other) + "\n")
    db.session.commit()  # the commit stands; the file is evidence and stays
    assert json.loads(path.read_text()) == other
    result = checkpoints.export_anchors(db.session, directory)
    assert result.written == [] and len(result.conflicts) == 1 and str(path) in result.conflicts[0]


# --- what the auditor holds: loading anchors and the key -------------------------------------------


def test_anchors_load_from_a_directory_or_one_file_in_sequence_order(app, witness, tmp_path):
    directory, key = witness
    _events(1)
    _checkpoint()
    _events(2)
    _checkpoint()
    files = sorted(directory.rglob("*.json"))
    assert len(files) == 2
    joined = tmp_path / "anchors.jsonl"
    joined.write_text("".join(p.read_text() for p in reversed(files)) + "\n")
    array = tmp_path / "anchors.json"
    array.write_text(json.dumps([json.loads(p.read_text()) for p in files]))
    from_dir = checkpoints.load_anchors(directory)
    assert [a["seq"] for a in from_dir] == sorted(a["seq"] for a in from_dir)
    for other in (joined, array, files[0].parent.parent):
        assert [(a["seq"], a["signature"]) for a in checkpoints.load_anchors(other)] == \
            [(a["seq"], a["signature"]) for a in from_dir]
    (directory / "all.jsonl").write_text(joined.read_text())  # the same statements twice: kept once
    assert len(checkpoints.load_anchors(directory)) == 2
    assert all(checkpoints.anchor_valid(a, key) for a in from_dir)


GOOD = {"statement_version": 1, "checkpoint": 1, "seq": 5, "hash": "a" * 64,
        "signed_at": "2026-11-26T10:00:00.000001Z", "key_id": "b" * 16, "signature": "c" * 128}


@pytest.mark.parametrize("content, message", [
    ("", "holds no checkpoint statements"),
    ("{not json\n", "line 1: not valid JSON"),
    ("\n" + json.dumps({k: v for k, v in GOOD.items() if k != "hash"}), "line 2: missing hash"),
    (json.dumps({**GOOD, "hash": "A" * 64}), "hash must be 64 lowercase hex digits"),
    (json.dumps({**GOOD, "seq": "5"}), "seq must be a whole number"),
    (json.dumps({**GOOD, "seq": -1}), "seq must be a whole number"),
    (json.dumps({**GOOD, "signature": "c" * 12}), "signature must be 128 lowercase hex digits"),
    (json.dumps({**GOOD, "key_id": None}), "key_id must be 16 lowercase hex digits"),
    (json.dumps({**GOOD, "signed_at": "2026-11-26 10:00:00"}), "signed_at must be a UTC time"),
    (json.dumps({**GOOD, "signed_at": "2026-13-26T10:00:00.000000Z"}), "signed_at must be a UTC time"),
    (json.dumps({**GOOD, "statement_version": 2}), "statement version 2 is not known"),
    (json.dumps([GOOD, 7]), "item 2: a checkpoint statement is a JSON object"),
    ("[1, 2", "not valid JSON"),
])
def test_malformed_anchors_are_refused_with_a_message(tmp_path, content, message):
    path = tmp_path / "anchors.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as caught:
        checkpoints.load_anchors(path)
    assert str(path) in str(caught.value)


def test_missing_or_empty_anchors_and_bad_keys_are_refused_with_a_message(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    with pytest.raises(ValueError, match="no such file or directory"):
        checkpoints.load_anchors(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".checkpoint-1.json.tmp").write_text("{")  # a temporary file is not read
    with pytest.raises(ValueError, match="holds no checkpoint statements"):
        checkpoints.load_anchors(tmp_path / "empty")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD) + "\n")
    assert checkpoints.load_anchors(good)[0]["signed_at"].isoformat() == "2026-11-26T10:00:00.000001+00:00"
    with pytest.raises(ValueError, match="cannot read the public key"):
        checkpoints.load_public_key(tmp_path / "nowhere.pem")
    (tmp_path / "text.pem").write_text("not a key")
    with pytest.raises(ValueError, match="not a PEM public key"):
        checkpoints.load_public_key(tmp_path / "text.pem")
    rsa_pem = tmp_path / "rsa.pem"
    rsa_pem.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        checkpoints.load_public_key(rsa_pem)


# --- automatic checkpoints --------------------------------------------------------------------------


def _checkpoint_seqs():
    db.session.rollback()
    seqs = [row.seq for row in checkpoints.all_checkpoints(db.session)]
    db.session.rollback()
    return seqs


def test_a_checkpoint_is_taken_every_n_events(app, witness):
    directory, key = witness
    app.config.update(AUDIT_CHECKPOINT_EVERY=5, AUDIT_CHECKPOINT_SECONDS=0)
    assert _events(4) == 4 and _checkpoint_seqs() == []
    # Six events: the sequencer takes one after chaining them; its event is 7.
    assert _events(2) == 7 and _checkpoint_seqs() == [6]
    # That event is no reason for another one, however often it is asked.
    assert checkpoints.auto_checkpoint(db.session) is None
    db.session.rollback()
    assert _events(3) == 10 and _checkpoint_seqs() == [6]  # 4 events since: not yet
    assert _events(1) == 12 and _checkpoint_seqs() == [6, 11]
    assert [a["seq"] for a in checkpoints.load_anchors(directory)] == [6, 11]
    assert _verify(directory, key).intact


def test_a_checkpoint_is_taken_after_t_seconds_with_a_new_event(app, witness):
    app.config.update(AUDIT_CHECKPOINT_EVERY=0, AUDIT_CHECKPOINT_SECONDS=60)
    assert _events(1) == 1 and _checkpoint_seqs() == []
    timeutil.set_offset(timedelta(seconds=61))
    assert _events(1) == 3 and _checkpoint_seqs() == [2]
    # A minute later with nothing new but the checkpoint's own event: none.
    timeutil.set_offset(timedelta(seconds=125))
    assert checkpoints.auto_checkpoint(db.session) is None
    db.session.rollback()
    assert _events(1) == 5 and _checkpoint_seqs() == [2, 4]


def test_automatic_checkpoints_are_off_when_both_rules_are(app, witness):
    app.config.update(AUDIT_CHECKPOINT_EVERY=0, AUDIT_CHECKPOINT_SECONDS=0)
    timeutil.set_offset(timedelta(hours=1))
    _events(20)
    assert _checkpoint_seqs() == []


def test_checkpoint_settings_are_checked_at_start(tmp_path):
    from config import ConfigError
    from console import create_app

    with pytest.raises(ConfigError, match="CONSOLE_AUDIT_CHECKPOINT_EVERY"):
        create_app("testing", {"DATABASE_URL": "sqlite://", "AUDIT_CHECKPOINT_EVERY": -1})
    (tmp_path / "file").write_text("")
    for bad, message in (("relative/dir", "absolute path"), (str(tmp_path / "file"), "not a directory")):
        with pytest.raises(ConfigError, match=message):
            checkpoints.init_app(create_app("testing", {"DATABASE_URL": "sqlite://", "AUDIT_WITNESS_DIR": bad}))
    checkpoints.init_app(create_app("testing", {"DATABASE_URL": "sqlite://",
                                                "AUDIT_WITNESS_DIR": str(tmp_path / "new")}))
    assert not (tmp_path / "new").exists()  # created at the first write
