"""one event per sequence number whatever the partitioning; the chain head only moves forward

Revision ID: 0013_audit_seq_unique
Revises: 0012_audit_intake
Create Date: 2026-11-26 18:00:00

PostgreSQL partitions ``audit_event`` by month of ``occurred_at``; a unique index of a partitioned
table must contain the partition key, so the primary key is (seq, occurred_at) and the same seq in
two months was accepted (issue #14's tamper review).

Chosen: a guard table ``audit_event_seq (seq PRIMARY KEY)`` filled by a statement-level AFTER
INSERT trigger that inserts the statement's new sequence numbers in one set-based INSERT (a
transition table), on ``audit_event`` and on every partition (a statement trigger on the parent
does not fire for an INSERT that names a partition). Its unique index refuses a duplicate in one
batch, across months and between concurrent transactions (the second waits for the first, then
fails). The function is SECURITY DEFINER: the app role holds no privilege on the guard table, which
is append-only like the audit tables.

Not chosen: re-partitioning by seq range, which makes (seq) itself the key. It would drop the
monthly partitions that retention and archiving work with (detach a month), make partitions a
function of volume that cron cannot prepare from the calendar, and copy the whole table in this
migration. The guard costs one small index insert per event, once per statement rather than per
row (measured in docs/audit-anchors.md: within the noise of a batched append).

Also the chain head (``audit_chain_head``): an UPDATE that changes (seq, hash) must move seq
forward to an event that exists with that hash (seq 0: the genesis hash); INSERT, DELETE and
TRUNCATE are refused. The sequencer inserts the events, then moves the head, in one transaction,
so it passes; a role that may UPDATE the head can no longer cut the chain's tail by rewriting it.
SQLite: its primary key is seq already; the chain-head guard as triggers.

The DDL is frozen here; console/models/audit_partitions.py keeps the current copy.
"""
from alembic import op
import sqlalchemy as sa

revision = '0013_audit_seq_unique'
down_revision = '0012_audit_intake'
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def _head_guard_ddl(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [
            "CREATE TRIGGER audit_chain_head_forward_only BEFORE UPDATE ON audit_chain_head "
            "WHEN NEW.id IS NOT OLD.id OR NOT (NEW.seq IS OLD.seq AND NEW.hash IS OLD.hash) AND ("
            "NEW.seq < OLD.seq OR NEW.hash IS NOT (CASE WHEN NEW.seq = 0 THEN '" + GENESIS + "' "
            "ELSE (SELECT hash FROM audit_event WHERE seq = NEW.seq) END)) "
            "BEGIN SELECT RAISE(ABORT, "
            "'audit_chain_head only moves forward, to an event that exists with that hash'); END",
            "CREATE TRIGGER audit_chain_head_no_insert BEFORE INSERT ON audit_chain_head "
            "BEGIN SELECT RAISE(ABORT, 'audit_chain_head has its one row'); END",
            "CREATE TRIGGER audit_chain_head_no_delete BEFORE DELETE ON audit_chain_head "
            "BEGIN SELECT RAISE(ABORT, 'audit_chain_head has its one row'); END",
        ]
    return [
        "CREATE OR REPLACE FUNCTION audit_chain_head_guard() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "DECLARE at_seq varchar(64); "
        "BEGIN "
        "IF TG_OP <> 'UPDATE' THEN "
        "RAISE EXCEPTION 'audit_chain_head: % refused (one row, moved forward only)', TG_OP "
        "USING ERRCODE = 'insufficient_privilege'; END IF; "
        "IF NEW.id = OLD.id AND NEW.seq = OLD.seq AND NEW.hash = OLD.hash THEN RETURN NEW; END IF; "
        "IF NEW.id <> OLD.id OR NEW.seq < OLD.seq THEN "
        "RAISE EXCEPTION 'audit_chain_head only moves forward (seq % to %)', OLD.seq, NEW.seq "
        "USING ERRCODE = 'insufficient_privilege'; END IF; "
        "IF NEW.seq = 0 THEN at_seq := '" + GENESIS + "'; "
        "ELSE SELECT e.hash INTO at_seq FROM audit_event e WHERE e.seq = NEW.seq; END IF; "
        "IF at_seq IS NULL OR NEW.hash IS DISTINCT FROM at_seq THEN "
        "RAISE EXCEPTION 'audit_chain_head must name an event that exists with that hash (seq %)', NEW.seq "
        "USING ERRCODE = 'insufficient_privilege'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER audit_chain_head_guard BEFORE INSERT OR UPDATE OR DELETE ON audit_chain_head "
        "FOR EACH ROW EXECUTE FUNCTION audit_chain_head_guard()",
        "CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON audit_chain_head "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_head_guard()",
    ]


def _drop_head_guard_ddl(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return ["DROP TRIGGER IF EXISTS audit_chain_head_forward_only",
                "DROP TRIGGER IF EXISTS audit_chain_head_no_insert",
                "DROP TRIGGER IF EXISTS audit_chain_head_no_delete"]
    return ["DROP TRIGGER IF EXISTS audit_chain_head_guard ON audit_chain_head",
            "DROP TRIGGER IF EXISTS audit_chain_head_no_truncate ON audit_chain_head",
            "DROP FUNCTION IF EXISTS audit_chain_head_guard()"]


def _seq_guard_trigger(table: str) -> str:
    return (f"CREATE TRIGGER {table}_seq_unique AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_seq_guard()")


def _partitions(bind) -> list[str]:
    return list(bind.execute(sa.text(
        "SELECT quote_ident(c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass('audit_event') ORDER BY c.relname")).scalars())


def upgrade():
    bind = op.get_bind()
    dialect = bind.dialect.name
    if dialect == "postgresql":
        duplicates = list(bind.execute(sa.text(
            "SELECT seq FROM audit_event GROUP BY seq HAVING count(*) > 1 ORDER BY seq LIMIT 10")).scalars())
        if duplicates:
            raise RuntimeError(
                "audit_event holds sequence numbers more than once: " + ", ".join(map(str, duplicates))
                + ". Run `flask audit verify`, establish which rows are genuine, and resolve it before this "
                  "upgrade; nothing was changed.")
        op.execute("CREATE TABLE audit_event_seq (seq bigint NOT NULL, "
                   "CONSTRAINT audit_event_seq_unique PRIMARY KEY (seq))")
        op.execute("INSERT INTO audit_event_seq (seq) SELECT seq FROM audit_event")
        # Only the trigger writes it, as the owner: take away what default privileges granted.
        grantees = bind.execute(sa.text(
            "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END "
            "FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee "
            "WHERE c.oid = 'audit_event_seq'::regclass AND a.grantee <> c.relowner")).scalars().all()
        for grantee in grantees:
            op.execute(f"REVOKE ALL ON audit_event_seq FROM {grantee}")
        op.execute("CREATE TRIGGER audit_event_seq_no_update_delete BEFORE UPDATE OR DELETE ON audit_event_seq "
                   "FOR EACH ROW EXECUTE FUNCTION audit_append_only()")
        op.execute("CREATE TRIGGER audit_event_seq_no_truncate BEFORE TRUNCATE ON audit_event_seq "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()")
        op.execute("CREATE OR REPLACE FUNCTION audit_event_seq_guard() RETURNS trigger LANGUAGE plpgsql "
                   "SECURITY DEFINER SET search_path FROM CURRENT AS $$ "
                   "BEGIN INSERT INTO audit_event_seq (seq) SELECT seq FROM new_rows; RETURN NULL; END $$")
        op.execute("REVOKE ALL ON FUNCTION audit_event_seq_guard() FROM PUBLIC")
        op.execute(_seq_guard_trigger("audit_event"))
        for partition in _partitions(bind):
            op.execute(_seq_guard_trigger(partition))
    for statement in _head_guard_ddl(dialect):
        op.execute(statement)


def downgrade():
    bind = op.get_bind()
    dialect = bind.dialect.name
    for statement in _drop_head_guard_ddl(dialect):
        op.execute(statement)
    if dialect == "postgresql":
        for partition in _partitions(bind):
            op.execute(f"DROP TRIGGER IF EXISTS {partition}_seq_unique ON {partition}")
        op.execute("DROP TRIGGER IF EXISTS audit_event_seq_unique ON audit_event")
        op.execute("DROP FUNCTION IF EXISTS audit_event_seq_guard()")
        op.execute("DROP TABLE audit_event_seq")
