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


def is_partition_name(name: str) -> bool:
    return name.startswith(PARTITION_PREFIX) or name == DEFAULT_PARTITION


def _truncate_guard(conn, table: str) -> None:
    exists = conn.execute(text("SELECT 1 FROM pg_trigger WHERE tgname = :n AND tgrelid = CAST(:t AS regclass)"),
                          {"n": f"{table}_no_truncate", "t": table}).first()
    if not exists:
        conn.execute(text(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                          "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"))


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
    """Give every partition the parent's grants, limited to SELECT and INSERT; returns the
    statements it ran (none when the grants are already right)."""
    wanted = {grantee: privileges & set(PARTITION_PRIVILEGES)
              for grantee, privileges in _grants(conn, "audit_event").items()}
    statements = []
    for table in partitions(conn):
        held = _grants(conn, table)
        for grantee in sorted(set(held) | set(wanted)):
            extra = held.get(grantee, set()) - wanted.get(grantee, set())
            missing = wanted.get(grantee, set()) - held.get(grantee, set())
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
        created.append(name)
    if not conn.execute(text("SELECT to_regclass(:n)"), {"n": DEFAULT_PARTITION}).scalar():
        conn.execute(text(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF audit_event DEFAULT"))
        _truncate_guard(conn, DEFAULT_PARTITION)
        created.append(DEFAULT_PARTITION)
    sync_partition_grants(conn)
    return created


def is_partitioned(conn) -> bool:
    return bool(conn.execute(text(
        "SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass('audit_event')")).first())
