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
from .conftest import (ID_NUMBERS, audit_events, get_wallet, make_staff, make_wallet, post_form, sign_in,
                       totp_code)


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


def _case_of(approval_id):
    db.session.expire_all()
    return db.session.get(Approval, approval_id).case


def test_a_filed_request_is_pending_on_the_case_and_cannot_be_filed_again(app, client):
    """The case page shows the request instead of the button, the staff API says the same, and a
    second request (or the same operation run beside it) is refused and changes nothing."""
    wallet_no = make_wallet(name="刘洋")
    maker = make_staff("teller")
    approval_id = _verified_request(wallet_no, maker)
    case = _case_of(approval_id)
    case_no, wallet_id = case.case_no, get_wallet(wallet_no).id
    # The read model: pending, with its reason code and the request.
    rows = operations.availability(db.session, _actor(maker, "counter"), case)
    [row] = [r for r in rows if r.operation == "release_freeze"]
    assert (row.state, row.reason, row.approval.id) == ("pending_approval", "approval_pending", approval_id)
    # Filing again is refused before anything changes.
    with pytest.raises(DomainError) as caught:
        operations.perform(db.session, _actor(maker, "counter"), case, get_wallet(wallet_no), "release_freeze",
                           reason_code="risk_reviewed")
    db.session.rollback()
    assert caught.value.audit["reason_code"] == "already_pending"
    assert db.session.query(Approval).count() == 1
    # The case page: the notice, and no form to file it again.
    sign_in(client, maker)
    page = client.get(f"/desk/cases/{case_no}").get_data(as_text=True)
    assert "已有一笔申请在等待主管审批：在审批完成或申请过期之前" in page  # the operation's row says why
    assert "等待主管审批" in page and "解除风险冻结" in page  # the approval notice
    assert f"/desk/cases/{case_no}/wallets/{wallet_id}/release_freeze" not in page
    again = post_form(client, f"/desk/cases/{case_no}/wallets/{wallet_id}/release_freeze",
                      {f"w{wallet_id}-release_freeze-reason_code": "risk_reviewed",
                       f"w{wallet_id}-release_freeze-confirm": "y"}, token_from=f"/desk/cases/{case_no}", follow=True)
    assert "已有一笔" in again.get_data(as_text=True)
    assert db.session.query(Approval).count() == 1
    # The staff API reflects it.
    api = app.test_client()
    token = api.post("/api/v1/tokens", json={"employee_no": maker.employee_no, "password": maker.password,
                                             "totp_code": totp_code(maker)}).get_json()["token"]
    body = api.get(f"/api/v1/cases/{case_no}", headers={"Authorization": f"Bearer {token}"}).get_json()
    [listed] = [o for o in body["operations"] if o["operation"] == "release_freeze"]
    assert (listed["state"], listed["reason"]) == ("pending_approval", "approval_pending")
    # Once it has expired, it is offered again.
    timeutil.set_offset(timedelta(minutes=31))
    rows = operations.availability(db.session, _actor(maker, "counter"), _case_of(approval_id))
    assert [r.state for r in rows if r.operation == "release_freeze"] != ["pending_approval"]


def test_the_maker_sees_the_decision_on_the_case(app, client):
    wallet_no = make_wallet()
    maker, checker = make_staff("teller"), make_staff("supervisor")
    approval_id = _verified_request(wallet_no, maker)
    operations.decide(db.session, _actor(checker, "counter"), db.session.get(Approval, approval_id), approve=False,
                      note="客户身份存疑，请到柜面")
    db.session.commit()
    case_no = _case_of(approval_id).case_no
    sign_in(client, maker)
    page = client.get(f"/desk/cases/{case_no}").get_data(as_text=True)
    checker_name = db.session.get(Staff, checker.id).name
    assert "已拒绝" in page and checker_name in page and checker.employee_no in page
    assert "客户身份存疑，请到柜面" in page


def phone_2fa_request_after_new_answers(wallet_no, maker, *, minutes=4):
    """An agent files a 2FA reset by phone ``minutes`` after the caller's security answers were set
    anew, with one failed verification before the one that passed."""
    from console.models.service import Verification
    from console.services import wallet_credentials

    actor = _actor(maker, "phone")
    wallet = get_wallet(wallet_no)
    case = cases.open_case(db.session, actor, wallet.customer)
    db.session.flush()
    wallet_credentials.set_security_questions(db.session, Actor.system("wallet"), wallet,
                                              [("mother_birthplace", "上海"), ("first_school", "二小")])
    now = timeutil.utcnow()
    db.session.add(Verification(case_id=case.id, customer_id=case.customer_id, staff_id=maker.id, channel="phone",
                                method="sms_code_and_questions", strength="medium", status="failed",
                                failure_reason="security_answers_wrong", created_at=now, completed_at=now,
                                code_tries=1, codes_sent=1))
    db.session.add(Verification(case_id=case.id, customer_id=case.customer_id, staff_id=maker.id, channel="phone",
                                method="sms_code_and_questions", strength="medium", status="passed", created_at=now,
                                completed_at=now, expires_at=now + timedelta(minutes=15), code_tries=1, codes_sent=1,
                                evidence=json.dumps({"codes_sent": 1, "code_tries": 1,
                                                     "questions": ["mother_birthplace", "first_school"]})))
    db.session.commit()
    timeutil.set_offset((timeutil._offset or timedelta()) + timedelta(minutes=minutes))
    result = operations.perform(db.session, _actor(maker, "phone"), case, get_wallet(wallet_no), "reset_2fa",
                                reason_code="new_phone")
    db.session.commit()
    assert result.status == "pending_approval"
    return result.approval


def test_the_approval_page_reads_as_prose_with_risk_signals(app, client):
    """Security questions reset minutes before a phone 2FA reset, a failed verification: the checker
    reads them first, in Chinese, with Beijing times, and no developer data."""
    from console.services import overview

    maker = make_staff("agent", branch_code="CC-95588")
    checker = make_staff("supervisor", branch_code="CC-95588")
    approval = phone_2fa_request_after_new_answers(make_wallet(name="王芳"), maker)
    review = overview.approval_review(db.session, _actor(checker, "phone"), approval)
    codes = [s.code for s in review.signals]
    assert codes[0] == "answers_just_set" and review.signals[0].level == "high"
    assert review.signals[0].minutes == 4
    assert "failed_verifications" in codes and "verified_by_phone" in codes
    sign_in(client, checker)
    nav = client.get("/").get_data(as_text=True)
    assert "1 笔待审批" in nav  # the count beside the Approvals link
    queue = client.get("/desk/approvals").get_data(as_text=True)
    assert "项高风险" in queue
    page = client.get(f"/desk/approvals/{approval.id}").get_data(as_text=True)
    assert "风险提示" in page and "4 分钟" in page and "安全问题" in page
    assert "重置双重认证设备绑定" in page and "北京时间" in page
    for developer_data in ("PENDING", "pending", "sms_code_and_questions", "medium", "False", "None", "UTC",
                           "['", "lock_kind", "twofa_bound"):
        assert developer_data not in page, developer_data


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
