"""One clock for the whole application, so tests can move time."""
from __future__ import annotations

from datetime import datetime, timezone

_offset = None


def utcnow() -> datetime:
    now = datetime.now(timezone.utc)
    if _offset is not None:
        now = now + _offset
    return now


def set_offset(delta) -> None:
    """Shift the application clock (tests only)."""
    global _offset
    _offset = delta
