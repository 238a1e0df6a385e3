"""Who is acting: passed explicitly into every service."""
from __future__ import annotations

from dataclasses import dataclass

from .. import codes
from ..models.audit import AuditEvent


@dataclass(frozen=True)
class Actor:
    kind: str  # codes.ACTOR_KINDS: "staff", "operator" (CLI), "system", "anonymous", "service"
    staff_id: int | None = None
    employee_no: str | None = None
    role: str | None = None
    branch_code: str | None = None
    branch_id: int | None = None
    source_ip: str | None = None
    session_id: str | None = None
    channel: str = "console"  # codes.CHANNELS
    active: bool = True
    # Which entry point the actor came through (codes.INTERFACES): "console" (pages), "api" (the
    # staff JSON API), "cli". Recorded in every event's details when it is not the console, so an
    # auditor can tell a console action from the same action through the API.
    interface: str = "console"

    # The audit column's width (64): a client address is at most 45 characters (IPv6), but behind a
    # proxy configured with too many hops the client chooses X-Forwarded-For, and the audit trail
    # refuses a value its column cannot hold (services/audit.py). Kept to the column's width.
    SOURCE_IP_MAX = AuditEvent.__table__.c.source_ip.type.length

    def __post_init__(self) -> None:
        if isinstance(self.source_ip, str) and len(self.source_ip) > self.SOURCE_IP_MAX:
            object.__setattr__(self, "source_ip", self.source_ip[:self.SOURCE_IP_MAX])

    @property
    def is_authenticated(self) -> bool:
        return self.kind in ("staff", "operator")

    @staticmethod
    def service_channel(staff) -> str:
        """Call-centre staff serve by phone; everyone else at the counter."""
        return codes.PHONE if staff.branch and staff.branch.kind == "call_centre" else codes.COUNTER

    @classmethod
    def for_staff(cls, staff, *, source_ip=None, session_id=None, channel="console", interface="console") -> Actor:
        return cls(
            kind="staff", staff_id=staff.id, employee_no=staff.employee_no, role=staff.role,
            branch_code=staff.branch.code if staff.branch else None, branch_id=staff.branch_id,
            source_ip=source_ip, session_id=session_id, channel=channel, active=bool(staff.active),
            interface=interface,
        )

    @classmethod
    def operator(cls) -> Actor:
        """Whoever runs the CLI on a server: trusted with the admin role's permissions."""
        return cls(kind="operator", role="admin", channel="cli")

    @classmethod
    def system(cls, channel: str = "system") -> Actor:
        return cls(kind="system", channel=channel)

    @classmethod
    def anonymous(cls, *, source_ip=None, channel="console") -> Actor:
        return cls(kind="anonymous", source_ip=source_ip, channel=channel)
