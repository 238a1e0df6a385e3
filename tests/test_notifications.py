"""The SMS outbox: written with the change, delivered by a worker through a gateway."""
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from console.adapters.sms import DeliveryError, HttpGateway, LogGateway, SmsMessage
from console import policy
from console.extensions import db
from console.models.notification import Notification, NotificationAttempt
from console.services import notifications, wallet_credentials
from console.services.actor import Actor

from .conftest import get_wallet, make_wallet


class FakeProvider(BaseHTTPRequestHandler):
    """A local SMS provider: answers from a script of status codes, records what it got."""

    script: list = []
    received: list = []
    delay = 0.0

    def do_POST(self):  # noqa: N802 - http.server API
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        type(self).received.append({"body": body, "auth": self.headers.get("Authorization"),
                                    "key": self.headers.get("Idempotency-Key")})
        status = type(self).script.pop(0) if type(self).script else 200
        if type(self).delay:
            threading.Event().wait(type(self).delay)
        payload = json.dumps({"id": f"prov-{len(type(self).received)}"}).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def provider():
    FakeProvider.script, FakeProvider.received, FakeProvider.delay = [], [], 0.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeProvider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/sms", FakeProvider
    server.shutdown()
    server.server_close()


MESSAGE = SmsMessage(ref="N1", mobile="13812345678", text="【演示银行】测试", kind="test")


def test_http_gateway_delivers(provider):
    url, fake = provider
    gateway = HttpGateway(url, "tok", sleep=lambda s: None)
    assert gateway.send(MESSAGE) == "prov-1"
    assert fake.received[0]["body"] == {"ref": "N1", "to": "13812345678", "text": "【演示银行】测试"}
    assert fake.received[0]["auth"] == "Bearer tok" and fake.received[0]["key"] == "N1"


def test_http_gateway_retries_with_backoff_then_succeeds(provider):
    url, fake = provider
    fake.script = [503, 500]
    waits = []
    gateway = HttpGateway(url, None, retries=3, backoff=0.5, sleep=waits.append)
    assert gateway.send(MESSAGE) == "prov-3"
    assert waits == [0.5, 1.0] and len(fake.received) == 3


def test_http_gateway_gives_up_after_retries(provider):
    url, fake = provider
    fake.script = [502, 502, 502]
    gateway = HttpGateway(url, None, retries=2, sleep=lambda s: None)
    with pytest.raises(DeliveryError) as caught:
        gateway.send(MESSAGE)
    assert not caught.value.permanent and "502" in str(caught.value)


def test_http_gateway_permanent_error_is_not_retried(provider):
    url, fake = provider
    fake.script = [400]
    with pytest.raises(DeliveryError) as caught:
        HttpGateway(url, None, sleep=lambda s: None).send(MESSAGE)
    assert caught.value.permanent and len(fake.received) == 1


def test_http_gateway_times_out(provider):
    url, fake = provider
    fake.delay = 1.0
    gateway = HttpGateway(url, None, timeout=0.2, retries=1, sleep=lambda s: None)
    with pytest.raises(DeliveryError) as caught:
        gateway.send(MESSAGE)
    assert "timed out" in str(caught.value).lower() or "Timeout" in str(caught.value)


def test_http_gateway_connection_refused():
    gateway = HttpGateway("http://127.0.0.1:9/sms", None, timeout=0.5, retries=1, sleep=lambda s: None)
    with pytest.raises(DeliveryError):
        gateway.send(MESSAGE)


def test_outbox_row_is_part_of_the_transaction(app):
    wallet_no = make_wallet()
    before = db.session.query(Notification).count()
    wallet_credentials.issue_temporary_password(db.session, Actor.operator(), get_wallet(wallet_no),
                                                reason_code="forgot_password")
    db.session.rollback()
    assert db.session.query(Notification).count() == before
    wallet = get_wallet(wallet_no)
    assert wallet.temp_password_hash is None


def test_worker_delivers_through_the_log_gateway_without_logging_secrets(app, tmp_path, caplog):
    wallet_no = make_wallet(mobile="13812345678")
    wallet_credentials.issue_temporary_password(db.session, Actor.operator(), get_wallet(wallet_no),
                                                reason_code="forgot_password")
    db.session.commit()
    secret_row = db.session.query(Notification).filter_by(kind="temporary_password").one()
    temporary = notifications.message_text(secret_row).split("临时密码为")[1][:12]
    outbox = tmp_path / "sms.log"
    with caplog.at_level(logging.DEBUG):
        counts = notifications.deliver_due(db.session, LogGateway(outbox))
    assert counts["sent"] == db.session.query(Notification).count() and counts["failed"] == 0
    lines = [json.loads(line) for line in outbox.read_text(encoding="utf-8").splitlines()]
    assert any(temporary in line["text"] for line in lines)  # the customer's handset gets it
    assert all(line["to"] == "138****5678" for line in lines)
    assert temporary not in caplog.text and "13812345678" not in caplog.text
    assert all(n.status == "sent" and n.attempts == 1 for n in db.session.query(Notification))
    assert db.session.query(NotificationAttempt).filter_by(outcome="sent").count() == counts["sent"]
    # Stored text is encrypted at rest.
    assert temporary.encode() not in secret_row.body_enc


class FailingGateway:
    name = "http"

    def __init__(self, permanent=False):
        self.permanent = permanent

    def send(self, message):
        raise DeliveryError("HTTP 503", permanent=self.permanent)


def test_failed_delivery_backs_off_then_gives_up(app):
    from datetime import timedelta

    from console import timeutil

    app.config.update(SMS_MAX_ATTEMPTS=3, SMS_RETRY_BASE_SECONDS=30)
    policy.rebuild(app)
    make_wallet()  # setting its security questions queues one SMS
    counts = notifications.deliver_due(db.session, FailingGateway())
    assert counts == {"sent": 0, "retry": 1, "failed": 0}
    row = db.session.query(Notification).one()
    assert row.status == "pending" and row.attempts == 1
    assert notifications.deliver_due(db.session, FailingGateway()) == {"sent": 0, "retry": 0, "failed": 0}  # not due yet
    timeutil.set_offset(timedelta(seconds=31))
    notifications.deliver_due(db.session, FailingGateway())
    timeutil.set_offset(timedelta(seconds=31 + 61))
    assert notifications.deliver_due(db.session, FailingGateway())["failed"] == 1
    db.session.expire_all()
    row = db.session.query(Notification).one()
    assert row.status == "failed" and row.attempts == 3 and row.last_error == "HTTP 503"
    assert [a.outcome for a in row.delivery_attempts] == ["retry", "retry", "failed"]


def test_permanent_failure_stops_at_once(app):
    make_wallet()
    assert notifications.deliver_due(db.session, FailingGateway(permanent=True))["failed"] == 1


def test_cli_delivers(app, runner, tmp_path):
    app.config["SMS_LOG_PATH"] = str(tmp_path / "outbox.log")
    make_wallet()
    result = runner.invoke(args=["console", "deliver-notifications"])
    assert result.exit_code == 0 and "sent 1" in result.output
    assert (tmp_path / "outbox.log").exists()


def test_http_gateway_from_config(app, provider, runner):
    url, fake = provider
    app.config.update(SMS_GATEWAY="http", SMS_HTTP_URL=url, SMS_HTTP_TOKEN="t0k")
    make_wallet()
    result = runner.invoke(args=["console", "deliver-notifications"])
    assert "sent 1" in result.output and "gateway http" in result.output
    assert fake.received[0]["body"]["text"].startswith("【演示银行】")
