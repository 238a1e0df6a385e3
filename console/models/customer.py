"""Customers and their wallets (DESIGN.md section 2).

ID numbers and mobiles are stored AES-GCM encrypted with a keyed blind index for exact lookup,
plus the masked form that every page shows. The full values are read only to send an SMS or to
compare a document at the counter.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import (BigInteger, Boolean, Date, ForeignKey, Index, Integer, LargeBinary, SmallInteger, String,
                        Text, UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .types import UTCDateTime

if TYPE_CHECKING:
    from .staff import Branch, Staff


class Customer(db.Model):
    __tablename__ = "customer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_no: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(80))
    id_type: Mapped[str] = mapped_column(String(24))
    id_number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    id_number_index: Mapped[str] = mapped_column(String(64))
    id_number_masked: Mapped[str] = mapped_column(String(32))
    id_expires_on: Mapped[date | None] = mapped_column(Date)
    birth_date: Mapped[date] = mapped_column(Date)
    mobile_enc: Mapped[bytes] = mapped_column(LargeBinary)
    mobile_index: Mapped[str] = mapped_column(String(64), index=True)
    mobile_masked: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    wallets: Mapped[list[Wallet]] = relationship(back_populates="customer")

    __table_args__ = (UniqueConstraint("id_type", "id_number_index", name="uq_customer_document"),)


class Wallet(db.Model):
    __tablename__ = "wallet"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wallet_no: Mapped[str] = mapped_column(String(20), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    tier: Mapped[int] = mapped_column(SmallInteger, default=4)
    status: Mapped[str] = mapped_column(String(12), default="active")  # active, closed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The wallet's home branch (归属网点): where it was opened, unless assigned. Its supervisors
    # handle the wallet's risk alerts. None: opened by no branch (the command line).
    home_branch_id: Mapped[int | None] = mapped_column(ForeignKey("branch.id"), index=True)

    # Wallet password (argon2id) and its life cycle.
    password_hash: Mapped[str] = mapped_column(String(255))
    password_set_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    temp_password_hash: Mapped[str | None] = mapped_column(String(255))
    temp_password_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Failure lock: consecutive failed checks since the last success or unlock (settled in claim
    # order), the order numbers of the claims handed out and settled, and the lock itself.
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    attempt_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    settled_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    lock_kind: Mapped[str | None] = mapped_column(String(16))  # temporary, until_unlock
    lock_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Risk freeze, placed by the monitor; released only with a supervisor's approval.
    frozen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    frozen_reason: Mapped[str | None] = mapped_column(String(32))
    # Protective hold, placed by staff.
    hold_placed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hold_reason: Mapped[str | None] = mapped_column(String(32))
    hold_placed_by: Mapped[str | None] = mapped_column(String(16))

    customer: Mapped[Customer] = relationship(back_populates="wallets")
    home_branch: Mapped[Branch | None] = relationship()
    password_history: Mapped[list[WalletPasswordHistory]] = relationship(
        back_populates="wallet", order_by="WalletPasswordHistory.id.desc()")
    security_questions: Mapped[list[SecurityQuestion]] = relationship(
        back_populates="wallet", order_by="SecurityQuestion.position")
    bindings: Mapped[list[TwoFactorBinding]] = relationship(
        back_populates="wallet", order_by="TwoFactorBinding.id.desc()")

    @property
    def password_expired(self) -> bool:
        """The password's time is up: sign-in answers password_expired until it is changed."""
        from ..timeutil import utcnow

        return self.password_expires_at is not None and self.password_expires_at <= utcnow()

    @property
    def active_binding(self) -> TwoFactorBinding | None:
        return next((b for b in self.bindings if b.unbound_at is None), None)


class WalletPasswordHistory(db.Model):
    """The current and previous password hashes, for the "not one of the last 4" rule."""

    __tablename__ = "wallet_password_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallet.id"), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime)

    wallet: Mapped[Wallet] = relationship(back_populates="password_history")


class SecurityQuestion(db.Model):
    __tablename__ = "security_question"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallet.id"), index=True)
    position: Mapped[int] = mapped_column(SmallInteger)
    question_code: Mapped[str] = mapped_column(String(32))
    answer_hash: Mapped[str] = mapped_column(String(255))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime)

    wallet: Mapped[Wallet] = relationship(back_populates="security_questions")

    __table_args__ = (UniqueConstraint("wallet_id", "position", name="uq_security_question_slot"),)


class TwoFactorBinding(db.Model):
    """A 2FA device bound to a wallet; unbinding keeps the row, so the history is complete."""

    __tablename__ = "twofactor_binding"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallet.id"), index=True)
    device_id: Mapped[str] = mapped_column(String(64))
    device_label: Mapped[str] = mapped_column(String(80))
    # The authenticator's TOTP secret (AES-GCM, context "binding.totp"), where the device is an
    # authenticator: self-service recovery then asks for its code instead of the security answers.
    totp_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    bound_at: Mapped[datetime] = mapped_column(UTCDateTime)
    unbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unbound_reason: Mapped[str | None] = mapped_column(String(32))

    wallet: Mapped[Wallet] = relationship(back_populates="bindings")


class WalletLock(db.Model):
    """Each failure lock of a wallet: the escalation counts these within the window."""

    __tablename__ = "wallet_lock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallet.id"))
    kind: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_by: Mapped[str | None] = mapped_column(String(32))  # "lapsed" or an employee number

    __table_args__ = (Index("ix_wallet_lock_wallet_started", "wallet_id", "started_at"),)


class LoginAttempt(db.Model):
    """Operational log of wallet sign-ins (too many rows for the audit chain).

    A password check is claimed as a row with ``result = "pending"``, a per-wallet order number
    ``seq``, its owner and an expiry; it is settled in ``seq`` order (``settled_at``) with its
    result, or ``abandoned`` when its owner died. Refusals without a check have no ``seq``.
    """

    __tablename__ = "login_attempt"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallet.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    source_ip: Mapped[str | None] = mapped_column(String(64))
    device_id: Mapped[str | None] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(16), default="sign_in")
    result: Mapped[str] = mapped_column(String(24))
    password_checked: Mapped[bool] = mapped_column(Boolean, default=False)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    claim_owner: Mapped[str | None] = mapped_column(String(64))
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_login_attempt_wallet_at", "wallet_id", "at"),
                      Index("uq_login_attempt_wallet_seq", "wallet_id", "seq", unique=True))


class RiskAlert(db.Model):
    """Raised by the risk monitor on a wallet; handled by the supervisors of the wallet's home branch.

    An open alert is acknowledged by a supervisor, who names its owner (the staff member who follows
    it up) and writes a note; it stays open until the freeze it reports is released (resolved).
    """

    __tablename__ = "risk_alert"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallet.id"), index=True)
    rule: Mapped[str] = mapped_column(String(32))
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime)
    details: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12), default="open")  # open, resolved
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    handling_note: Mapped[str | None] = mapped_column(Text)

    wallet: Mapped[Wallet] = relationship()
    acknowledged_by: Mapped[Staff | None] = relationship(foreign_keys=[acknowledged_by_id])
    owner: Mapped[Staff | None] = relationship(foreign_keys=[owner_id])
