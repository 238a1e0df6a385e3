"""Issue #11 part 7: the app role may only read and append to every audit partition.

Run with a real app role, set up as docs/postgresql.md says (a unique name per run, dropped
afterwards): UPDATE, DELETE and TRUNCATE on a partition are refused by privileges (checked with
the append-only triggers disabled, so nothing else can be what refuses them); SELECT and INSERT work.
"""
import itertools
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, ProgrammingError

from console.extensions import db
from console.models.audit_partitions import DEFAULT_PARTITION, ensure_partitions, partitions
from console.services import audit
from console.services.actor import Actor
from console.timeutil import utcnow

pytestmark = pytest.mark.postgres_only
_n = itertools.count()

DOCS_GRANTS = """
GRANT CONNECT ON DATABASE "{database}" TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role};
REVOKE UPDATE, DELETE, TRUNCATE ON audit_event, audit_checkpoint FROM {role};
GRANT SELECT, INSERT ON audit_event, audit_checkpoint TO {role};
REVOKE INSERT, DELETE, TRUNCATE ON audit_chain_head FROM {role};
GRANT SELECT, UPDATE ON audit_chain_head TO {role};
REVOKE ALL ON audit_event_seq FROM {role};
"""


@pytest.fixture
def app_role(app, backend, database_url):
    """A login role granted as docs/postgresql.md says; yields (name, url to connect as it)."""
    role = f"bc_app_{uuid.uuid4().hex[:8]}_{next(_n)}"
    database = make_url(database_url).database
    owner = db.engine
    with owner.begin() as conn:
        owner_name = conn.execute(text("SELECT current_user")).scalar()
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        for statement in filter(None, (s.strip() for s in DOCS_GRANTS.format(database=database, role=role, owner=owner_name).split(";"))):
            conn.execute(text(statement))
    url = make_url(database_url).set(username=role, password=None).render_as_string(hide_password=False)
    try:
        yield role, url
    finally:
        db.session.remove()
        with owner.begin() as conn:
            conn.execute(text(f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner_name} IN SCHEMA public "
                              f"REVOKE ALL ON TABLES FROM {role}"))
            conn.execute(text(f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner_name} IN SCHEMA public "
                              f"REVOKE ALL ON SEQUENCES FROM {role}"))
            conn.execute(text(f"DROP OWNED BY {role}"))  # its grants here and on the database
            conn.execute(text(f"DROP ROLE {role}"))


def _privileges(conn, role, table):
    return {p: conn.execute(text("SELECT has_table_privilege(:r, CAST(:t AS regclass), :p)"),
                            {"r": role, "t": table, "p": p}).scalar()
            for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")}


def test_following_the_docs_leaves_update_on_partitions_until_the_partitions_command(app, runner, app_role):
    role, _url = app_role
    with db.engine.connect() as conn:
        existing = partitions(conn)
        assert existing and DEFAULT_PARTITION in existing
        # The gap the issue describes: GRANT ... ON ALL TABLES reached the partitions.
        assert _privileges(conn, role, existing[0])["UPDATE"] is True
    result = runner.invoke(args=["audit", "partitions", "--ahead", "14"])  # as the owner
    assert result.exit_code == 0, result.output
    with db.engine.connect() as conn:
        names = partitions(conn)
        assert len(names) > len(existing)  # new months were created, and granted the same way
        for table in names:
            assert _privileges(conn, role, table) == {"SELECT": True, "INSERT": True, "UPDATE": False,
                                                      "DELETE": False, "TRUNCATE": False}, table
        # Every partition, the new ones too, refuses a sequence number already taken elsewhere.
        guarded = set(conn.execute(text(
            "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE t.tgname = c.relname || '_seq_unique'")).scalars())
        assert set(names) | {"audit_event"} <= guarded
        # The parent is unchanged, and running again changes nothing.
        assert _privileges(conn, role, "audit_event")["UPDATE"] is False
    with db.engine.begin() as conn:
        assert ensure_partitions(conn, today=utcnow().date(), back=0, ahead=14) == []
        from console.models.audit_partitions import sync_partition_grants

        assert sync_partition_grants(conn) == []


def test_the_app_role_appends_and_reads_but_cannot_change_a_partition(app, runner, app_role):
    role, url = app_role
    assert runner.invoke(args=["audit", "partitions"]).exit_code == 0
    audit.record(db.session, Actor.operator(), "test.grants", details={"note": "by the owner"})
    db.session.commit()
    month = utcnow().date()
    partition = f"audit_event_y{month.year}m{month.month:02d}"
    with db.engine.begin() as conn:
        # Take the trigger away: whatever refuses below is the privilege system.
        conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER USER"))
        conn.execute(text(f"ALTER TABLE {partition} DISABLE TRIGGER USER"))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == role
            seq = conn.execute(text(f"SELECT max(seq) FROM {partition}")).scalar()
            assert seq is not None  # SELECT on the partition works
            for statement in (f"UPDATE {partition} SET action = 'forged' WHERE seq = {seq}",
                              f"DELETE FROM {partition} WHERE seq = {seq}",
                              f"TRUNCATE {partition}",
                              f"UPDATE {DEFAULT_PARTITION} SET action = 'forged'",
                              "UPDATE audit_event SET action = 'forged'"):
                with pytest.raises(ProgrammingError, match="permission denied"):
                    conn.execute(text(statement))
                conn.rollback()
            # INSERT into the partition itself works (a copy of the last row under a new seq).
            columns = [c for c in conn.execute(text(f"SELECT * FROM {partition} LIMIT 0")).keys()]
            listed = ", ".join(columns)
            picked = ", ".join("seq + 1000000" if c == "seq" else c for c in columns)
            conn.execute(text(f"INSERT INTO {partition} ({listed}) SELECT {picked} FROM {partition} WHERE seq = {seq}"))
            conn.commit()
            assert conn.execute(text(f"SELECT count(*) FROM {partition} WHERE seq = {seq + 1000000}")).scalar() == 1
            assert conn.execute(text(f"SELECT action FROM audit_event WHERE seq = {seq}")).scalar() == "test.grants"
    finally:
        engine.dispose()
        with db.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_event ENABLE TRIGGER USER"))
            conn.execute(text(f"ALTER TABLE {partition} ENABLE TRIGGER USER"))


def test_the_app_role_writes_audited_work_through_the_services(app, runner, app_role):
    """The whole append path (chain head, sequence, partition) runs as the app role."""
    from sqlalchemy.orm import Session

    _role, url = app_role
    assert runner.invoke(args=["audit", "partitions"]).exit_code == 0
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            audit.record(session, Actor.operator(), "test.as_app_role")
            session.commit()
            assert session.execute(text("SELECT count(*) FROM audit_event WHERE action = 'test.as_app_role'")
                                   ).scalar() == 1
    finally:
        engine.dispose()


def test_tables_of_later_migrations_reach_the_app_role(app, app_role):
    """The default privileges in the docs: a table the owner creates after the grants (as a later
    migration does) is usable by the app role, and the tables this wave added work as that role."""
    from sqlalchemy.orm import Session

    from console.ratelimits import DatabaseCounter
    from console.services import idempotency

    role, url = app_role
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE later_migration_table (id integer PRIMARY KEY)"))
        assert _privileges(conn, role, "later_migration_table") == {
            "SELECT": True, "INSERT": True, "UPDATE": True, "DELETE": True, "TRUNCATE": False}
    engine = create_engine(url)
    try:
        assert DatabaseCounter(lambda: engine).incr("grants-test", 60) == 1
        with Session(engine) as session:
            decision = idempotency.reserve(session, "test:grants", "key-for-grants", "fp", commit=session.commit)
            assert decision.kind == "reserved"
    finally:
        engine.dispose()
        with db.engine.begin() as conn:
            conn.execute(text("DROP TABLE later_migration_table"))


def test_the_app_role_cannot_rewrite_the_chain_head_or_number_two_events_alike(app, runner, app_role):
    """Issue #14: the head only moves forward to an existing event, and a sequence number is taken
    once whatever the partition, for the app role as for anyone (triggers on, as deployed)."""
    from datetime import timedelta

    from console.models.audit_partitions import SEQ_GUARD_TABLE, add_months, month_start, partition_name

    role, url = app_role
    assert runner.invoke(args=["audit", "partitions"]).exit_code == 0
    for i in range(3):
        audit.record(db.session, Actor.operator(), "test.head", details={"i": i})
    db.session.commit()
    later = add_months(month_start(utcnow().date()), 1) + timedelta(days=3)
    columns = ", ".join(c for c in db.session.execute(text("SELECT * FROM audit_event LIMIT 0")).keys())
    copied = columns.replace("occurred_at", f"TIMESTAMP '{later.isoformat()} 09:00:00'")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            second = conn.execute(text("SELECT hash FROM audit_event WHERE seq = 2")).scalar()
            for statement, refusal in (
                    (f"UPDATE audit_chain_head SET seq = 2, hash = '{second}'", "only moves forward"),
                    ("UPDATE audit_chain_head SET hash = '" + "0" * 64 + "'", "exists with that hash"),
                    ("UPDATE audit_chain_head SET seq = seq + 5", "exists with that hash"),
                    ("DELETE FROM audit_chain_head", "permission denied"),
                    ("INSERT INTO audit_chain_head (id, seq, hash) VALUES (2, 0, 'x')", "permission denied"),
                    (f"SELECT count(*) FROM {SEQ_GUARD_TABLE}", "permission denied"),
                    (f"INSERT INTO {SEQ_GUARD_TABLE} VALUES (4)", "permission denied")):
                with pytest.raises(ProgrammingError, match=refusal):
                    conn.execute(text(statement))
                conn.rollback()
            for target in ("audit_event", partition_name(month_start(later))):
                with pytest.raises(IntegrityError, match="audit_event_seq_unique"):
                    conn.execute(text(f"INSERT INTO {target} ({columns}) "
                                      f"SELECT {copied} FROM audit_event WHERE seq = 2"))
                conn.rollback()
            # The sequencer's own update (forward, to the event it inserted) passes, as the app role.
            assert conn.execute(text("SELECT seq FROM audit_chain_head")).scalar() == 3
    finally:
        engine.dispose()
    from sqlalchemy.orm import Session

    engine = create_engine(url)
    try:
        with Session(engine) as session:
            audit.record(session, Actor.operator(), "test.after_refusals")
            session.commit()
        assert audit.verify_chain(db.session).intact and audit.verify_chain(db.session).count == 4
    finally:
        engine.dispose()
