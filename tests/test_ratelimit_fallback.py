"""Rate limits while Redis is down: counted in the database, shared by every worker and node.

The unit tests run on SQLite and PostgreSQL; the last test starts its own ``redis-server`` and two
gunicorn nodes on PostgreSQL, stops Redis in the middle of the run and starts it again.
"""
import base64
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from limits import parse
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import create_engine, select, update

from console import create_app
from console.extensions import db
from console.models.ratelimit import RateLimitCounter
from console.ratelimits import DatabaseCounter, RedisWithDatabaseFallback

from .concurrency import run_together
from .conftest import IsolatedClient, make_staff, post_form, sign_in
from .nodes import Browser, free_port, node_env, running_nodes

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused at once
WALLET_KEY = base64.urlsafe_b64encode(b"w" * 32).decode()  # as tests/nodes.py sets it
UNKNOWN_WALLET = "99999999999999"  # answers 404 at once (no password hashing) but is still counted
DEADLINE = 30


class RedisServer:
    """A private ``redis-server`` on a free port (never the shared one), started and stopped here."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except Exception:  # not listening yet
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def keys(self) -> list[str]:
        with self.client() as client:
            return [key.decode() for key in client.keys("*")]


@pytest.fixture
def redis_server():
    if not shutil.which("redis-server"):
        if os.environ.get("CI"):
            pytest.fail("CI needs redis-server")
        pytest.skip("redis-server not installed")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _storage(url: str, engine, **options) -> RedisWithDatabaseFallback:
    return RedisWithDatabaseFallback("console+" + url, database=lambda: engine, **options)


def _hits(key_part: str) -> int:
    db.session.rollback()
    value = db.session.scalar(select(RateLimitCounter.hits).where(RateLimitCounter.key.contains(key_part)))
    db.session.rollback()
    return value


# --- the database counter ----------------------------------------------------------------------


def test_two_workers_share_one_database_counter(app, database_url):
    """Two storages with their own engines (two workers, or two nodes) enforce one limit together."""
    engines = [create_engine(database_url), create_engine(database_url)]
    try:
        limiters = [FixedWindowRateLimiter(_storage(DEAD_REDIS, engine)) for engine in engines]
        limit = parse("5 per hour")
        assert [limiters[i % 2].hit(limit, "client:1") for i in range(7)] == [True] * 5 + [False] * 2
        assert limiters[1].hit(limit, "client:2")  # another key has its own count
        assert all(limiter.storage.on_database for limiter in limiters)

        # concurrently, from both "workers": exactly the limit gets through
        def hammer(i):
            return [limiters[i % 2].hit(parse("12 per hour"), "client:3") for _ in range(10)]

        results = [allowed for hits in run_together(hammer, 6) for allowed in hits]
        assert results.count(True) == 12 and len(results) == 60
        assert _hits("client:3") == 60
        stats = limiters[0].get_window_stats(limit, "client:1")
        assert stats.remaining == 0 and time.time() < stats.reset_time <= time.time() + 3600
    finally:
        for engine in engines:
            engine.dispose()


def test_a_lapsed_window_starts_again_and_expired_rows_are_pruned(app, database_url):
    engine = create_engine(database_url)
    try:
        counter = DatabaseCounter(lambda: engine)
        assert [counter.incr("k1", 60) for _ in range(3)] == [1, 2, 3]
        counter.incr("k2", 60)
        past = datetime.now(timezone.utc) - timedelta(seconds=1)
        with engine.begin() as conn:
            conn.execute(update(RateLimitCounter).where(RateLimitCounter.key == "k1").values(expires_at=past))
        assert counter.get("k1") == 0
        assert counter.incr("k1", 60) == 1  # a new window
        with engine.begin() as conn:
            conn.execute(update(RateLimitCounter).where(RateLimitCounter.key == "k2").values(expires_at=past))
        counter._prune(engine, force=True)
        with engine.connect() as conn:
            assert [row.key for row in conn.execute(select(RateLimitCounter.key))] == ["k1"]
        long_key = "x" * 400
        assert counter.incr(long_key, 60) == 1 and counter.get(long_key) == 1
    finally:
        engine.dispose()


def test_switches_to_the_database_and_back_logging_each_switch_once(app, database_url, redis_server, caplog):
    engine = create_engine(database_url)
    try:
        storage = _storage(redis_server.url, engine, retry_seconds=0)
        limiter, limit = FixedWindowRateLimiter(storage), parse("10 per hour")
        with caplog.at_level(logging.WARNING, logger="console.ratelimits"):
            assert limiter.hit(limit, "k") and not storage.on_database
            assert any("LIMITER/k/" in key for key in redis_server.keys())
            redis_server.stop()
            assert limiter.hit(limit, "k") and limiter.hit(limit, "k")
            assert storage.on_database and _hits("k") == 2
            assert storage.status() == {"redis": "unreachable", "rate_limits": "database"}
            redis_server.start()  # the same port, empty (no persistence)
            assert limiter.hit(limit, "k") and not storage.on_database
            assert redis_server.keys() and _hits("k") == 2
            assert storage.status() == {"redis": "ok", "rate_limits": "redis"}
        messages = [r.getMessage() for r in caplog.records if r.name == "console.ratelimits"]
        assert len(messages) == 2, messages
        assert "Redis unreachable (ConnectionError); counting in the database" in messages[0]
        assert "Redis reachable again" in messages[1]
        assert str(redis_server.port) not in " ".join(messages)
    finally:
        engine.dispose()


def test_redis_is_not_retried_on_every_request_while_it_is_down(app, database_url):
    engine = create_engine(database_url)
    try:
        storage = _storage(DEAD_REDIS, engine, retry_seconds=3600)
        calls = []
        original = storage.redis.incr
        storage.redis.incr = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
        for _ in range(5):
            storage.incr("k", 60)
        assert len(calls) == 1 and storage.database.get("k") == 5
    finally:
        engine.dispose()


def test_with_redis_and_the_database_down_requests_go_through(database_url):
    """swallow_errors: the database's own outage answers 503 elsewhere; the limiter stays out of the way."""
    app = create_app("testing", {"DATABASE_URL": database_url, "RATELIMIT_ENABLED": True,
                                 "RATELIMIT_STORAGE_URI": DEAD_REDIS, "LIMIT_STAFF_SIGNIN": "1 per minute"})
    app.test_client_class = IsolatedClient
    storage = app.extensions["rate_limiter"].storage
    dead = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    storage.database._engine = lambda: dead
    with app.app_context():
        client = app.test_client()
        codes = [post_form(client, "/auth/login", {"employee_no": "T1", "password": "x"}).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 200]
        assert storage.status(database_ok=False) == {"redis": "unreachable", "rate_limits": "unavailable"}
        db.session.remove()
        db.engine.dispose()
    dead.dispose()


# --- the application -------------------------------------------------------------------------


def _limited_apps(database_url, count=2, **settings):
    config = {"DATABASE_URL": database_url, "RATELIMIT_ENABLED": True, "RATELIMIT_STORAGE_URI": DEAD_REDIS,
              **settings}
    apps = [create_app("testing", config) for _ in range(count)]
    for node in apps:
        node.test_client_class = IsolatedClient
    return apps


def test_readyz_stays_ready_and_names_the_degradation(database_url):
    (node,) = _limited_apps(database_url, 1)
    with node.app_context():
        client = node.test_client()
        response = client.get("/readyz")
        assert response.status_code == 200
        body = response.get_json()
        assert set(body.pop("audit_chain")) == {"pending", "lag_seconds"}  # numbers only (#14)
        assert body == {
            "status": "ready", "degraded": ["rate_limit_storage"],
            "checks": {"database": "ok", "migrations": "ok", "redis": "unreachable", "rate_limits": "database"}}
        assert "127.0.0.1" not in response.get_data(as_text=True)
        node.extensions["migration_head"] = "9999_future"
        behind = client.get("/readyz")
        assert behind.status_code == 503 and behind.get_json()["checks"]["migrations"] == "behind"
        db.session.remove()
        db.engine.dispose()


def test_staff_keyed_limit_with_redis_down(database_url, backend):
    """PostgreSQL: the search limit holds while Redis is down. SQLite: the request's own transaction
    holds the only write lock, so the counter cannot be written and the request goes through (at
    once, never waiting for the lock)."""
    (node,) = _limited_apps(database_url, 1, LIMIT_SEARCH="2 per minute")
    with node.app_context():
        client = node.test_client()
        sign_in(client, make_staff("teller"))
        started = time.monotonic()
        answers = []
        for n in range(3):
            if n == 2:
                time.sleep(1.5)  # so that the window's end, read from its counter, is under a minute away
            answers.append(post_form(client, "/desk/search", {"kind": "wallet_no", "id_type": "resident_id",
                                                              "value": "123"}, token_from="/desk/"))
        codes = [answer.status_code for answer in answers]
        assert codes == ([200, 200, 429] if backend == "postgresql" else [200, 200, 200])
        if backend == "postgresql":
            # When the database's counter's window ends (it began with the first search, seconds ago):
            # less than the window's whole length, which is what an unread end would say.
            assert 50 <= int(answers[2].headers["Retry-After"]) < 60
        assert time.monotonic() - started < 20  # no 30-second wait for SQLite's lock
        db.session.remove()
        db.engine.dispose()


# --- two gunicorn nodes, Redis stopped mid-run and started again ---------------------------------


def _fire(nodes, count, client_ip, threads=8):
    """``count`` wallet sign-ins for ``client_ip`` spread over both nodes, ``threads`` at a time."""
    statuses, lock, jobs = [], threading.Lock(), list(range(count))

    def work():
        while True:
            with lock:
                if not jobs:
                    return
                i = jobs.pop()
            status, _h, _b = Browser().request(
                nodes[i % 2].url + "/api/wallet/v1/sign-in",
                json_body={"wallet_no": UNKNOWN_WALLET, "password": "x", "client_ip": client_ip},
                headers={"Authorization": f"Bearer {WALLET_KEY}"})
            with lock:
                statuses.append(status)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return statuses


def _readyz(node):
    """Status and body, without the audit chain's backlog figures (numbers that vary, #14)."""
    status, _h, body = Browser().request(node.url + "/readyz")
    body = json.loads(body)
    assert set(body.pop("audit_chain", {"pending": 0, "lag_seconds": 0})) == {"pending", "lag_seconds"}
    return status, body


def _until(predicate, what):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"not within {DEADLINE} s: {what}")


@pytest.mark.postgres_only
def test_redis_stopped_mid_run_keeps_limits_across_two_nodes_and_comes_back(app, backend, database_url,
                                                                             redis_server):
    limit = 20
    env = node_env(database_url, redis_server.url, CONSOLE_LIMIT_WALLET_SIGNIN=f"{limit} per hour")
    with running_nodes(env) as nodes:
        before = _fire(nodes, 5, "203.0.113.50")
        assert before == [404] * 5  # unknown wallet: allowed, answered, counted (in Redis)
        assert any("client:203.0.113.50" in key for key in redis_server.keys())

        redis_server.stop()
        during = _fire(nodes, 60, "203.0.113.50")
        assert set(during) <= {404, 429}, during
        allowed = during.count(404)
        assert allowed == limit  # the database counter is exact across both nodes and all workers
        assert len(before) + allowed <= 2 * limit  # the bar
        assert _hits("client:203.0.113.50") == 60  # every request of both nodes, in one shared row
        for node in nodes:
            assert "counting in the database" in node.log_tail(20000)
            status, body = _readyz(node)
            assert status == 200, body
            assert body == {"status": "ready", "degraded": ["rate_limit_storage"],
                            "checks": {"database": "ok", "migrations": "ok", "redis": "unreachable",
                                       "rate_limits": "database"}}

        redis_server.start()  # the same port, empty
        for node in nodes:
            _until(lambda node=node: _readyz(node) == (200, {"status": "ready", "checks": {
                "database": "ok", "migrations": "ok", "redis": "ok", "rate_limits": "redis"}}),
                "readyz without degradation")

        def counted_in_redis():
            assert set(_fire(nodes, 2, "203.0.113.51", threads=2)) <= {404, 429}
            return any("client:203.0.113.51" in key for key in redis_server.keys())

        _until(counted_in_redis, "counters in Redis again")
        assert any("Redis reachable again" in node.log_tail(20000) for node in nodes)
        logs = "".join(node.log_tail(20000) for node in nodes)
        assert "Traceback" not in logs and "Failed to rate limit" not in logs
