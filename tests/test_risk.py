"""Risk monitor: a burst of failures from many addresses freezes the wallet and raises an alert."""
import json

from console import policy
from console.extensions import db
from console.models.customer import RiskAlert
from console.models.notification import Notification

from .conftest import WALLET_PASSWORD, audit_events, get_wallet, make_branch, make_wallet, sign_in_wallet


def test_twenty_failures_from_five_addresses_freeze_the_wallet(app):
    wallet_no = make_wallet()
    results = [sign_in_wallet(wallet_no, "wrong-pass", source_ip=f"203.0.113.{i % 5}").result for i in range(20)]
    assert results[:5] == ["invalid_credentials"] * 4 + ["locked"]
    assert results[-1] == "frozen"
    wallet = get_wallet(wallet_no)
    assert wallet.frozen_at is not None and wallet.frozen_reason == "failure_burst"
    alert = db.session.query(RiskAlert).one()
    assert alert.status == "open" and json.loads(alert.details) == {"failures": 20, "sources": 5, "window_minutes": 10}
    frozen = audit_events("wallet.frozen")
    assert len(frozen) == 1 and frozen[0].actor_type == "system" and frozen[0].channel == "risk"
    # Frozen: refused without a check, and stays frozen after the lock would have lapsed.
    assert sign_in_wallet(wallet_no, WALLET_PASSWORD).result == "frozen"
    kinds = [n.kind for n in db.session.query(Notification).order_by(Notification.id)]
    assert "wallet_frozen" in kinds


def test_many_failures_from_one_address_lock_but_do_not_freeze(app):
    wallet_no = make_wallet()
    for _ in range(25):
        sign_in_wallet(wallet_no, "wrong-pass", source_ip="203.0.113.9")
    wallet = get_wallet(wallet_no)
    assert wallet.lock_kind == "temporary" and wallet.frozen_at is None
    assert db.session.query(RiskAlert).count() == 0


def test_rules_are_configuration(app):
    app.config.update(RISK_FREEZE_MIN_FAILURES=8, RISK_FREEZE_MIN_SOURCES=2)
    policy.rebuild(app)
    wallet_no = make_wallet()
    for i in range(8):
        sign_in_wallet(wallet_no, "wrong-pass", source_ip=f"203.0.113.{i % 2}")
    assert get_wallet(wallet_no).frozen_at is not None


def test_supervisors_see_open_alerts_on_their_home_page(app, client, login_as):
    wallet_no = make_wallet(name="刘洋")
    get_wallet(wallet_no).home_branch_id = make_branch("BJ-001").id  # alerts go to the wallet's home branch
    db.session.commit()
    for i in range(20):
        sign_in_wallet(wallet_no, "wrong-pass", source_ip=f"203.0.113.{i % 5}")
    login_as("supervisor")
    page = client.get("/").get_data(as_text=True)
    assert "风险预警" in page and wallet_no in page and "刘*" in page and "刘洋" not in page
