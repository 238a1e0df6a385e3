"""Branches, staff accounts and their sign-in sessions."""
from __future__ import annotations

import enum
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..codes import Role  # noqa: F401  (the roles are listed in console.codes)
from ..extensions import db
from .types import UTCDateTime


class BranchKind(str, enum.Enum):
    branch = "branch"
    call_centre = "call_centre"
    head_office = "head_office"


class Branch(db.Model):
    __tablename__ = "branch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(16), default=BranchKind.branch.value)
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    staff: Mapped[list[Staff]] = relationship(back_populates="branch")

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


class Staff(UserMixin, db.Model):
    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    employee_no: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(80))
    role: Mapped[str] = mapped_column(String(16))
    branch_id: Mapped[int] = mapped_column(ForeignKey("branch.id"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    password_hash: Mapped[str] = mapped_column(String(255))
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=True)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # TOTP secret, AES-GCM encrypted; NULL until enrolled at first sign-in.
    totp_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_last_step: Mapped[int | None] = mapped_column(Integer)

    failed_signins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last lock the staff member has not been told about yet. The sign-in form answers a
    # locked account like a wrong password (no employee number can be confirmed), so the lock is
    # shown after the next successful sign-in instead.
    lock_notice_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lock_notice_failures: Mapped[int | None] = mapped_column(Integer)
    # "local": the password is checked against password_hash (break-glass admins); "directory":
    # by binding to the bank's directory as directory_dn (console/services/directory.py).
    auth_source: Mapped[str] = mapped_column(String(16), default="local", server_default="local")
    directory_dn: Mapped[str | None] = mapped_column(String(512))
    # Bumped to end every session of this staff member at once.
    session_generation: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_signin_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    branch: Mapped[Branch] = relationship(back_populates="staff")
    sessions: Mapped[list[StaffSession]] = relationship(back_populates="staff")

    @property
    def is_active(self) -> bool:  # Flask-Login
        return bool(self.active)

    @property
    def is_authenticated(self) -> bool:
        # A Staff object is only ever current_user through a live session. UserMixin would
        # answer "is_active", which flips mid-request when an admin edits this very row.
        return True

    @property
    def from_directory(self) -> bool:
        return self.auth_source == "directory"

    @property
    def totp_enrolled(self) -> bool:
        return self.totp_secret_enc is not None

    def __str__(self) -> str:
        return f"{self.employee_no} {self.name}"


class StaffSession(db.Model):
    """A signed-in console session, kept in the database so every node sees it."""

    __tablename__ = "staff_session"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # SHA-256 of the random token held in the browser's cookie.
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    # Non-secret identifier written to the audit trail.
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8), default="web")
    source_ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_reason: Mapped[str | None] = mapped_column(String(16))

    staff: Mapped[Staff] = relationship(back_populates="sessions")


class PendingSignin(db.Model):
    """A sign-in between its password step and its session, kept server-side.

    The browser holds only a random token (its SHA-256 is stored here), never who is signing in
    or which step was passed: the cookie's signing key alone cannot make anyone signed in. The
    token changes at every step passed, the row is bound to the address the password came from,
    expires STAFF_PENDING_SIGNIN_SECONDS after the password step and is deleted when the sign-in
    completes or fails for good.
    """

    __tablename__ = "pending_signin"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    # "password": the password was right; "second_factor": the TOTP code too (or was enrolled).
    step: Mapped[str] = mapped_column(String(16))
    # The authenticator secret offered for enrolment, AES-GCM encrypted.
    enrol_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    next_url: Mapped[str | None] = mapped_column(String(512))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    staff: Mapped[Staff] = relationship()


class OneTimeSecret(db.Model):
    """An initial password waiting to be shown once to the admin session that issued it."""

    __tablename__ = "one_time_secret"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    staff_session_id: Mapped[int] = mapped_column(ForeignKey("staff_session.id"), index=True)
    employee_no: Mapped[str] = mapped_column(String(16))
    secret_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
