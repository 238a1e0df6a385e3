"""partition the audit table by month on PostgreSQL

Revision ID: 0005_partition_audit
Revises: 0004_checkpoints
Create Date: 2026-11-25 20:00:00

The table is rebuilt as a partitioned table (primary key (seq, occurred_at)), its rows copied,
its indexes and append-only triggers recreated. SQLite keeps its single table.
"""
from datetime import date

from alembic import op
import sqlalchemy as sa

from console.models.audit_partitions import ensure_partitions

revision = '0005_partition_audit'
down_revision = '0004_checkpoints'
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_audit_event_occurred_at", "occurred_at"),
    ("ix_audit_event_actor_seq", "actor_id, seq"),
    ("ix_audit_event_action_seq", "action, seq"),
    ("ix_audit_event_customer_seq", "customer_ref, seq"),
    ("ix_audit_event_branch_seq", "actor_branch, seq"),
)



# The append-only triggers as this migration created them, frozen here: a later change to the
# model's helpers must not rewrite what an old migration did.
def _append_only_ddl(dialect: str, table: str) -> list[str]:
    if dialect == "sqlite":
        return [
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
        ]
    return [
        "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege'; END $$",
        f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
    ]


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE audit_event RENAME TO audit_event_old")
    op.execute("ALTER TABLE audit_event_old RENAME CONSTRAINT pk_audit_event TO pk_audit_event_old")
    for name, _columns in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
    op.execute("CREATE TABLE audit_event (LIKE audit_event_old INCLUDING DEFAULTS) PARTITION BY RANGE (occurred_at)")
    op.execute("ALTER TABLE audit_event ADD CONSTRAINT pk_audit_event PRIMARY KEY (seq, occurred_at)")
    for name, columns in INDEXES:
        op.execute(f"CREATE INDEX {name} ON audit_event ({columns})")
    first = bind.execute(sa.text("SELECT min(occurred_at) FROM audit_event_old")).scalar()
    today = date.today()
    back = 1 if first is None else max(1, (today.year - first.year) * 12 + today.month - first.month)
    ensure_partitions(bind, today=today, back=back, ahead=12)
    op.execute("INSERT INTO audit_event SELECT * FROM audit_event_old")
    op.execute("DROP TABLE audit_event_old")
    for statement in _append_only_ddl("postgresql", "audit_event"):
        op.execute(statement)


def downgrade():
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("CREATE TABLE audit_event_flat (LIKE audit_event INCLUDING DEFAULTS)")
    op.execute("INSERT INTO audit_event_flat SELECT * FROM audit_event")
    op.execute("DROP TABLE audit_event CASCADE")
    op.execute("ALTER TABLE audit_event_flat RENAME TO audit_event")
    op.execute("ALTER TABLE audit_event ADD CONSTRAINT pk_audit_event PRIMARY KEY (seq)")
    for name, columns in INDEXES:
        op.execute(f"CREATE INDEX {name} ON audit_event ({columns})")
    for statement in _append_only_ddl("postgresql", "audit_event"):
        op.execute(statement)
