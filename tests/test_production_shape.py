"""Health endpoints, request ids and JSON log lines, rate limits (Redis, the database, memory), proxies."""
import json
import logging

import pytest

from console import create_app
from console.extensions import db
from console.observability import JsonFormatter

from .conftest import IsolatedClient, audit_events, make_staff, make_wallet, post_form, sign_in

REDIS = "redis://127.0.0.1:6379/15"


def test_healthz_and_readyz_reveal_nothing_else(app, client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    # Beside the checks only numbers (#14): audit events waiting to be chained and for how long.
    assert ready.get_json() == {"status": "ready", "checks": {"database": "ok", "migrations": "ok"},
                                "audit_chain": {"pending": 0, "lag_seconds": 0.0}}


def test_readyz_reports_redis_and_migrations(database_url):
    """Redis unreachable is a degradation (the limits count in the database), not an outage."""
    app = create_app("testing", {"DATABASE_URL": database_url, "RATELIMIT_ENABLED": True,
                                 "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1/0"})
    app.test_client_class = IsolatedClient
    with app.app_context():
        client = app.test_client()
        body = client.get("/readyz")
        assert body.status_code == 200 and body.get_json()["checks"]["redis"] == "unreachable"
        assert body.get_json()["degraded"] == ["rate_limit_storage"]
        app.extensions["migration_head"] = "9999_future"
        behind = client.get("/readyz")
        assert behind.status_code == 503 and behind.get_json()["checks"]["migrations"] == "behind"
        db.session.remove()
        db.engine.dispose()


def test_request_id_is_returned_and_logged_as_json(app, client, caplog):
    with caplog.at_level(logging.INFO, logger="console.request"):
        response = client.get("/auth/login", headers={"X-Request-ID": "abc12345-trace"})
    assert response.headers["X-Request-ID"] == "abc12345-trace"
    record = [r for r in caplog.records if r.name == "console.request"][-1]
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "request" and line["endpoint"] == "auth.login" and line["status"] == 200
    assert "duration_ms" in line and line["staff_id"] is None
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers["X-Request-ID"]
    assert len(generated) == 32 and " " not in generated


def test_log_lines_never_carry_query_strings_or_bodies(app, client, caplog, login_as):
    login_as("auditor", branch_code="HO-000")
    with caplog.at_level(logging.INFO, logger="console.request"):
        client.get("/audit/events?wallet=0031123456789012")
        post_form(app.test_client(), "/auth/login", {"employee_no": "X1", "password": "Secret-password-1"})
    text = "".join(JsonFormatter().format(r) for r in caplog.records)
    assert "0031123456789012" not in text and "Secret-password-1" not in text
    assert '"staff_id": ' in text


@pytest.fixture
def limited_app(database_url, tmp_path):
    app = create_app("testing", {"DATABASE_URL": database_url, "RATELIMIT_ENABLED": True,
                                 "LIMIT_STAFF_SIGNIN": "3 per minute", "LIMIT_WALLET_SIGNIN": "4 per minute",
                                 "LIMIT_SEARCH": "2 per minute", "LIMIT_OTP_SEND": "1 per minute"})
    app.test_client_class = IsolatedClient
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def test_staff_sign_in_is_rate_limited_with_a_clear_page_and_an_audit_event(limited_app):
    client = limited_app.test_client()
    for _ in range(3):
        assert post_form(client, "/auth/login", {"employee_no": "T1", "password": "x"}).status_code == 200
    blocked = post_form(client, "/auth/login", {"employee_no": "T1", "password": "x"})
    assert blocked.status_code == 429 and "请求过于频繁" in blocked.get_data(as_text=True)
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    event = audit_events("rate_limited")[-1]
    assert event.outcome == "denied" and json.loads(event.details)["employee_no"] == "T1"


def test_wallet_sign_in_is_limited_per_customer_address(limited_app):
    client = limited_app.test_client()
    wallet_no = make_wallet()
    key = limited_app.config["WALLET_SERVICE_KEY"]

    def call(ip):
        return client.post("/api/wallet/v1/sign-in", json={"wallet_no": wallet_no, "password": "Spring-rain-2468",
                                                           "client_ip": ip}, headers={"Authorization": f"Bearer {key}"})

    assert [call("198.51.100.1").status_code for _ in range(4)] == [200] * 4
    blocked = call("198.51.100.1")
    assert blocked.status_code == 429 and blocked.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert call("198.51.100.2").status_code == 200  # another customer address is not affected


def test_search_is_limited_per_staff_member(limited_app):
    client = limited_app.test_client()
    handle = make_staff("teller")
    limited_app.config["LIMIT_STAFF_SIGNIN"] = "100 per minute"
    sign_in(client, handle)
    codes = [post_form(client, "/desk/search", {"kind": "wallet_no", "id_type": "resident_id", "value": "123"},
                       token_from="/desk/").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert audit_events("rate_limited")[-1].actor_employee_no == handle.employee_no


def test_redis_down_counts_limits_in_the_database_for_every_node(database_url):
    """Two app instances (two nodes) with Redis unreachable share one counter in the database."""
    settings = {"DATABASE_URL": database_url, "RATELIMIT_ENABLED": True,
                "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1/0", "LIMIT_STAFF_SIGNIN": "2 per minute"}
    nodes = [create_app("testing", settings), create_app("testing", settings)]
    codes = []
    for i in range(3):
        node = nodes[i % 2]
        node.test_client_class = IsolatedClient
        with node.app_context():
            codes.append(post_form(node.test_client(), "/auth/login",
                                   {"employee_no": "T1", "password": "x"}).status_code)
            assert node.test_client().get("/healthz").status_code == 200
            db.session.remove()
    for node in nodes:
        with node.app_context():
            db.engine.dispose()
    assert codes == [200, 200, 429]  # per-node memory would have let the third one through


def test_redis_storage_is_shared_between_apps(database_url):
    """Two app instances (two nodes) count against the same Redis counters."""
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=0.5).flushdb()
    except redis.exceptions.ConnectionError:
        if __import__("os").environ.get("CI"):
            raise
        pytest.skip("Redis not reachable")
    settings = {"DATABASE_URL": database_url, "RATELIMIT_ENABLED": True, "RATELIMIT_STORAGE_URI": REDIS,
                "LIMIT_STAFF_SIGNIN": "3 per minute"}
    nodes = [create_app("testing", settings), create_app("testing", settings)]
    codes = []
    for i in range(4):
        node = nodes[i % 2]
        node.test_client_class = IsolatedClient
        with node.app_context():
            codes.append(post_form(node.test_client(), "/auth/login",
                                   {"employee_no": "T1", "password": "x"}).status_code)
            db.session.remove()
    for node in nodes:
        with node.app_context():
            db.engine.dispose()
    assert codes == [200, 200, 200, 429]


def test_forwarded_headers_only_from_a_trusted_proxy(database_url):
    plain = create_app("testing", {"DATABASE_URL": database_url})
    proxied = create_app("testing", {"DATABASE_URL": database_url, "TRUSTED_PROXY_HOPS": 1})
    seen = {}
    for name, node in (("plain", plain), ("proxied", proxied)):
        @node.get("/_ip_probe")
        def probe():
            from flask import request

            return request.remote_addr
        seen[name] = node.test_client().get("/_ip_probe", headers={"X-Forwarded-For": "203.0.113.9"},
                                             environ_base={"REMOTE_ADDR": "10.0.0.2"}).get_data(as_text=True)
    assert seen == {"plain": "10.0.0.2", "proxied": "203.0.113.9"}


def test_a_plain_process_hashes_passwords_at_the_production_cost():
    """The suite hashes cheaply (conftest); the application itself never does."""
    import subprocess
    import sys
    from pathlib import Path

    from argon2 import extract_parameters, profiles

    made = subprocess.run([sys.executable, "-c", "from console.passwords import hash_password; "
                           "print(hash_password('Spring-rain-2468'))"],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True)
    assert extract_parameters(made.stdout.strip()) == profiles.RFC_9106_LOW_MEMORY
