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

from console.models.audit import append_only_ddl
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
    for statement in append_only_ddl("postgresql", "audit_event"):
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
    for statement in append_only_ddl("postgresql", "audit_event"):
        op.execute(statement)
