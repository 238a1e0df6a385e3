"""Rate limits (Flask-Limiter): counters in Redis so every node shares them (memory in development).

When Redis is unreachable, the counters move to the database (table ``rate_limit_counter``,
updated with one atomic upsert in its own short transaction, never the request's), which every
worker of every node shares, so each limit still holds across the whole service. A client can get
at most twice a limit in the window in which Redis goes away or comes back (once counted in Redis,
once in the database). Each worker retries Redis every ``REDIS_RETRY_SECONDS`` (the requests in
between never wait for it), moves back by itself, and logs each switch once, as a warning.
/readyz stays 200 and names the degradation. If the database is down as well, requests go through
unlimited (the database outage answers 503 by itself).

On SQLite (development) the database has one writer at a time: the desk's limits per staff member
(searches, SMS codes) are checked after the session lookup has opened the request's transaction,
which holds that lock, so while Redis is down they are not counted and the request goes through
at once (logged) instead of waiting for itself. PostgreSQL has no such restriction.

A staff member who hits a limit gets a 429 page and an audit event. A 429 says when to try again
(``Retry-After``: :func:`retry_after`); answers within the limits carry no rate-limit headers,
whose two extra counter reads (Redis round trips) every limited request, sign-in first, would pay.

Credentials (sign-in form, TOTP step, API tokens, a supervisor's credentials presented at a
teller's screen), SMS codes and searches are limited per person
AND per address, each with one counter shared by the console and the API (``SHARED_LIMITS``): a
person is ``staff:<id>`` whichever channel they use. The SMS cap per customer (across staff and
channels) is not here but in console/services/verification.py, where the customer is known and the
outbox rows are the exact count.

The Limiter is built per application in ``create_app`` (its storage lives on the instance), and
the limits are attached to the endpoints here, in one table, rather than scattered in decorators.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from flask import current_app, g, has_app_context, has_request_context, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import current_user
from limits.errors import ConfigurationError
from limits.storage import RedisStorage, Storage
from sqlalchemy import case, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from .extensions import db
from .models.ratelimit import RateLimitCounter

log = logging.getLogger(__name__)

REDIS_SCHEMES = ("redis", "rediss", "redis+unix")
FALLBACK_PREFIX = "console+"  # console+redis://... selects RedisWithDatabaseFallback
REDIS_RETRY_SECONDS = 5.0  # while Redis is down, each worker tries it again this often
PRUNE_EVERY_SECONDS = 60.0  # expired database counters are deleted at most this often per worker
# Fail fast: a Redis that does not answer must not hold a request up (redis-py's defaults are a 5 s
# timeout and ten retries with back-off).
REDIS_SOCKET_TIMEOUT = 0.5


def address_key() -> str:
    """Per source address (behind the trusted proxies), whatever the channel."""
    return f"ip:{get_remote_address()}"


def _bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _lookup(query) -> int | None:
    """One read on its own connection: never the request's session (on SQLite it must not open
    the request's transaction before the view does)."""
    try:
        with db.engine.connect() as conn:
            return conn.execute(query).scalar()
    except SQLAlchemyError:
        log.debug("rate limits: person lookup failed", exc_info=True)
        return None


def staff_key() -> str:
    """Per staff member, one key for the console and the API: ``staff:<id>``.

    The console has its signed-in user; the API its bearer token's session (resolved by the API
    blueprint, or looked up here by the token's digest). A token that is unknown falls back to
    its digest, and an anonymous request to its address.
    """
    from . import crypto
    from .models.staff import StaffSession

    staff_id = g.get("staff_id") if request.path.startswith("/api/") else None
    if staff_id is None:
        token = _bearer_token() if request.path.startswith("/api/") else None
        if token:
            digest = crypto.token_digest(token)
            staff_id = _lookup(select(StaffSession.staff_id).where(StaffSession.token_digest == digest))
            if staff_id is None:
                return f"token:{digest[:24]}"
        elif current_user and current_user.is_authenticated:
            staff_id = current_user.id
    return f"staff:{staff_id}" if staff_id is not None else address_key()


EMPLOYEE_NO = re.compile(r"[A-Za-z0-9]{1,16}")


def signing_in_key() -> str:
    """Per person signing in, one key for the sign-in form, its TOTP or security-key step and API token issuing:
    ``staff:<id>`` of the account named (or ``employee:<number>`` for a number that names no
    account), so a person's credential checks are counted together whatever the channel."""
    from flask import session

    from .models.staff import Staff

    pending = session.get("pending") if request.endpoint in ("auth.totp", "signin_key.present") else None
    if isinstance(pending, dict) and isinstance(pending.get("staff"), int):
        return f"staff:{pending['staff']}"
    typed = None
    if request.mimetype == "application/x-www-form-urlencoded":
        typed = request.form.get("employee_no")
    elif request.is_json:
        data = request.get_json(silent=True)
        typed = data.get("employee_no") if isinstance(data, dict) else None
    if not isinstance(typed, str) or not EMPLOYEE_NO.fullmatch(typed.strip()):
        return address_key()  # nothing names a person (or not in an employee number's shape)
    typed = typed.strip()
    staff_id = _lookup(select(Staff.id).where(Staff.employee_no == typed))
    # A number naming no account is one key whatever its case (the bank's directory ignores case).
    return f"staff:{staff_id}" if staff_id is not None else f"employee:{typed[:16].upper()}"


def customer_address_key() -> str:
    """The wallet API limits per customer address (as the wallet back end reports it)."""
    data = request.get_json(silent=True) if request.is_json else None
    value = data.get("client_ip") if isinstance(data, dict) else None
    try:
        return f"client:{ipaddress.ip_address(value)}" if isinstance(value, str) else f"ip:{get_remote_address()}"
    except ValueError:
        return f"ip:{get_remote_address()}"


def _config(name):
    return lambda: current_app.config[name]


# Limits shared across channels: each group has one counter per person and one per address, and
# every endpoint of the group counts in both (Flask-Limiter shared limits: the scope names the
# group, not the endpoint). A 429 on the sign-in form therefore also refuses POST /api/v1/tokens
# from that address, before any credential is checked.
# group -> (config key of the limit, {endpoint: methods})
SHARED_LIMITS = {
    "staff_signin": ("LIMIT_STAFF_SIGNIN", {
        "auth.login": ["POST"], "auth.totp": ["POST"], "signin_key.present": ["POST"],
        "staff_api.issue_token": ["POST"],
        # A supervisor's credentials presented at a teller's screen (主管现场授权): counted with their sign-in.
        "desk.counter_authorise": ["POST"], "desk.counter_authorise_key": ["POST"]}),
    "otp_send": ("LIMIT_OTP_SEND", {
        "desk.verify_phone_start": ["POST"], "desk.verify_phone_resend": ["POST"],
        "staff_api.verify_phone_start": ["POST"]}),
    "search": ("LIMIT_SEARCH", {"desk.search": ["POST"], "staff_api.search_customers": ["POST"]}),
}
PERSON_KEYS = {"staff_signin": signing_in_key, "otp_send": staff_key, "search": staff_key}

def recovery_subject_key() -> str:
    """Recovery starts per wallet number or mobile named (normalised, hashed: the key is stored)."""
    from .identity import normalise_mobile, normalise_wallet_no

    data = request.get_json(silent=True) if request.is_json else None
    data = data if isinstance(data, dict) else {}
    wallet_no, mobile = data.get("wallet_no"), data.get("mobile")
    if isinstance(wallet_no, str) and wallet_no:
        subject = "w:" + normalise_wallet_no(wallet_no)
    elif isinstance(mobile, str) and mobile:
        subject = "m:" + normalise_mobile(mobile)
    else:
        return customer_address_key()
    return "recovery:" + hashlib.sha256(subject.encode()).hexdigest()[:32]


# endpoint -> [(config key of the limit, key function, methods)]: limits of one endpoint alone.
RECOVERY_STEPS = ("wallet_api.check_recovery_code", "wallet_api.check_recovery_factor",
                  "wallet_api.complete_recovery")
LIMITS = {
    "wallet_api.sign_in": [("LIMIT_WALLET_SIGNIN", customer_address_key, ["POST"])],
    "wallet_api.change_password": [("LIMIT_WALLET_SIGNIN", customer_address_key, ["POST"])],
    "wallet_api.set_security_questions": [("LIMIT_WALLET_SIGNIN", customer_address_key, ["PUT"])],
    "wallet_api.start_recovery": [("LIMIT_RECOVERY_ADDRESS", customer_address_key, ["POST"]),
                                  ("LIMIT_RECOVERY_WALLET", recovery_subject_key, ["POST"])],
    **{endpoint: [("LIMIT_RECOVERY_STEP", customer_address_key, ["POST"])] for endpoint in RECOVERY_STEPS},
}


def init_app(app) -> Limiter:
    storage = {}
    uri = app.config.get("RATELIMIT_STORAGE_URI") or "memory://"
    if uri.partition("://")[0] in REDIS_SCHEMES:
        # Redis, and the database while Redis is unreachable (no per-process memory fallback).
        storage = {"storage_uri": FALLBACK_PREFIX + uri, "storage_options": {"database": lambda: db.engine}}
    # swallow_errors: with Redis and the database both down, requests go through unlimited.
    # No X-RateLimit-* headers: each answer would read its counter and expiry again (two round trips
    # to Redis) for headers nobody documents; a 429's Retry-After is set by retry_after().
    limiter = Limiter(get_remote_address, app=app, headers_enabled=False, key_prefix="bc",
                      swallow_errors=True, **storage)
    for endpoint, limits in LIMITS.items():
        view = app.view_functions[endpoint]
        for config_key, key_func, methods in limits:
            view = limiter.limit(_config(config_key), key_func=key_func, methods=methods,
                                 scope=config_key.lower())(view)
        app.view_functions[endpoint] = view
    for group, (config_key, endpoints) in SHARED_LIMITS.items():
        for endpoint, methods in endpoints.items():
            view = app.view_functions[endpoint]
            # The person's counter and the address's counter, each shared by the group's endpoints.
            for scope, key_func in ((f"{group}:person", PERSON_KEYS[group]), (f"{group}:address", address_key)):
                view = limiter.shared_limit(_config(config_key), scope=scope, key_func=key_func,
                                            methods=methods)(view)
            app.view_functions[endpoint] = view
    app.extensions["rate_limiter"] = limiter
    return limiter


def retry_after() -> int:
    """Seconds until the window of the limit this request broke ends (for a 429's Retry-After);
    the window's full length if the counter's expiry cannot be read."""
    limiter = current_app.extensions.get("rate_limiter")
    breached = limiter.current_limit if limiter is not None else None
    if breached is None:
        return 60
    try:
        left = breached.reset_at - time.time()
    except Exception:  # the counter's store went away between the hit and this read
        log.warning("rate limits: the breached window's end could not be read")
        left = 0
    # An end under a second away is what an unread end looks like (the counter was read from the
    # other store than the one it was counted in: Redis went away, or came back, between the hit and
    # this read): say the window's whole length rather than 1.
    return int(left) if left >= 1 else max(1, int(breached.limit.get_expiry()))


# --- storage: Redis, and the database while Redis is unreachable ---------------------------


class SQLiteWriteLockHeld(RuntimeError):
    """SQLite: this request's own transaction holds the only write lock, so a counter written on
    another connection would wait for it forever."""


def _now() -> datetime:
    # The real clock, as Redis's expiries and a 429's Retry-After use (not timeutil's, which tests
    # move).
    return datetime.now(timezone.utc)


def _insert(engine: Engine):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the console runs on PostgreSQL and SQLite only
        raise ConfigurationError(f"no rate-limit counters for {engine.dialect.name}")
    return insert


def _refuse_sqlite_self_deadlock(engine: Engine) -> None:
    if engine.dialect.name != "sqlite" or not has_app_context():
        return
    if db.session.registry.has() and db.session().in_transaction():
        raise SQLiteWriteLockHeld("the request holds SQLite's write lock; rate limit not counted")


class DatabaseCounter:
    """Fixed-window counters in ``rate_limit_counter``, shared by every worker and node.

    The same semantics as limits' Redis storage: a key's window starts at its first hit and lasts
    ``expiry`` seconds; a hit after that starts a new window. Each hit is one
    ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` in its own transaction (PostgreSQL, and
    SQLite 3.35+), so concurrent hits from any number of processes are counted exactly.
    """

    table = RateLimitCounter.__table__

    def __init__(self, engine: Callable[[], Engine], prune_every: float = PRUNE_EVERY_SECONDS):
        self._engine = engine
        self._prune_every = prune_every
        self._next_prune = 0.0
        self._prune_lock = threading.Lock()

    @staticmethod
    def _row_key(key: str) -> str:
        return key if len(key) <= 255 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        engine = self._engine()
        _refuse_sqlite_self_deadlock(engine)
        t, now = self.table, _now()
        stmt = _insert(engine)(t).values(key=self._row_key(key), hits=amount, window_start=now,
                                         expires_at=now + timedelta(seconds=expiry))
        lapsed = t.c.expires_at <= now
        stmt = stmt.on_conflict_do_update(index_elements=[t.c.key], set_={
            "hits": case((lapsed, stmt.excluded.hits), else_=t.c.hits + stmt.excluded.hits),
            "window_start": case((lapsed, stmt.excluded.window_start), else_=t.c.window_start),
            "expires_at": case((lapsed, stmt.excluded.expires_at), else_=t.c.expires_at),
        }).returning(t.c.hits, t.c.expires_at)
        with engine.begin() as conn:
            hits, expires_at = conn.execute(stmt).one()
        if has_request_context():
            # A 429's Retry-After asks for the window's end again (retry_after): answer it from this
            # hit rather than with another query.
            g.setdefault("_rate_limit_counts", {})[key] = (hits, expires_at.timestamp())
        self._prune(engine)
        return hits

    def _counted(self, key: str):
        if has_request_context():
            counted = g.get("_rate_limit_counts", {}).get(key)
            if counted:
                return counted
        engine = self._engine()
        t = self.table
        with engine.connect() as conn:
            row = conn.execute(select(t.c.hits, t.c.expires_at).where(
                t.c.key == self._row_key(key), t.c.expires_at > _now())).first()
        return (row.hits, row.expires_at.timestamp()) if row else None

    def get(self, key: str) -> int:
        counted = self._counted(key)
        return counted[0] if counted else 0

    def get_expiry(self, key: str) -> float:
        counted = self._counted(key)
        return counted[1] if counted else time.time()

    def clear(self, key: str) -> None:
        if has_request_context():
            g.get("_rate_limit_counts", {}).pop(key, None)
        with self._engine().begin() as conn:
            conn.execute(delete(self.table).where(self.table.c.key == self._row_key(key)))

    def reset(self) -> int:
        with self._engine().begin() as conn:
            return conn.execute(delete(self.table)).rowcount

    def check(self) -> bool:
        try:
            with self._engine().connect() as conn:
                conn.execute(select(self.table.c.key).limit(1)).all()
            return True
        except SQLAlchemyError:
            return False

    def _prune(self, engine: Engine, *, force: bool = False) -> None:
        """Delete expired counters: at most once a minute per worker, by one thread, never failing."""
        if not force and time.monotonic() < self._next_prune:
            return
        if not self._prune_lock.acquire(blocking=False):
            return
        try:
            self._next_prune = time.monotonic() + self._prune_every
            with engine.begin() as conn:
                conn.execute(delete(self.table).where(self.table.c.expires_at <= _now()))
        except SQLAlchemyError:
            log.debug("rate limits: pruning expired database counters failed", exc_info=True)
        finally:
            self._prune_lock.release()


class RedisWithDatabaseFallback(Storage):
    """limits storage: Redis, and the database (``DatabaseCounter``) while Redis is unreachable.

    Selected by ``console+redis://...`` (``console+rediss://``, ``console+redis+unix://``);
    ``database`` is a callable returning the SQLAlchemy engine. Supports the fixed-window strategy
    (the console's ``RATELIMIT_STRATEGY``).
    """

    STORAGE_SCHEME = [FALLBACK_PREFIX + scheme for scheme in REDIS_SCHEMES]

    def __init__(self, uri: str, database: Callable[[], Engine] | None = None,
                 retry_seconds: float = REDIS_RETRY_SECONDS, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        if database is None:
            raise ConfigurationError("RedisWithDatabaseFallback needs database=<callable returning an engine>")
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError
        from redis.retry import Retry

        options = {"socket_connect_timeout": REDIS_SOCKET_TIMEOUT, "socket_timeout": REDIS_SOCKET_TIMEOUT,
                   # one immediate retry: a pooled connection that died with a Redis restart reconnects
                   "retry": Retry(NoBackoff(), 1), **options}
        self.redis = RedisStorage(uri.removeprefix(FALLBACK_PREFIX), **options)
        self.database = DatabaseCounter(database)
        self.retry_seconds = float(retry_seconds)
        self._redis_errors = RedisError
        self._lock = threading.Lock()
        self._on_database = False
        self._next_redis_try = 0.0

    @property
    def base_exceptions(self):
        return (SQLAlchemyError, SQLiteWriteLockHeld, self._redis_errors)

    @property
    def on_database(self) -> bool:
        """Whether this worker counts in the database now (Redis unreachable)."""
        return self._on_database

    def _try_redis(self) -> bool:
        if not self._on_database:
            return True
        now = time.monotonic()
        with self._lock:
            if now < self._next_redis_try:
                return False
            self._next_redis_try = now + self.retry_seconds  # this thread tries; the others stay put
            return True

    def _redis_failed(self, reason: str) -> None:
        with self._lock:
            self._next_redis_try = time.monotonic() + self.retry_seconds
            if self._on_database:
                return
            self._on_database = True
        log.warning("rate limits: Redis unreachable (%s); counting in the database, retrying Redis every %g s",
                    reason, self.retry_seconds)

    def _redis_back(self) -> None:
        if not self._on_database:
            return
        with self._lock:
            if not self._on_database:
                return
            self._on_database = False
        log.warning("rate limits: Redis reachable again; counting in Redis")

    def _call(self, name: str, *args, **kwargs):
        if self._try_redis():
            try:
                result = getattr(self.redis, name)(*args, **kwargs)
            except self._redis_errors as exc:
                self._redis_failed(type(exc).__name__)  # the class only: messages name hosts
            else:
                self._redis_back()
                return result
        return getattr(self.database, name)(*args, **kwargs)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self._call("incr", key, expiry, amount)

    def get(self, key: str) -> int:
        return self._call("get", key)

    def get_expiry(self, key: str) -> float:
        return self._call("get_expiry", key)

    def clear(self, key: str) -> None:
        return self._call("clear", key)

    def reset(self) -> int | None:
        return self._call("reset")

    def check(self) -> bool:
        return self.redis.check() or self.database.check()

    def status(self, *, database_ok: bool = True) -> dict[str, str]:
        """For /readyz: ``redis`` is ok or unreachable; ``rate_limits`` says where the counters are
        (redis, database, or unavailable). Pinging Redis also moves this worker either way now."""
        if self.redis.check():
            self._redis_back()
            return {"redis": "ok", "rate_limits": "redis"}
        self._redis_failed("ping")
        fallback = database_ok and self.database.check()
        return {"redis": "unreachable", "rate_limits": "database" if fallback else "unavailable"}


def storage_checks(*, database_ok: bool = True) -> dict[str, str]:
    """The rate-limit storage's part of /readyz: nothing for memory storage or disabled limits."""
    limiter = current_app.extensions.get("rate_limiter")
    if limiter is None or not limiter.enabled or not limiter.initialized:
        return {}
    storage = limiter.storage
    return storage.status(database_ok=database_ok) if isinstance(storage, RedisWithDatabaseFallback) else {}
