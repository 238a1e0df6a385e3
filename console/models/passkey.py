"""Staff security keys (passkeys, WebAuthn credentials) and their one-time challenges."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .staff import Staff
from .types import UTCDateTime


class StaffPasskey(db.Model):
    """A security key a staff member enrolled: its credential and public key, never a secret.

    Revoked keys stay (revoked_at, revoked_by) so the audit trail's references keep their meaning;
    only keys with ``revoked_at`` NULL are offered and accepted.
    """

    __tablename__ = "staff_passkey"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    # The authenticator's credential ID (at most 1023 bytes, WebAuthn Level 3).
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(1023), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # COSE_Key
    # The authenticator's signature counter (32-bit unsigned); 0 when the key keeps none.
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    name: Mapped[str] = mapped_column(String(60))
    transports: Mapped[str | None] = mapped_column(String(120))  # comma-separated, as the browser reported
    aaguid: Mapped[str | None] = mapped_column(String(36))  # the authenticator model (zeros: not said)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))  # NULL: the CLI operator

    staff: Mapped[Staff] = relationship(foreign_keys=[staff_id])

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def __str__(self) -> str:
        return self.name


class WebauthnChallenge(db.Model):
    """A challenge handed to the browser for one ceremony, kept server-side: bound to one staff
    member, one purpose ("register", "signin", "authorise", ...) and one context (the pending
    sign-in, the session, the caller's operation), short-lived, and deleted when it is answered,
    right or wrong (single use). Only its SHA-256 is stored; the answer carries the challenge."""

    __tablename__ = "webauthn_challenge"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    challenge_digest: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    context: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
