"""Rate-limit counters in the database: the shared fallback while Redis is unreachable.

One row per limit key and fixed window (the window starts at the key's first hit, as in Redis).
Rows are written only by ``console.ratelimits.DatabaseCounter``, each in its own short
transaction, never in a request's; expired rows are pruned from time to time.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime


class RateLimitCounter(db.Model):
    __tablename__ = "rate_limit_counter"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
