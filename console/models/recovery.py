"""Self-service recoveries: the wallet app's 忘记密码 (DESIGN.md section 3, console/services/recovery.py).

One row per recovery started, whether or not its details matched a wallet: the answers and the
work are the same either way, so nobody learns from the API which wallets exist. ``wallet_id`` is
the wallet the start named (kept even when the ID number did not match, for the risk monitor);
``customer_id`` is set only when the details matched, and only such a recovery can ever pass.
The handle, the SMS code and the recovery token are stored only as keyed digests.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .customer import Customer, Wallet
from .types import UTCDateTime


class Recovery(db.Model):
    __tablename__ = "self_service_recovery"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    handle_digest: Mapped[str] = mapped_column(String(64), unique=True)
    identified_by: Mapped[str] = mapped_column(String(12))  # wallet_no, mobile
    wallet_id: Mapped[int | None] = mapped_column(ForeignKey("wallet.id"))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id"))
    matched: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))  # codes.RECOVERY_STATES
    failure_reason: Mapped[str | None] = mapped_column(String(32))  # RECOVERY_FAILURES or COUNTER_REASONS
    source_ip: Mapped[str | None] = mapped_column(String(64))
    device_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    code_digest: Mapped[str | None] = mapped_column(String(64))
    code_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    code_tries: Mapped[int] = mapped_column(SmallInteger, default=0)
    factor: Mapped[str | None] = mapped_column(String(24))  # codes.RECOVERY_FACTORS
    question_codes: Mapped[str | None] = mapped_column(String(200))
    token_digest: Mapped[str | None] = mapped_column(String(64))
    token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def reason(self) -> str | None:
        """Why it failed or went to the counter; a start whose ID number did not match the wallet
        it named never had a chance, and that is its reason."""
        return self.failure_reason if self.matched else "details_mismatch"

    wallet: Mapped[Wallet | None] = relationship()
    customer: Mapped[Customer | None] = relationship()

    __table_args__ = (Index("ix_recovery_wallet_started", "wallet_id", "started_at"),
                      Index("ix_recovery_customer_started", "customer_id", "started_at"))
