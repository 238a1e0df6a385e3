"""Real gunicorn workers killed (os._exit) at each point of a sign-in, on PostgreSQL.

The client of the killed request gets no answer; the customer retries and is answered
truthfully once the dead claim expires; state, attempt log and audit trail agree.
"""
from __future__ import annotations

import base64
import http.client
import os
import time
import urllib.error

import pytest
from sqlalchemy import func, select

from console.extensions import db
from console.models.customer import LoginAttempt
from console.services import audit

from ..concurrency import run_together
from ..conftest import WALLET_PASSWORD, audit_events, get_wallet, make_wallet
from ..nodes import Browser, Node, node_env

pytestmark = pytest.mark.postgres_only
WALLET_KEY = base64.urlsafe_b64encode(b"w" * 32).decode()
POINTS = ("signin.claimed", "signin.checked", "signin.settling", "signin.settled", "signin.committed")


@pytest.fixture
def node(app, backend, database_url, tmp_path):
    control = tmp_path / "fault"
    env = node_env(database_url, "redis://127.0.0.1:6379/14", CONSOLE_TEST_FAULT_FILE=str(control),
                   CONSOLE_WALLET_CLAIM_TTL_SECONDS="1")
    started = Node(env, app="tests.faultapp:app")
    try:
        started.wait_ready()
        started.control = control
        yield started
    finally:
        started.stop()


def _sign_in(node, wallet_no, password):
    return Browser().request(node.url + "/api/wallet/v1/sign-in", json_body={
        "wallet_no": wallet_no, "password": password, "client_ip": "198.51.100.4"},
        headers={"Authorization": f"Bearer {WALLET_KEY}"})


def _killed_at(node, point, wallet_no, password):
    node.control.write_text(point)
    try:
        status, _h, body = _sign_in(node, wallet_no, password)
    except (urllib.error.URLError, http.client.RemoteDisconnected, ConnectionError):
        status = None
    assert status is None, f"the worker answered {status} instead of dying at {point}"
    assert not node.control.exists() and os.path.exists(str(node.control) + ".fired")
    os.unlink(str(node.control) + ".fired")


def _answer_after_retry(node, wallet_no, password) -> dict:
    import json

    deadline = time.monotonic() + 30
    while True:
        try:
            status, _h, body = _sign_in(node, wallet_no, password)
            if status == 200:
                return json.loads(body)
        except (urllib.error.URLError, ConnectionError):  # the worker is being replaced
            pass
        assert time.monotonic() < deadline, "the wallet stayed unusable"
        time.sleep(0.2)


@pytest.mark.parametrize("point", POINTS)
def test_a_killed_worker_leaves_the_wallet_usable(app, node, point):
    wallet_no = make_wallet()
    _killed_at(node, point, wallet_no, WALLET_PASSWORD)
    answer = _answer_after_retry(node, wallet_no, WALLET_PASSWORD)
    assert answer["result"] == "ok", answer
    wallet = get_wallet(wallet_no)
    assert wallet.attempt_seq == wallet.settled_seq and wallet.failed_count == 0
    results = [r for (r,) in db.session.execute(select(LoginAttempt.result).order_by(LoginAttempt.seq))]
    # Killed before its settlement committed: the dead attempt is abandoned (and audited); after: it counted.
    killed_before_commit = point in ("signin.claimed", "signin.checked", "signin.settling", "signin.settled")
    assert results == (["abandoned", "ok"] if killed_before_commit else ["ok", "ok"])
    assert len(audit_events("wallet.attempt_abandoned")) == (1 if killed_before_commit else 0)
    assert db.session.scalar(select(func.count()).select_from(LoginAttempt)
                             .where(LoginAttempt.result == "pending")) == 0
    assert audit.verify_chain(db.session).intact


def test_a_worker_killed_during_the_fifth_wrong_password_neither_sticks_nor_skips_the_lock(app, node):
    wallet_no = make_wallet()
    for _ in range(4):
        assert _answer_after_retry(node, wallet_no, "wrong-password-1")["result"] == "invalid_credentials"
    _killed_at(node, "signin.checked", wallet_no, "wrong-password-1")
    # The killed check told nobody anything and counts for nothing; the next wrong password locks.
    answer = _answer_after_retry(node, wallet_no, "wrong-password-2")
    assert answer["result"] == "locked" and answer["unlock"] == "automatic"
    assert get_wallet(wallet_no).lock_kind == "temporary"
    assert len(audit_events("wallet.locked")) == 1
    assert _answer_after_retry(node, wallet_no, WALLET_PASSWORD)["result"] == "locked"


def test_bursts_across_two_nodes_with_connections_dropped_leave_no_wallet_stuck(app, backend, database_url, tmp_path):
    """The review's scenario: bursts of sign-ins across two nodes while every app connection to the
    database is terminated mid-burst. Answers are 200 or 503 (never 500); afterwards each wallet
    answers truthfully and has no claim left pending."""
    import json

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from ..nodes import running_nodes

    env = node_env(database_url, "redis://127.0.0.1:6379/14", CONSOLE_WALLET_CLAIM_TTL_SECONDS="1",
                   CONSOLE_TEST_FAULT_FILE=str(tmp_path / "unused"))
    admin = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], isolation_level="AUTOCOMMIT")
    dbname = make_url(database_url).database
    statuses: list[int | None] = []
    with running_nodes(env) as nodes:
        for burst_no in range(4):
            wallet_no = make_wallet()

            def attempt(i, wallet_no=wallet_no):
                password = WALLET_PASSWORD if i == 7 else "wrong-password-1"
                try:
                    status, _h, _b = Browser().request(nodes[i % 2].url + "/api/wallet/v1/sign-in", json_body={
                        "wallet_no": wallet_no, "password": password, "client_ip": "198.51.100.4"},
                        headers={"Authorization": f"Bearer {WALLET_KEY}"})
                except (urllib.error.URLError, ConnectionError):
                    status = None
                return status

            def drop_connections(burst_no=burst_no):
                time.sleep(0.05 * (burst_no + 1))  # drop at a different moment in each burst
                with admin.connect() as conn:
                    conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                      "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": dbname})

            statuses += run_together(attempt, 12, during=drop_connections, timeout=None)
            db.session.remove()
            db.engine.dispose()  # the kill dropped this process's pooled connections too
            answer = _answer_after_retry(nodes[0], wallet_no, WALLET_PASSWORD)
            wallet = get_wallet(wallet_no)
            assert wallet.attempt_seq == wallet.settled_seq, f"burst {burst_no}: a claim is left pending"
            if wallet.lock_kind:
                assert answer["result"] == "locked"
            else:
                assert answer["result"] == "ok" and wallet.failed_count == 0
            assert db.session.scalar(select(func.count()).select_from(LoginAttempt)
                                     .where(LoginAttempt.result == "pending")) == 0
    admin.dispose()
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses  # the drops did hit requests in flight
    assert audit.verify_chain(db.session).intact
