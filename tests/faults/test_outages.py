"""Faults under load: PostgreSQL restarted while two nodes serve; Redis down.

Requests during the outage fail cleanly (a 503, never a hang or a half-written change), the
nodes recover without a restart, and every action still has its audit event and vice versa.
"""
import json
import os
import shutil
import subprocess
import threading
import time

import pyotp
import pytest
from sqlalchemy import text

from console.extensions import db
from console.services import audit

from ..conftest import get_wallet, make_staff, make_wallet
from ..nodes import Browser, Node, node_env, running_nodes

pytestmark = pytest.mark.postgres_only
REDIS = "redis://127.0.0.1:6379/13"


def _can_restart_postgres() -> bool:
    return bool(shutil.which("pg_ctlcluster")) and os.geteuid() == 0 and os.path.isdir("/etc/postgresql")


def _restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
                   check=True, capture_output=True, timeout=120)
    for _ in range(60):
        if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"]).returncode == 0:
            return
        time.sleep(0.5)
    raise RuntimeError("PostgreSQL did not come back")


@pytest.fixture
def nodes(app, backend, database_url):
    with running_nodes(node_env(database_url, REDIS)) as started:
        yield started


def test_postgres_restart_during_load(app, nodes):
    if not _can_restart_postgres():
        if os.environ.get("CI"):
            pytest.fail("CI must be able to restart PostgreSQL (root and pg_ctlcluster)")
        pytest.skip("needs root and pg_ctlcluster to restart PostgreSQL")
    handle = make_staff("teller")
    customer_no = get_wallet(make_wallet()).customer.customer_no
    browser = Browser()
    browser.post_form(nodes[0].url, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    status, _h, _b = browser.post_form(nodes[0].url, "/auth/totp", {"code": pyotp.TOTP(handle.totp_secret).now()})
    assert status == 302
    token = browser.csrf(nodes[0].url + "/desk/")
    outcomes, lock, stop = [], threading.Lock(), threading.Event()

    def load(node):
        while not stop.is_set():
            started = time.monotonic()
            try:
                status, _h, _b = browser.request(node.url + f"/desk/customers/{customer_no}/cases",
                                                 {"csrf_token": token})
            except OSError as exc:  # a connection reset while the database restarts
                status = type(exc).__name__
            with lock:
                outcomes.append((time.monotonic(), status, time.monotonic() - started))
            time.sleep(0.05)

    threads = [threading.Thread(target=load, args=(node,)) for node in nodes]
    for t in threads:
        t.start()
    time.sleep(2)
    restart_at = time.monotonic()
    _restart_postgres()
    back_at = time.monotonic()
    time.sleep(6)
    stop.set()
    for t in threads:
        t.join()

    statuses = {status for _at, status, _d in outcomes}
    assert statuses <= {302, 503}, (statuses, nodes[0].log_tail(), nodes[1].log_tail())  # a case opened (redirect), or a clean 503
    assert max(duration for _at, _s, duration in outcomes) < 30  # nothing hangs
    after = [status for at, status, _d in outcomes if at > back_at + 3]
    assert after and set(after) == {302}, after  # recovered without restarting the nodes
    assert any(at < restart_at and status == 302 for at, status, _d in outcomes)

    try:
        db.session.remove()  # this test's own connection was cut by the restart
    except Exception:
        pass
    db.engine.dispose()
    cases = {row[0] for row in db.session.execute(text("SELECT case_no FROM service_case"))}
    opened = {row[0] for row in db.session.execute(
        text("SELECT case_ref FROM audit_event WHERE action = 'case.open' AND outcome = 'success'"))}
    assert cases == opened and len(cases) == sum(1 for _at, s, _d in outcomes if s == 302)
    assert audit.verify_chain(db.session).intact


def test_redis_down_leaves_everything_else_working(app, backend, database_url):
    env = node_env(database_url, "redis://127.0.0.1:1/0", CONSOLE_LIMIT_STAFF_SIGNIN="3 per minute")
    node = Node(env)
    try:
        node.wait_ready()  # ready: the rate limits count in the database while Redis is unreachable ...
        status, _h, body = Browser().request(node.url + "/readyz")
        assert status == 200 and json.loads(body)["degraded"] == ["rate_limit_storage"]  # ... and it says so
        handle = make_staff("teller")
        browser = Browser()
        browser.post_form(node.url, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
        status, _h, _b = browser.post_form(node.url, "/auth/totp", {"code": pyotp.TOTP(handle.totp_secret).now()})
        assert status == 302 and browser.request(node.url + "/")[0] == 200
    finally:
        node.stop()
