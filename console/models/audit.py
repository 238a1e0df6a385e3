"""The hash-chained audit trail (append-only; see DESIGN.md section 4)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime

GENESIS_HASH = "0" * 64


class AuditEvent(db.Model):
    __tablename__ = "audit_event"

    # Sequence numbers come from the chain head: gapless, and the ordering authority.
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor_employee_no: Mapped[str | None] = mapped_column(String(16))
    actor_role: Mapped[str | None] = mapped_column(String(16))
    actor_branch: Mapped[str | None] = mapped_column(String(16))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    session_id: Mapped[str | None] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(8))
    reason_code: Mapped[str | None] = mapped_column(String(32))
    customer_ref: Mapped[str | None] = mapped_column(String(32))
    case_ref: Mapped[str | None] = mapped_column(String(32))
    verification_id: Mapped[int | None] = mapped_column(Integer)
    approval_id: Mapped[int | None] = mapped_column(Integer)
    receipt_no: Mapped[str | None] = mapped_column(String(32))
    # Masked JSON snapshots; never a secret or a full personal identifier.
    before_state: Mapped[str | None] = mapped_column(Text)
    after_state: Mapped[str | None] = mapped_column(Text)
    details: Mapped[str | None] = mapped_column(Text)
    chain_version: Mapped[int] = mapped_column(SmallInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_event_actor_seq", "actor_id", "seq"),
        Index("ix_audit_event_action_seq", "action", "seq"),
        Index("ix_audit_event_customer_seq", "customer_ref", "seq"),
        Index("ix_audit_event_branch_seq", "actor_branch", "seq"),
    )


class ChainHead(db.Model):
    """The single row that serialises appends to the chain."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditCheckpoint(db.Model):
    """A signed statement of the chain head: sequence number, hash and time (Ed25519)."""

    __tablename__ = "audit_checkpoint"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(128))


class AuditIntake(db.Model):
    """Events a committed transaction recorded, waiting for the sequencer to chain them.

    One row per transaction, written in that transaction: the events (JSON) and an HMAC digest
    over them, so a row changed while it waits is refused rather than chained. The sequencer
    moves rows into ``audit_event`` (numbered, chained) and deletes them in one transaction.
    See docs/audit-chain.md.
    """

    __tablename__ = "audit_intake"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    events: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64))


class AuditStreamCursor(db.Model):
    """How far an outside consumer of the chain (the SIEM exporter) has got: the last seq delivered."""

    __tablename__ = "audit_stream_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


def append_only_ddl(dialect: str, table: str = "audit_event") -> list[str]:
    """Triggers that refuse UPDATE, DELETE (and TRUNCATE on PostgreSQL) on an audit table."""
    if dialect == "sqlite":
        return [
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
        ]
    if dialect == "postgresql":
        return [
            "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege'; END $$",
            f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
        ]
    raise ValueError(f"no append-only triggers for {dialect}")


def drop_append_only_ddl(dialect: str, table: str = "audit_event") -> list[str]:
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {table}_no_update", f"DROP TRIGGER IF EXISTS {table}_no_delete"]
    return [f"DROP TRIGGER IF EXISTS {table}_no_update_delete ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}"]
