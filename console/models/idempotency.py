"""Answers kept for retries: API Idempotency-Keys and the desk's one-time form tokens."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime


class IdempotencyKey(db.Model):
    """One key of one caller, and the answer it was given (see console/services/idempotency.py).

    ``scope`` names the caller (``wallet:<service>``, ``staff:<id>``, ``token:<digest>``,
    ``form:<staff session>``); the key itself is stored only as a SHA-256 digest. A key is
    ``pending`` while ``owner`` holds its lease, then ``done`` with the answer, written in the
    transaction that committed the work. The answer's body is encrypted (it may show masked
    customer data). Rows past ``expires_at`` are pruned.
    """

    __tablename__ = "idempotency_key"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(12))  # pending, done
    owner: Mapped[str | None] = mapped_column(String(32))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    request_id: Mapped[str | None] = mapped_column(String(64))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[str | None] = mapped_column(Text)
    response_body_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
