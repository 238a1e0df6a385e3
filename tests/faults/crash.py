"""Crashing the engine between any two of its statements, in process.

A :class:`Crash` is a ``BaseException`` raised from SQLAlchemy's ``before_cursor_execute``:
the statement never runs, SQLAlchemy treats it like a process exit and invalidates the
connection, so the database aborts the open transaction exactly as it does when a worker is
killed. What was committed before stays; nothing after runs.
"""
from __future__ import annotations

import contextlib
import itertools

from sqlalchemy import create_engine, event, text


class Crash(BaseException):
    """The worker died here."""


@contextlib.contextmanager
def statements_counted(engine):
    """Count the statements sent through ``engine`` inside the block."""
    counter = {"n": 0}

    def before(conn, cursor, statement, parameters, context, executemany):
        counter["n"] += 1

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", before)


@contextlib.contextmanager
def crash_before_statement(engine, n: int, *, drop_connection_url: str | None = None):
    """Die just before the ``n``-th statement (1-based) sent through ``engine`` in the block.

    With ``drop_connection_url`` (PostgreSQL) the connection is instead terminated from the
    server side (``pg_terminate_backend``), so the statement fails as on a dropped connection.
    """
    count = itertools.count(1)
    fired = {"at": None}

    def before(conn, cursor, statement, parameters, context, executemany):
        if next(count) != n:
            return
        fired["at"] = statement
        if drop_connection_url is None:
            raise Crash(statement)
        pid = conn.connection.dbapi_connection.info.backend_pid
        admin = create_engine(drop_connection_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as c:
                c.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        finally:
            admin.dispose()

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield fired
    finally:
        event.remove(engine, "before_cursor_execute", before)
