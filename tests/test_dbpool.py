"""Pooled PostgreSQL connections: pinged on checkout only after being idle (console/dbpool.py).

A connection handed back a moment ago goes out again without a round trip; one idle for longer
than ``DATABASE_PING_AFTER_IDLE_SECONDS`` is pinged and, if the server has dropped it, replaced
before anyone uses it. Inside the window a dropped connection fails the one statement that
finds it, and the pool is renewed for the next.
"""
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from config import ConfigError
from console import create_app
from console.extensions import db

pytestmark = pytest.mark.postgres_only


def _app(database_url: str, window: float):
    return create_app("testing", {"DATABASE_URL": database_url, "SERVER_NAME": None,
                                  "DATABASE_PING_AFTER_IDLE_SECONDS": window})


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _terminate(database_url: str, pid: int) -> None:
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
            deadline = time.monotonic() + 10
            while conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                               {"pid": pid}).scalar_one() and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        admin.dispose()


@pytest.fixture
def pings(monkeypatch):
    """Counts the pings of an engine: ``pings.watch(engine)``, then the list holds one item a ping."""
    class Pings(list):
        def watch(self, engine):
            real = engine.dialect.do_ping
            monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: self.append(1) or real(conn))

    return Pings()


def test_a_connection_in_use_a_moment_ago_goes_out_again_without_a_ping(database_url, backend, pings):
    app = _app(database_url, 30)
    with app.app_context():
        pings.watch(db.engine)
        first = _backend_pid(db.engine)
        assert [_backend_pid(db.engine) for _ in range(5)] == [first] * 5
        assert pings == []  # a new connection is not pinged, nor one handed back a moment ago
        db.engine.dispose()


def test_a_connection_idle_past_the_window_is_pinged_and_replaced_if_the_server_dropped_it(database_url, backend,
                                                                                             pings):
    app = _app(database_url, 0.2)
    with app.app_context():
        pings.watch(db.engine)
        first = _backend_pid(db.engine)
        _terminate(database_url, first)
        time.sleep(0.3)
        second = _backend_pid(db.engine)  # no error: the ping found the dropped connection first
        assert second != first and pings == [1]
        time.sleep(0.3)
        assert _backend_pid(db.engine) == second and pings == [1, 1]  # idle again: pinged, and it answered
        db.engine.dispose()


def test_window_zero_pings_on_every_checkout(database_url, backend, pings):
    app = _app(database_url, 0)
    with app.app_context():
        pings.watch(db.engine)
        for _ in range(3):
            _backend_pid(db.engine)
        assert pings == [1, 1]  # every checkout but the new connection's first
        db.engine.dispose()


def test_inside_the_window_a_dropped_connection_fails_one_statement_and_the_pool_is_renewed(database_url, backend):
    app = _app(database_url, 30)
    with app.app_context():
        first = _backend_pid(db.engine)
        _terminate(database_url, first)
        with pytest.raises(OperationalError):
            _backend_pid(db.engine)
        assert _backend_pid(db.engine) != first
        db.engine.dispose()


def test_a_deployment_that_chose_pool_pre_ping_keeps_it(database_url, backend, pings):
    app = create_app("testing", {"DATABASE_URL": database_url, "SERVER_NAME": None,
                                 "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
                                 "DATABASE_PING_AFTER_IDLE_SECONDS": 0})
    with app.app_context():
        pings.watch(db.engine)
        for _ in range(3):
            _backend_pid(db.engine)
        assert len(pings) == 2  # SQLAlchemy's own, on every checkout of a pooled connection; not ours as well
        db.engine.dispose()


@pytest.mark.parametrize("window", [-1, 61, "half"])
def test_a_window_set_by_create_app_is_checked_too(database_url, backend, window):
    with pytest.raises(ConfigError, match="DATABASE_PING_AFTER_IDLE_SECONDS"):
        _app(database_url, window)


def test_the_connection_returned_last_goes_out_first(database_url, backend):
    app = _app(database_url, 30)
    with app.app_context():
        with db.engine.connect() as a, db.engine.connect() as b:
            a_pid = a.execute(text("SELECT pg_backend_pid()")).scalar_one()
            b_pid = b.execute(text("SELECT pg_backend_pid()")).scalar_one()
            a.close()  # handed back first, b last
        assert _backend_pid(db.engine) == b_pid != a_pid
        db.engine.dispose()
