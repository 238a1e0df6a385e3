"""Monthly partitions of the audit table on PostgreSQL (SQLite keeps one table).

``audit_event`` is partitioned by range of ``occurred_at`` (UTC months), its primary key is
(seq, occurred_at), and a DEFAULT partition catches anything outside the prepared months.
Partitions are created ahead by the migration and by ``flask audit partitions`` (run it monthly
from cron). Each partition carries the TRUNCATE guard itself, since statement triggers on the
parent do not cover a TRUNCATE aimed at one partition.

Privileges: a partition is a table of its own, reachable by name, and PostgreSQL checks its own
grants when it is named (the parent's grants only cover access through the parent). So every run
also gives each partition the parent's grants, but never more than SELECT and INSERT: whatever a
role holds on ``audit_event`` (docs/postgresql.md: SELECT, INSERT for the app role) it holds on
each partition, and UPDATE, DELETE, TRUNCATE, REFERENCES and TRIGGER on a partition are revoked
from everyone but the owner, including what ``GRANT ... ON ALL TABLES`` or default privileges gave.
"""
from __future__ import annotations

from datetime import date

from sqlalchemy import text

PARTITION_PREFIX = "audit_event_y"
DEFAULT_PARTITION = "audit_event_default"


def month_start(day: date) -> date:
    return day.replace(day=1)


def add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{PARTITION_PREFIX}{month.year}m{month.month:02d}"


# The guard table of sequence numbers (PostgreSQL; no model: autogenerate leaves it alone).
SEQ_GUARD_TABLE = "audit_event_seq"
SEQ_GUARD_FUNCTION = "audit_event_seq_guard"


def is_partition_name(name: str) -> bool:
    """Tables of the audit table's physical layout that have no model (the partitions and the
    sequence-number guard): ``migrations/env.py`` keeps autogenerate away from them."""
    return name.startswith(PARTITION_PREFIX) or name in (DEFAULT_PARTITION, SEQ_GUARD_TABLE)


def _truncate_guard(conn, table: str) -> None:
    exists = conn.execute(text("SELECT 1 FROM pg_trigger WHERE tgname = :n AND tgrelid = CAST(:t AS regclass)"),
                          {"n": f"{table}_no_truncate", "t": table}).first()
    if not exists:
        conn.execute(text(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                          "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"))


def _seq_guard(conn, table: str) -> None:
    """The duplicate-seq guard on a partition, once migration 0013 has created its function."""
    if not conn.execute(text("SELECT to_regproc(:f)"), {"f": SEQ_GUARD_FUNCTION}).scalar():
        return
    exists = conn.execute(text("SELECT 1 FROM pg_trigger WHERE tgname = :n AND tgrelid = CAST(:t AS regclass)"),
                          {"n": f"{table}_seq_unique", "t": table}).first()
    if not exists:
        conn.execute(text(f"CREATE TRIGGER {table}_seq_unique AFTER INSERT ON {table} "
                          "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
                          f"EXECUTE FUNCTION {SEQ_GUARD_FUNCTION}()"))


# The most a partition grants anyone: the audit trail is read and appended, never changed.
PARTITION_PRIVILEGES = ("SELECT", "INSERT")


def _grants(conn, table: str) -> dict[str, set[str]]:
    """{grantee: privileges} of a table's ACL, the owner left out (grantee "PUBLIC" for public)."""
    rows = conn.execute(text(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, a.privilege_type "
        "FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee "
        "WHERE c.oid = CAST(:t AS regclass) AND a.grantee <> c.relowner"), {"t": table}).all()
    grants: dict[str, set[str]] = {}
    for grantee, privilege in rows:
        grants.setdefault(grantee, set()).add(privilege)
    return grants


def partitions(conn) -> list[str]:
    return list(conn.execute(text(
        "SELECT quote_ident(c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass('audit_event') ORDER BY c.relname")).scalars())


def sync_partition_grants(conn) -> list[str]:
    """Give every partition the parent's grants, limited to SELECT and INSERT, and take every
    grant off the sequence-number guard (only its trigger writes it, as the owner); returns the
    statements it ran (none when the grants are already right)."""
    wanted = {grantee: privileges & set(PARTITION_PRIVILEGES)
              for grantee, privileges in _grants(conn, "audit_event").items()}
    tables = [(table, wanted) for table in partitions(conn)]
    if conn.execute(text("SELECT to_regclass(:t)"), {"t": SEQ_GUARD_TABLE}).scalar():
        tables.append((SEQ_GUARD_TABLE, {}))
    statements = []
    for table, table_wanted in tables:
        held = _grants(conn, table)
        for grantee in sorted(set(held) | set(table_wanted)):
            extra = held.get(grantee, set()) - table_wanted.get(grantee, set())
            missing = table_wanted.get(grantee, set()) - held.get(grantee, set())
            if extra:
                statements.append(f"REVOKE {', '.join(sorted(extra))} ON {table} FROM {grantee}")
            if missing:
                statements.append(f"GRANT {', '.join(sorted(missing))} ON {table} TO {grantee}")
    for statement in statements:
        conn.execute(text(statement))
    return statements


def ensure_partitions(conn, *, today: date, back: int = 1, ahead: int = 12) -> list[str]:
    """Create the monthly partitions from ``back`` months ago to ``ahead`` months on; returns new ones."""
    created = []
    first = add_months(month_start(today), -back)
    for i in range(back + ahead + 1):
        start = add_months(first, i)
        name = partition_name(start)
        exists = conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar()
        if exists:
            continue
        conn.execute(text(
            f"CREATE TABLE {name} PARTITION OF audit_event "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{add_months(start, 1).isoformat()}')"))
        _truncate_guard(conn, name)
        _seq_guard(conn, name)
        created.append(name)
    if not conn.execute(text("SELECT to_regclass(:n)"), {"n": DEFAULT_PARTITION}).scalar():
        conn.execute(text(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF audit_event DEFAULT"))
        _truncate_guard(conn, DEFAULT_PARTITION)
        _seq_guard(conn, DEFAULT_PARTITION)
        created.append(DEFAULT_PARTITION)
    sync_partition_grants(conn)
    return created


def is_partitioned(conn) -> bool:
    return bool(conn.execute(text(
        "SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass('audit_event')")).first())


GENESIS = "0" * 64


def chain_head_guard_ddl(dialect: str) -> list[str]:
    """The chain head's guard as migration 0013 created it (that migration keeps its own frozen
    copy): an UPDATE must leave (seq, hash) as they are or move seq forward to an event that
    exists with that hash (seq 0: the genesis hash); INSERT, DELETE (and TRUNCATE) are refused."""
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
    if dialect == "postgresql":
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
    raise ValueError(f"no chain-head guard for {dialect}")


def drop_chain_head_guard_ddl(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return ["DROP TRIGGER IF EXISTS audit_chain_head_forward_only",
                "DROP TRIGGER IF EXISTS audit_chain_head_no_insert",
                "DROP TRIGGER IF EXISTS audit_chain_head_no_delete"]
    return ["DROP TRIGGER IF EXISTS audit_chain_head_guard ON audit_chain_head",
            "DROP TRIGGER IF EXISTS audit_chain_head_no_truncate ON audit_chain_head"]
