"""A pooled PostgreSQL connection is checked before use unless it was in use a moment ago.

SQLAlchemy's ``pool_pre_ping`` sends a round trip on every checkout, and a request checks a
connection out at least once (a wallet sign-in twice: before and after its password check). A
connection handed back less than ``DATABASE_PING_AFTER_IDLE_SECONDS`` ago was working then, so it
is handed out again without the ping: HikariCP does the same (``aliveBypassWindowMs``, 500 ms by
default). One idle for longer is pinged, and replaced if the database no longer answers on it.

What the window gives up: a connection the database dropped in the moment since its last use is
found by the statement that next uses it, as a connection dropped mid-statement is: that statement
fails, the transaction it was in rolls back and the request answers 503; SQLAlchemy then replaces
every connection of the pool made before the drop, so the following requests get working ones. A
request that commits more than once loses only its current transaction: a wallet sign-in whose
connection drops during its password check (its second checkout comes ~0.1 s after its first)
answers 503 and leaves its committed claim pending, which the lockout engine gives up as abandoned
after ``WALLET_CLAIM_TTL_SECONDS`` (docs/lockout-engine.md), as it does for a worker killed there.
A drop between two uses that close together is a restart or failover of the database (when the
requests in flight fail too) or a kill by hand; a server, PgBouncer or firewall that closes idle
connections does so after minutes, far past the window. 0 pings on every checkout, as
``pool_pre_ping`` does.

The pool hands out the connection returned last (``pool_use_lifo``), so under light load it is the
one most likely used a moment ago, and the rest may idle out.
"""
from __future__ import annotations

import time

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine

_IDLE_SINCE = "idle_since"  # in the DBAPI connection's info: dropped with the connection


def check_on_checkout(engine: Engine, after_idle: float) -> None:
    """Ping a pooled connection on checkout when it has been idle for at least ``after_idle`` seconds."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection, record):
        if dbapi_connection is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, proxy):
        idle_since = record.info.pop(_IDLE_SINCE, None)
        if idle_since is None or time.monotonic() - idle_since < after_idle:
            return  # a new connection, or one that was in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as err:
            if dialect.is_disconnect(err, dbapi_connection, None):
                # The pool replaces this connection (and every older one) and hands out a new one.
                raise exc.InvalidatePoolError() from err
            raise
