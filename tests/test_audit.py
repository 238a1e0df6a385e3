"""The hash-chained audit trail: chaining, atomicity, append-only triggers, tamper detection."""
import json

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from console import boundary
from console.extensions import db
from console.models.audit import ChainHead
from console.models.staff import Staff
from console.services import audit, staff_admin
from console.services.actor import Actor
from console.services.errors import NotAllowed

from .concurrency import run_together
from .conftest import audit_events, make_staff, tamper


def _actor(role="admin", branch_code="HO-000"):
    handle = make_staff(role, branch_code=branch_code)
    return Actor.for_staff(db.session.get(Staff, handle.id), source_ip="10.0.0.7", session_id="abcd1234")


def _write(n, actor=None):
    actor = actor or Actor.system()
    for i in range(n):
        audit.record(db.session, actor, "test.event", details={"i": i})
        db.session.commit()


def test_events_are_chained_with_gapless_sequence_numbers(app):
    _write(5)
    events = audit_events()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == "0" * 64
    for before, after in zip(events, events[1:]):
        assert after.prev_hash == before.hash
    head = db.session.get(ChainHead, 1)
    assert (head.seq, head.hash) == (5, events[-1].hash)
    assert audit.verify_chain(db.session).intact


def test_canonical_form_is_versioned_sorted_and_compact(app):
    _write(1)
    event = audit_events()[0]
    row = {k: getattr(event, k) for k in audit.CHAINED_FIELDS}
    body = audit.canonical(row).decode()
    fields = body.split("\t")
    assert fields[0] == str(event.seq) and fields[-1] == event.prev_hash and fields[-2] == "2"
    assert "test.event" in fields and len(fields) == len(audit.CHAINED_FIELDS)
    import hashlib

    assert hashlib.sha256(body.encode()).hexdigest() == event.hash


def test_event_fields_record_the_actor(app):
    actor = _actor()
    audit.record(db.session, actor, "staff.unlock", reason_code="customer_request",
                 before={"locked": True}, after={"locked": False}, customer_ref="C000001", case_ref="K1")
    db.session.commit()
    event = audit_events("staff.unlock")[0]
    assert (event.actor_type, event.actor_role, event.actor_branch) == ("staff", "admin", "HO-000")
    assert (event.source_ip, event.session_id, event.channel) == ("10.0.0.7", "abcd1234", "console")
    assert json.loads(event.before_state) == {"locked": True}
    assert event.outcome == "success" and event.reason_code == "customer_request"


def test_change_and_event_commit_together(app):
    actor = _actor()
    handle = make_staff("teller")
    staff = db.session.get(Staff, handle.id)
    staff_admin.unlock_staff(db.session, actor, staff)
    assert audit_events("staff.unlock") == []  # not before the commit
    db.session.commit()
    assert len(audit_events("staff.unlock")) == 1


def test_rollback_leaves_neither_change_nor_event(app):
    actor = _actor()
    handle = make_staff("teller")
    before_count = len(audit_events())
    staff = db.session.get(Staff, handle.id)
    staff_admin.set_staff_active(db.session, actor, staff, False)
    db.session.rollback()
    db.session.commit()  # a later, unrelated commit must not carry the dropped event
    assert len(audit_events()) == before_count
    assert db.session.get(Staff, handle.id).active is True
    assert audit.verify_chain(db.session).intact


def test_refused_service_changes_nothing(app):
    teller = _actor("teller", "BJ-001")
    target = make_staff("agent")
    with pytest.raises(NotAllowed):
        boundary.perform(teller, staff_admin.unlock_staff, db.session.get(Staff, target.id))
    # The refusal itself is an audit event, recorded on its own after the rollback; the account is untouched.
    denied = audit_events("staff.unlock")
    assert [e.outcome for e in denied] == ["denied"]


@pytest.mark.parametrize("statement", [
    "UPDATE audit_event SET action = 'x' WHERE seq = 1",
    "DELETE FROM audit_event WHERE seq = 1",
])
def test_triggers_refuse_update_and_delete(app, statement):
    _write(2)
    with pytest.raises(DatabaseError, match="append-only"):
        db.session.execute(text(statement))
        db.session.commit()
    db.session.rollback()
    assert len(audit_events()) == 2


@pytest.mark.postgres_only
def test_trigger_refuses_truncate_on_postgresql(app, backend):
    _write(2)
    with pytest.raises(DatabaseError, match="append-only"):
        db.session.execute(text("TRUNCATE audit_event"))
        db.session.commit()
    db.session.rollback()
    assert len(audit_events()) == 2


_behind_the_triggers_back = tamper


def test_verify_names_an_edited_event(app):
    _write(10)
    _behind_the_triggers_back("UPDATE audit_event SET outcome = 'failed' WHERE seq = 7")
    report = audit.verify_chain(db.session)
    assert (report.intact, report.first_bad_seq) == (False, 7)
    assert "changed" in report.reason


def test_verify_names_a_deleted_event(app):
    _write(10)
    _behind_the_triggers_back("DELETE FROM audit_event WHERE seq = 4")
    report = audit.verify_chain(db.session)
    assert (report.intact, report.first_bad_seq) == (False, 4)
    assert "missing" in report.reason


def test_verify_names_swapped_events(app):
    _write(10)
    _behind_the_triggers_back(
        "UPDATE audit_event SET seq = -5 WHERE seq = 5",
        "UPDATE audit_event SET seq = 5 WHERE seq = 6",
        "UPDATE audit_event SET seq = 6 WHERE seq = -5",
    )
    report = audit.verify_chain(db.session)
    assert (report.intact, report.first_bad_seq) == (False, 5)


def test_verify_names_a_rehashed_edit(app):
    """An attacker who recomputes the edited event's own hash still breaks the next link."""
    _write(6)
    event = audit_events()[2]
    row = {k: getattr(event, k) for k in audit.CHAINED_FIELDS}
    row["outcome"] = "failed"
    forged = audit.event_hash(row)
    _behind_the_triggers_back(f"UPDATE audit_event SET outcome = 'failed', hash = '{forged}' WHERE seq = 3")
    report = audit.verify_chain(db.session)
    assert (report.intact, report.first_bad_seq) == (False, 4)


def test_verify_names_a_cut_off_tail(app):
    _write(10)
    _behind_the_triggers_back("DELETE FROM audit_event WHERE seq >= 8")
    report = audit.verify_chain(db.session)
    assert (report.intact, report.first_bad_seq) == (False, 8)
    assert "cut off" in report.reason


def test_cli_verify_reports_intact_and_broken(app, runner):
    _write(3)
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0 and result.output.startswith("intact: 3 events")
    _behind_the_triggers_back("UPDATE audit_event SET action = 'forged' WHERE seq = 2")
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert "BROKEN at sequence 2" in result.output


def test_auditor_page_verifies_the_chain_and_records_it(login_as, client):
    login_as("auditor", branch_code="HO-000")
    from .conftest import post_form

    page = post_form(client, "/audit/chain", {}, follow=True).get_data(as_text=True)
    assert "审计链完整" in page
    assert audit_events("audit.verify")[0].outcome == "success"


@pytest.mark.postgres_only
def test_concurrent_appends_keep_one_gapless_chain(app, backend):
    """8 threads x 200 audited actions on PostgreSQL: 1,600 events numbered 1..1600, chain intact."""
    threads_n, per_thread = 8, 200

    def worker(n):
        for i in range(per_thread):
            actor = Actor(kind="staff", staff_id=n, employee_no=f"W{n}", role="teller",
                          branch_code="BJ-001", channel="console")
            audit.record(db.session, actor, "access.denied", outcome="denied", details={"thread": n, "i": i})
            db.session.commit()

    run_together(worker, threads_n, app=app)
    rows = db.session.execute(text("SELECT seq, occurred_at FROM audit_event ORDER BY seq")).all()
    assert [seq for seq, _at in rows] == list(range(1, threads_n * per_thread + 1))
    # Each event carries the time it was chained: time never runs backwards against the order.
    times = [at for _seq, at in rows]
    assert all(a <= b for a, b in zip(times, times[1:]))
    report = audit.verify_chain(db.session)
    assert report.intact and report.count == 1600


def test_event_time_is_when_it_was_recorded_and_never_before_the_previous_event(app):
    """An event recorded early in a long transaction, or on a node whose clock lags, still gets
    a time no earlier than the event chained before it."""
    from datetime import timedelta

    from console import timeutil

    actor = Actor.system()
    audit.record(db.session, actor, "test.first")
    db.session.commit()
    first = audit_events("test.first")[0]
    # A node whose clock is 2 seconds behind records and commits the next event.
    timeutil.set_offset(timedelta(seconds=-2))
    audit.record(db.session, actor, "test.second")
    db.session.commit()
    second = audit_events("test.second")[0]
    assert second.seq == first.seq + 1 and second.occurred_at >= first.occurred_at
    # Recorded at one moment, chained later: the event carries the later time.
    timeutil.set_offset(None)
    audit.record(db.session, actor, "test.third")
    recorded_at = timeutil.utcnow()
    timeutil.set_offset(timedelta(seconds=5))
    db.session.commit()
    third = audit_events("test.third")[0]
    assert recorded_at - timedelta(seconds=1) <= third.occurred_at <= recorded_at
    assert audit.verify_chain(db.session).intact


@pytest.mark.postgres_only
def test_audit_table_is_partitioned_by_month_and_each_partition_refuses_truncate(app, backend, runner):
    from console.models.audit_partitions import is_partitioned, partition_name
    from console.timeutil import utcnow

    _write(3)
    connection = db.session.connection()
    assert is_partitioned(connection)
    month = partition_name(utcnow().date().replace(day=1))
    assert db.session.execute(text(f"SELECT count(*) FROM {month}")).scalar() == 3
    db.session.commit()
    with pytest.raises(DatabaseError, match="append-only"):
        db.session.execute(text(f"TRUNCATE {month}"))
        db.session.commit()
    db.session.rollback()
    result = runner.invoke(args=["audit", "partitions", "--ahead", "24"])
    assert result.exit_code == 0 and "partition" in result.output
    assert audit.verify_chain(db.session).intact
