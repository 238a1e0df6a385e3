"""Two gunicorn nodes on different ports against one PostgreSQL and one Redis: nothing node-local."""
import base64

import pyotp
import pytest

from console.extensions import db
from console.models.customer import LoginAttempt
from console.services import audit

from .concurrency import run_together
from .conftest import audit_events, get_wallet, make_staff, make_wallet
from .nodes import Browser, node_env, running_nodes

pytestmark = pytest.mark.postgres_only
REDIS = "redis://127.0.0.1:6379/14"
WALLET_KEY = base64.urlsafe_b64encode(b"w" * 32).decode()  # as in the test configuration


@pytest.fixture
def nodes(app, backend, database_url):
    with running_nodes(node_env(database_url, REDIS)) as started:
        yield started


def _sign_in(browser, node, handle, code):
    browser.post_form(node.url, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    status, headers, _ = browser.post_form(node.url, "/auth/totp", {"code": code})
    assert status == 302 and headers["Location"] == "/", (status, headers.get("Location"))


def test_lockout_split_across_nodes_locks_at_exactly_the_limit(app, nodes):
    wallet_no = make_wallet()

    def attempt(i):
        status, _h, body = Browser().request(nodes[i % 2].url + "/api/wallet/v1/sign-in", json_body={
            "wallet_no": wallet_no, "password": "wrong-password", "client_ip": "198.51.100.4"},
            headers={"Authorization": f"Bearer {WALLET_KEY}"})
        return status, body

    results = run_together(attempt, 24)
    assert all(status == 200 for status, _ in results), results[:3]
    checked = db.session.query(LoginAttempt).filter_by(password_checked=True).count()
    assert checked == 5
    assert len(audit_events("wallet.locked")) == 1
    assert get_wallet(wallet_no).lock_kind == "temporary"


def test_sign_out_on_one_node_ends_the_session_on_the_other(app, nodes):
    handle = make_staff("teller")
    browser = Browser()
    _sign_in(browser, nodes[0], handle, pyotp.TOTP(handle.totp_secret).now())
    assert browser.request(nodes[1].url + "/")[0] == 200  # the session works on the other node
    status, _h, _b = browser.post_form(nodes[1].url, "/auth/logout", {}, token_from="/")
    assert status == 302
    status, headers, _ = browser.request(nodes[0].url + "/")
    assert status == 302 and "/auth/login" in headers["Location"]


def test_audit_chain_stays_intact_with_both_nodes_writing(app, nodes):
    handle = make_staff("teller")
    wallet_no = make_wallet()
    before = len(audit_events())
    browser = Browser()
    _sign_in(browser, nodes[0], handle, pyotp.TOTP(handle.totp_secret).now())
    token = browser.csrf(nodes[1].url + "/desk/")  # one CSRF secret in the shared session cookie

    def search(i):
        for _ in range(25):
            status, _h, _b = browser.request(nodes[i % 2].url + "/desk/search", {
                "kind": "wallet_no", "id_type": "resident_id", "value": wallet_no, "csrf_token": token})
            assert status == 303  # the one match opens at once

    run_together(search, 4)  # a failed search in any thread fails the test
    report = audit.verify_chain(db.session)
    assert report.intact
    assert len(audit_events("customer.search")) == 100
    assert report.count >= before + 100
