"""A pooled PostgreSQL connection is checked before use unless it was in use a moment ago.

SQLAlchemy's ``pool_pre_ping`` sends a round trip on every checkout, and a request checks a
connection out at least once (a wallet sign-in twice: before and after its password check). A
connection handed back less than ``DATABASE_PING_AFTER_IDLE_SECONDS`` ago was working then, so it
is handed out again without the ping: HikariCP does the same (``aliveBypassWindowMs``, 500 ms by
default). One idle for longer is pinged, and replaced if the database no longer answers on it.

What the window gives up: if the database drops a connection in the moment between its last
use and the next, that next statement fails as on any connection dropped mid-request (the
request answers 503, its transaction is rolled back, nothing is half-written), and SQLAlchemy
then replaces every connection of the pool made before the drop, so the following requests get
working ones. 0 pings on every checkout, as ``pool_pre_ping`` does.
"""
from __future__ import annotations

import time

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine

_IDLE_SINCE = "idle_since"  # in the DBAPI connection's info: dropped with the connection


def check_on_checkout(engine: Engine, after_idle: float) -> None:
    """Ping a pooled connection on checkout when it has been idle for more than ``after_idle`` seconds."""
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
