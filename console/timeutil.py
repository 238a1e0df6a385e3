"""One clock for the whole application, so tests can move time; and local time, in one place.

Times are stored and compared in UTC. People read them in the bank's zone (the policy's
``time_zone``, Asia/Shanghai: "Beijing time"): :func:`local`, :func:`format_local`; a local calendar
day starts at :func:`local_midnight_utc`; SQL that groups by local day or hour adds :func:`utc_offset`.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from . import policy

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


def zone() -> ZoneInfo:
    """The bank's time zone (the running application's policy)."""
    return policy.current().zone


def local(value: datetime) -> datetime:
    """``value`` in the bank's zone (a naive value is taken as UTC, as everything is stored)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(zone())


def format_local(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """``value`` as the bank's local time, in strftime ``fmt``; "" for None."""
    return local(value).strftime(fmt) if value is not None else ""


def local_midnight_utc(day: date) -> datetime:
    """The UTC instant at which the local calendar day ``day`` begins."""
    return datetime.combine(day, time(0), tzinfo=zone()).astimezone(timezone.utc)


def utc_offset(at: datetime | None = None) -> timedelta:
    """How far the bank's zone is ahead of UTC at ``at`` (now by default). Asia/Shanghai has no
    daylight saving, so this is also what SQL adds to a stored time to get its local day or hour."""
    return local(at or utcnow()).utcoffset()
