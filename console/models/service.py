"""Service work: cases (受理单), verifications, approvals and receipts (DESIGN.md section 2)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .customer import Customer, Wallet
from .staff import Branch, Staff
from .types import UTCDateTime


class Case(db.Model):
    """One walk-in visit or one call."""

    __tablename__ = "service_case"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_no: Mapped[str] = mapped_column(String(24), unique=True)
    branch_id: Mapped[int] = mapped_column(ForeignKey("branch.id"), index=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    channel: Mapped[str] = mapped_column(String(12))  # counter, phone
    status: Mapped[str] = mapped_column(String(12), default="open")
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    branch: Mapped[Branch] = relationship()
    staff: Mapped[Staff] = relationship()
    customer: Mapped[Customer] = relationship()
    notes: Mapped[list[CaseNote]] = relationship(back_populates="case", order_by="CaseNote.id")
    verifications: Mapped[list[Verification]] = relationship(back_populates="case", order_by="Verification.id")


class CaseNote(db.Model):
    __tablename__ = "case_note"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("service_case.id"), index=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    text: Mapped[str] = mapped_column(Text)

    case: Mapped[Case] = relationship(back_populates="notes")
    staff: Mapped[Staff] = relationship()


class Verification(db.Model):
    """Proof of the customer's identity: valid for one staff member, one customer, 15 minutes."""

    __tablename__ = "verification"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("service_case.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"))
    channel: Mapped[str] = mapped_column(String(12))  # counter, phone
    method: Mapped[str] = mapped_column(String(24))  # id_document, sms_code_and_questions
    strength: Mapped[str] = mapped_column(String(8))  # strong, medium
    status: Mapped[str] = mapped_column(String(12))  # pending, passed, failed
    failure_reason: Mapped[str | None] = mapped_column(String(32))
    evidence: Mapped[str | None] = mapped_column(Text)  # JSON summary, never a full document number
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Phone verification: the SMS code, stored hashed.
    code_hash: Mapped[str | None] = mapped_column(String(255))
    code_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    code_tries: Mapped[int] = mapped_column(Integer, default=0)
    codes_sent: Mapped[int] = mapped_column(Integer, default=0)
    question_codes: Mapped[str | None] = mapped_column(String(80))

    case: Mapped[Case] = relationship(back_populates="verifications")
    staff: Mapped[Staff] = relationship()

    __table_args__ = (Index("ix_verification_customer_created", "customer_id", "created_at"),)


class Approval(db.Model):
    """Maker-checker request for a sensitive operation."""

    __tablename__ = "approval"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("service_case.id"))
    branch_id: Mapped[int] = mapped_column(ForeignKey("branch.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallet.id"))
    operation: Mapped[str] = mapped_column(String(24))
    reason_code: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    evidence: Mapped[str | None] = mapped_column(Text)
    verification_id: Mapped[int | None] = mapped_column(ForeignKey("verification.id"))
    maker_id: Mapped[int] = mapped_column(ForeignKey("staff.id"))
    checker_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    status: Mapped[str] = mapped_column(String(12), default="pending")
    decision_note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    executed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # How it was decided: "queue" (the approvals page, the staff API) or "counter" (主管现场授权: a
    # supervisor at the screen of ``counter_staff_id``, signed in there as session ``counter_session``,
    # the public id the audit trail names). NULL while undecided, and for decisions made before 0015.
    decided_via: Mapped[str | None] = mapped_column(String(8))
    counter_session: Mapped[str | None] = mapped_column(String(16))
    counter_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))

    case: Mapped[Case] = relationship()
    customer: Mapped[Customer] = relationship()
    wallet: Mapped[Wallet] = relationship()
    maker: Mapped[Staff] = relationship(foreign_keys=[maker_id])
    checker: Mapped[Staff | None] = relationship(foreign_keys=[checker_id])
    counter_staff: Mapped[Staff | None] = relationship(foreign_keys=[counter_staff_id])

    __table_args__ = (
        # One pending request per customer and operation.
        Index("uq_approval_one_pending", "customer_id", "operation", unique=True,
              postgresql_where=text("status = 'pending'"), sqlite_where=text("status = 'pending'")),
    )


class Receipt(db.Model):
    """业务回单: issued when a case closes (the PDF is rendered from this record)."""

    __tablename__ = "receipt"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    receipt_no: Mapped[str] = mapped_column(String(24), unique=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("service_case.id"), unique=True)
    branch_id: Mapped[int] = mapped_column(ForeignKey("branch.id"), index=True)
    issued_by: Mapped[int] = mapped_column(ForeignKey("staff.id"))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    summary: Mapped[str] = mapped_column(Text)  # JSON: operations with time, outcome, audit seq
    last_event_seq: Mapped[int | None] = mapped_column(Integer)
    last_event_hash: Mapped[str | None] = mapped_column(String(64))
    pdf_sha256: Mapped[str | None] = mapped_column(String(64))
    prints: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    case: Mapped[Case] = relationship()


class RegistryEntry(db.Model):
    """The local citizen-ID registry (联网核查 default adapter), seeded with demo data."""

    __tablename__ = "citizen_registry"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    id_number_index: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(12), default="valid")  # valid, revoked, deceased
