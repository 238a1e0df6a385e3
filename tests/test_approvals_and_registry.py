"""Maker-checker at the service level (expiry, exactly-once under concurrency) and the registry adapters."""
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from console import timeutil
from console.adapters.registry import HttpRegistry, LocalRegistry
from console.extensions import db
from console.models.service import Approval
from console.models.staff import Staff
from console.services import cases, operations, verification
from console.services.actor import Actor
from console.services.errors import DomainError

from .concurrency import run_together
from .conftest import ID_NUMBERS, audit_events, get_wallet, make_staff, make_wallet


def _actor(handle, channel):
    return Actor.for_staff(db.session.get(Staff, handle.id), channel=channel)


def _verified_request(wallet_no, maker):
    """A maker files a freeze-release request after a counter verification."""
    case_actor = _actor(maker, "counter")
    wallet = get_wallet(wallet_no)
    wallet.frozen_at, wallet.frozen_reason = timeutil.utcnow(), "failure_burst"
    case = cases.open_case(db.session, case_actor, wallet.customer)
    db.session.commit()
    proof = verification.verify_at_counter(db.session, case_actor, case, id_type="resident_id",
                                           id_number=ID_NUMBERS[wallet_no], photo_matches=True,
                                           registry=LocalRegistry(db.session))
    assert proof.status == "passed", proof.failure_reason
    result = operations.perform(db.session, case_actor, case, wallet, "release_freeze", reason_code="risk_reviewed")
    db.session.commit()
    assert result.status == "pending_approval"
    return result.approval.id


def test_requests_expire_after_thirty_minutes(app):
    wallet_no = make_wallet()
    maker, checker = make_staff("teller"), make_staff("supervisor")
    approval_id = _verified_request(wallet_no, maker)
    timeutil.set_offset(timedelta(minutes=31))
    row = db.session.get(Approval, approval_id)
    with pytest.raises(DomainError):
        operations.decide(db.session, _actor(checker, "counter"), row, approve=True, note="late")
    db.session.rollback()
    operations.expire_stale(db.session)
    db.session.commit()
    assert db.session.get(Approval, approval_id).status == "expired"
    assert get_wallet(wallet_no).frozen_at is not None
    assert audit_events("approval.expire")[0].actor_type == "system"


def test_checker_of_another_branch_cannot_see_the_request(app):
    wallet_no = make_wallet()
    maker = make_staff("teller", branch_code="BJ-001")
    other = make_staff("supervisor", branch_code="SH-002")
    approval_id = _verified_request(wallet_no, maker)
    with pytest.raises(DomainError) as caught:
        operations.get_approval(db.session, _actor(other, "counter"), approval_id)
    assert caught.value.audit["reason_code"] == "not_found_or_other_branch"


@pytest.mark.postgres_only
def test_two_supervisors_approving_at_once_execute_once(app, backend):
    wallet_no = make_wallet()
    maker = make_staff("teller")
    checkers = [make_staff("supervisor"), make_staff("supervisor")]
    approval_id = _verified_request(wallet_no, maker)

    def load(i):
        return (Actor.for_staff(db.session.get(Staff, checkers[i].id), channel="counter"),
                db.session.get(Approval, approval_id))

    def approve(loaded):
        actor, row = loaded  # both checkers hold the request, still pending, before either decides
        try:
            operations.decide(db.session, actor, row, approve=True, note="核实无误")
            db.session.commit()
            return "executed"
        except DomainError as exc:
            db.session.rollback()
            return exc.audit["reason_code"] if exc.audit else exc.message

    outcomes = run_together(approve, 2, app=app, setup=load)
    assert sorted(outcomes) == ["already_decided", "executed"]
    assert db.session.get(Approval, approval_id).status == "executed"
    assert len([e for e in audit_events("wallet.release_freeze") if e.outcome == "success"]) == 1
    assert get_wallet(wallet_no).frozen_at is None


class Registry(BaseHTTPRequestHandler):
    answers: dict = {}

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, payload = type(self).answers.get(body["id_number"], (200, {"result": "not_found"}))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def registry_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/check"
    server.shutdown()
    server.server_close()


def test_http_registry(registry_server):
    Registry.answers = {"A1": (200, {"result": "match"}), "A2": (200, {"result": "mismatch"}),
                        "A3": (500, {}), "A4": (200, {"result": "maybe"})}
    registry = HttpRegistry(registry_server, "tok", timeout=2)
    assert registry.check("resident_id", "A1", "张伟") == "match"
    assert registry.check("resident_id", "A2", "张伟") == "mismatch"
    assert registry.check("resident_id", "A3", "张伟") == "unavailable"
    assert registry.check("resident_id", "A4", "张伟") == "unavailable"
    assert registry.check("resident_id", "A5", "张伟") == "not_found"
    assert HttpRegistry("http://127.0.0.1:9/x", None, timeout=0.5).check("resident_id", "A1", "x") == "unavailable"


def test_counter_verification_fails_closed_when_the_registry_is_down(app, registry_server):
    wallet_no = make_wallet()
    teller = make_staff("teller")
    actor = _actor(teller, "counter")
    case = cases.open_case(db.session, actor, get_wallet(wallet_no).customer)
    row = verification.verify_at_counter(db.session, actor, case, id_type="resident_id",
                                         id_number=ID_NUMBERS[wallet_no], photo_matches=True,
                                         registry=HttpRegistry("http://127.0.0.1:9/x", None, timeout=0.5))
    db.session.commit()
    assert row.status == "failed" and row.failure_reason == "registry_unavailable"
    assert verification.valid_verification(db.session, actor, case) is None


def test_local_registry_detects_a_name_mismatch_and_revocation(app):
    wallet_no = make_wallet(name="张伟")
    registry = LocalRegistry(db.session)
    number = ID_NUMBERS[wallet_no]
    assert registry.check("resident_id", number, "张伟") == "match"
    assert registry.check("resident_id", number, "张三") == "mismatch"
    assert registry.check("resident_id", "11010519491231002X", "x") == "not_found"
