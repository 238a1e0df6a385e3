"""Idempotency keys (IETF httpapi "The Idempotency-Key HTTP Header Field"): a retried request
gets the first answer, and the work is done once.

A key lives in one ``idempotency_key`` row per caller (``scope``) and key:

1. **Reserve** (:func:`reserve`), in a tiny transaction of its own, committed before the work:
   the row is inserted ``pending`` with a random ``owner`` and a lease. A second request with
   the same key then finds it in flight (the API answers 409), or, once the lease has lapsed
   because the first request died, takes the row over with a new owner.
2. **Complete** (:func:`complete`) in the transaction that commits the work, just before its
   COMMIT: the row becomes ``done`` with the answer, on condition that this request still owns
   it. So the work and its answer are committed together or not at all; if a retry took the
   key over meanwhile, completion fails and the caller rolls its work back.
3. **Release** (:func:`release`) when the answer is not to be kept (a 5xx, a 429, anything that
   says "try again"): the row is deleted, so a retry does the work.

Rows are kept the policy's ``idempotency.key_hours`` from the first request, then pruned (a few at a time
by :func:`reserve`, or all at once by :func:`prune`). Keys are stored as SHA-256 digests,
fingerprints as keyed HMACs (a body may carry an ID number), answers encrypted.

Like the lockout engine's claim, :func:`reserve` commits through the ``commit`` callable its
caller passes: the reservation must be visible to every other request before the work starts.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .. import crypto, policy
from ..models.idempotency import IdempotencyKey
from ..timeutil import utcnow

PENDING, DONE = "pending", "done"
PRUNE_BATCH = 200
_table = IdempotencyKey.__table__


@dataclass
class Reservation:
    """A key this request holds: complete it with the answer, or release it."""

    scope: str
    key_digest: str
    owner: str
    kind: str = "api"  # api or form: how its answer is stored and replayed


@dataclass
class StoredAnswer:
    status: int
    headers: dict = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Decision:
    """What :func:`reserve` found: ``reserved`` (do the work), ``replay`` (the first answer),
    ``mismatch`` (the key was used for another request) or ``in_flight`` (wait ``retry_after``)."""

    kind: str
    reservation: Reservation | None = None
    answer: StoredAnswer | None = None
    retry_after: int = 1


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Keyed digest of the request (method, path and body; JSON bodies in canonical form)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting is json_body's 400
        canonical = body
    message = b"idempotency\x00" + method.upper().encode() + b"\x00" + path.encode() + b"\x00" + canonical
    return hmac.new(crypto.key("BLIND_INDEX_KEY"), message, hashlib.sha256).hexdigest()


def _lease() -> timedelta:
    return timedelta(seconds=policy.current().idempotency.lease_seconds)


def _retention() -> timedelta:
    return timedelta(hours=policy.current().idempotency.key_hours)


def _insert(session: Session):
    return (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(_table)


def _where(scope: str, digest: str):
    return and_(_table.c.scope == scope, _table.c.key_digest == digest)


def _context(scope: str, digest: str) -> str:
    return f"idempotency:{scope}:{digest}"


def reserve(session: Session, scope: str, key: str, request_fingerprint: str | None, *, commit,
            kind: str = "api", request_id: str | None = None, retention: timedelta | None = None) -> Decision:
    """Reserve ``key`` for ``scope`` (committed), or say why not. ``request_fingerprint`` None: not compared.
    ``retention``: how long the key and its answer are kept (default: the policy's ``idempotency.key_hours``)."""
    digest = key_digest(key)
    fresh = {"fingerprint": request_fingerprint or "", "state": PENDING, "completed_at": None,
             "response_status": None, "response_headers": None, "response_body_enc": None,
             "request_id": (request_id or "")[:64] or None}
    for _attempt in range(10):
        now = utcnow()
        owner = secrets.token_hex(16)
        claim = {**fresh, "owner": owner, "lease_expires_at": now + _lease(), "created_at": now,
                 "expires_at": now + (retention or _retention())}
        row = session.execute(select(_table).where(_where(scope, digest))).mappings().first()
        if row is None:
            inserted = session.execute(_insert(session).values(scope=scope, key_digest=digest, **claim)
                                       .on_conflict_do_nothing().returning(_table.c.scope)).first()
            if inserted is not None:
                if secrets.randbelow(20) == 0:
                    prune(session, limit=PRUNE_BATCH)
                commit()
                return Decision("reserved", Reservation(scope, digest, owner, kind))
            commit()  # another request inserted it first: look again
            continue
        if row["expires_at"] <= now:
            # Kept past its time and not yet pruned: the key is new again.
            moved = session.execute(update(_table).where(_where(scope, digest), _table.c.expires_at == row["expires_at"])
                                    .values(**claim)).rowcount
            commit()
            if moved == 1:
                return Decision("reserved", Reservation(scope, digest, owner, kind))
            continue
        if request_fingerprint is not None and not hmac.compare_digest(row["fingerprint"], request_fingerprint):
            commit()
            return Decision("mismatch")
        if row["state"] == DONE:
            answer = _answer(row)
            commit()
            return Decision("replay", answer=answer)
        if row["lease_expires_at"] is not None and row["lease_expires_at"] > now:
            commit()
            return Decision("in_flight", retry_after=max(1, math.ceil((row["lease_expires_at"] - now).total_seconds())))
        # The request holding it died (or lost its connection) before answering: take the key over.
        moved = session.execute(update(_table).where(_where(scope, digest), _table.c.state == PENDING,
                                                     _table.c.owner == row["owner"])
                                .values(owner=owner, lease_expires_at=now + _lease(),
                                        request_id=fresh["request_id"])).rowcount
        commit()
        if moved == 1:
            return Decision("reserved", Reservation(scope, digest, owner, kind))
    return Decision("in_flight", retry_after=1)


def _answer(row) -> StoredAnswer:
    body = b""
    if row["response_body_enc"]:
        body = base64.b64decode(crypto.decrypt(row["response_body_enc"], context=_context(row["scope"], row["key_digest"])))
    return StoredAnswer(row["response_status"], json.loads(row["response_headers"] or "{}"), body)


def lookup(session: Session, scope: str, key: str, request_fingerprint: str) -> StoredAnswer | None:
    """The stored answer of ``key`` for this very request, if it was answered (no reservation)."""
    row = session.execute(select(_table).where(_where(scope, key_digest(key)))).mappings().first()
    if row is None or row["state"] != DONE or row["expires_at"] <= utcnow() \
            or not hmac.compare_digest(row["fingerprint"], request_fingerprint):
        return None
    return _answer(row)


def complete(session: Session, reservation: Reservation, answer: StoredAnswer) -> bool:
    """Store the answer in the current transaction (not committed). False: the key is no longer ours."""
    body = crypto.encrypt(base64.b64encode(answer.body).decode(),
                          context=_context(reservation.scope, reservation.key_digest))
    return session.execute(
        update(_table).where(_where(reservation.scope, reservation.key_digest), _table.c.state == PENDING,
                             _table.c.owner == reservation.owner)
        .values(state=DONE, owner=None, lease_expires_at=None, completed_at=utcnow(),
                response_status=answer.status, response_headers=json.dumps(answer.headers, sort_keys=True),
                response_body_enc=body)
    ).rowcount == 1


def release(session: Session, reservation: Reservation) -> None:
    """Give the key back (not committed): the answer is not kept, a retry does the work."""
    session.execute(delete(_table).where(_where(reservation.scope, reservation.key_digest),
                                         _table.c.state == PENDING, _table.c.owner == reservation.owner))


def prune(session: Session, *, limit: int | None = None) -> int:
    """Delete keys past their time (not committed); at most ``limit`` rows when given."""
    now = utcnow()
    if limit is None:
        return session.execute(delete(_table).where(_table.c.expires_at <= now)).rowcount
    # The oldest ``limit`` rows: everything up to the limit-th expiry (ties may add a few).
    bound = session.scalar(select(_table.c.expires_at).where(_table.c.expires_at <= now)
                           .order_by(_table.c.expires_at).offset(limit - 1).limit(1)) or now
    return session.execute(delete(_table).where(_table.c.expires_at <= bound)).rowcount
