"""主管现场授权: a supervisor decides a waiting request at the maker's screen (issue #15 part 2).

Through the desk's pages, signed in as the teller; the supervisor's password and code (or their
security key, answered by the software authenticator of tests/test_passkeys.py: real signatures,
nothing mocked) are typed on that screen. See docs/counter-authorisation.md.
"""
from __future__ import annotations

import html
import json
import re

import pytest

from console import timeutil
from console.adapters.registry import LocalRegistry
from console.extensions import db
from console.models.service import Approval
from console.models.staff import Staff, StaffSession
from console.services import cases, operations, passkeys, verification
from console.services.actor import Actor
from console.services.errors import DomainError

from .concurrency import run_together
from .conftest import (CSRF_RE, ID_NUMBERS, audit_events, csrf_token, get_wallet, make_staff, make_wallet,
                       post_form, sign_in, totp_code)
from .test_approvals_and_registry import phone_2fa_request_after_new_answers
from .test_passkeys import SoftKey, enrol
from .test_passkeys_browser import page  # noqa: F401  (headless Chromium with a virtual authenticator)

ONE_ANSWER = "不对，或该账号不能审批本网点的申请"  # the words of the one answer ("credentials")
NOTE = "客户本人在柜面，核实无误"


def _actor(handle, channel="counter"):
    return Actor.for_staff(db.session.get(Staff, handle.id), channel=channel)


def file_request(maker, wallet_no=None) -> tuple[int, str]:
    """``maker`` verifies the customer at the counter and files a freeze release: (approval id, case no)."""
    wallet_no = wallet_no or make_wallet()
    actor = _actor(maker)
    wallet = get_wallet(wallet_no)
    wallet.frozen_at, wallet.frozen_reason = timeutil.utcnow(), "failure_burst"
    case = cases.open_case(db.session, actor, wallet.customer)
    db.session.commit()
    proof = verification.verify_at_counter(db.session, actor, case, id_type="resident_id",
                                           id_number=ID_NUMBERS[wallet_no], photo_matches=True,
                                           registry=LocalRegistry(db.session))
    assert proof.status == "passed", proof.failure_reason
    result = operations.perform(db.session, actor, case, wallet, "release_freeze", reason_code="risk_reviewed")
    db.session.commit()
    ids = result.approval.id, case.case_no
    db.session.rollback()
    return ids


def url(case_no, approval_id, key=False):
    return f"/desk/cases/{case_no}/approvals/{approval_id}/authorise" + ("/key" if key else "")


def authorise(client, case_no, approval_id, supervisor, *, decision="approve", password=None, code=None,
              employee_no=None, factor="totp"):
    """The supervisor types their details on the screen signed in on ``client``."""
    return post_form(client, url(case_no, approval_id), {
        "decision": decision, "note": NOTE, "employee_no": employee_no or supervisor.employee_no,
        "password": supervisor.password if password is None else password,
        "code": (totp_code(supervisor) if code is None else code) if factor == "totp" else "", "factor": factor},
        token_from=f"/desk/cases/{case_no}")


def flashed(client) -> str:
    with client.session_transaction() as session:
        return " ".join(message for _category, message in session.get("_flashes", []))


def page_text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def approval(approval_id) -> Approval:
    db.session.expire_all()
    return db.session.get(Approval, approval_id)


def failures(handle) -> int:
    db.session.expire_all()
    count = db.session.get(Staff, handle.id).failed_signins
    db.session.rollback()
    return count


def screen_session(handle) -> str:
    db.session.expire_all()
    return db.session.query(StaffSession).filter_by(staff_id=handle.id, ended_at=None).one().public_id


def test_supervisor_authorises_at_the_tellers_screen_and_it_executes_once(app, client):
    teller, supervisor = make_staff("teller"), make_staff("supervisor")
    approval_id, case_no = file_request(teller)
    sign_in(client, teller)
    case_page = page_text(client.get(f"/desk/cases/{case_no}"))
    assert url(case_no, approval_id) in case_page and "主管现场授权" in case_page
    # The same readable summary as the approvals page: who filed what for whom, the signals, the evidence.
    page = page_text(client.get(url(case_no, approval_id)))
    assert "主管现场授权 · 第 1 号审批申请" in page and "解除风险冻结" in page
    assert "风险提示" in page and "申请人核实的情况" in page and "钱包自" in page
    assert 'name="password"' in page and 'value="passkey"' in page
    answer = authorise(client, case_no, approval_id, supervisor)
    assert answer.status_code == 302
    assert answer.headers["Location"].endswith(f"/desk/cases/{case_no}#case-approvals-title")
    row = approval(approval_id)
    assert (row.status, row.checker_id, row.decided_via) == ("executed", supervisor.id, "counter")
    assert (row.counter_session, row.counter_staff_id) == (screen_session(teller), teller.id)
    assert get_wallet(row.wallet.wallet_no).frozen_at is None
    # Recorded as the approval, with the supervisor as actor and the teller's session as context.
    [approve] = audit_events("approval.approve")
    assert (approve.actor_employee_no, approve.actor_role, approve.session_id) == (
        supervisor.employee_no, "supervisor", screen_session(teller))
    details = json.loads(approve.details)
    assert details == {"operation": "release_freeze", "note": NOTE, "decided_via": "counter",
                                       "maker": teller.employee_no, "screen_session": screen_session(teller),
                                       "screen_staff": teller.employee_no}
    [proof] = [e for e in audit_events("approval.counter_authorise") if e.outcome == "success"]
    assert (proof.actor_employee_no, json.loads(proof.details)["factor"]) == (supervisor.employee_no, "totp")
    assert len(audit_events("approval.execute")) == 1
    assert len([e for e in audit_events("wallet.release_freeze") if e.outcome == "success"]) == 1
    # The supervisor was never signed in: no session of theirs; the screen is still the teller's.
    assert db.session.query(StaffSession).filter_by(staff_id=supervisor.id).count() == 0
    assert "已由 测试supervisor" in flashed(client)
    case_page = page_text(client.get(f"/desk/cases/{case_no}"))
    assert f"在 测试teller ({teller.employee_no}) 的屏幕上现场授权" in case_page
    assert f'<span class="who">测试teller · {teller.employee_no}</span>' in case_page
    # Sent again (a double click, the back button): already decided, nothing runs twice.
    again = authorise(client, case_no, approval_id, supervisor)
    assert again.status_code == 302 and "该申请已审批" in flashed(client)
    assert len(audit_events("approval.execute")) == 1 and failures(supervisor) == 0


def test_the_request_waits_in_the_queue_and_the_counter_then_says_already_decided(app, client):
    teller, supervisor, other = make_staff("teller"), make_staff("supervisor"), make_staff("supervisor")
    approval_id, case_no = file_request(teller)
    sign_in(client, teller)
    authorise(client, case_no, approval_id, supervisor, password="Wrong-horse-42")  # nobody authorises here
    assert approval(approval_id).status == "pending"
    queue = app.test_client()
    sign_in(queue, other)
    assert f"/desk/approvals/{approval_id}" in queue.get("/desk/approvals").get_data(as_text=True)
    post_form(queue, f"/desk/approvals/{approval_id}", {"decision": "reject", "note": "请客户补充材料"})
    row = approval(approval_id)
    assert (row.status, row.checker_id, row.decided_via, row.counter_session) == ("rejected", other.id, "queue", None)
    # The counter path now answers cleanly, before any credential is checked.
    before = failures(supervisor)
    late = authorise(client, case_no, approval_id, supervisor)
    assert late.status_code == 302 and late.headers["Location"].endswith(f"/desk/cases/{case_no}")
    assert "该申请已审批" in flashed(client)
    assert failures(supervisor) == before and client.get(url(case_no, approval_id)).status_code == 302
    assert [e.reason_code for e in audit_events("approval.counter_authorise") if e.outcome == "denied"][-1] == \
        "already_decided"


def test_the_maker_and_the_account_signed_in_are_refused_even_as_supervisors(app, client):
    maker, screen = make_staff("supervisor"), make_staff("supervisor")
    approval_id, case_no = file_request(maker)
    sign_in(client, screen)  # a supervisor of the branch may open the maker's case
    by_maker = authorise(client, case_no, approval_id, maker)
    assert by_maker.status_code == 422 and "经办人永远不能" in page_text(by_maker)
    by_screen = authorise(client, case_no, approval_id, screen)
    assert by_screen.status_code == 422 and "在本屏幕登录的员工不能在此授权" in page_text(by_screen)
    assert approval(approval_id).status == "pending"
    assert failures(maker) == failures(screen) == 0  # refused before any credential was checked
    denied = [e for e in audit_events("approval.counter_authorise") if e.outcome == "denied"]
    assert [(e.reason_code, e.actor_employee_no, json.loads(e.details)["employee_no"]) for e in denied] == [
        ("self_approval", screen.employee_no, maker.employee_no),
        ("own_screen", screen.employee_no, screen.employee_no)]
    # And the decision itself refuses the screen's account, whoever calls it.
    with pytest.raises(DomainError) as caught:
        operations.decide(db.session, _actor(screen), approval(approval_id), approve=True, note=NOTE,
                          screen=Actor.for_staff(db.session.get(Staff, screen.id), session_id="abcdef0123456789"))
    db.session.rollback()
    assert caught.value.audit["reason_code"] == "own_screen"


def test_one_answer_for_unknown_numbers_other_branches_other_roles_and_wrong_passwords(app, client):
    teller, supervisor = make_staff("teller"), make_staff("supervisor")
    elsewhere, colleague = make_staff("supervisor", branch_code="SH-002"), make_staff("teller")
    approval_id, case_no = file_request(teller)
    sign_in(client, teller)
    answers = {
        "other_branch": authorise(client, case_no, approval_id, elsewhere),  # right password and code
        "not_permitted": authorise(client, case_no, approval_id, colleague),
        "unknown_employee": authorise(client, case_no, approval_id, supervisor, employee_no="S99999"),
        "bad_credentials": authorise(client, case_no, approval_id, supervisor, password="Wrong-horse-42"),
        "wrong_code": authorise(client, case_no, approval_id, supervisor, code="000000"),
    }
    messages = set()
    for reason, answer in answers.items():
        text = page_text(answer)
        assert answer.status_code == 422 and ONE_ANSWER in text, reason
        messages.add(re.search(r'id="counter-refusal">([^<]*)<', text).group(1).strip())
        assert supervisor.password not in text and elsewhere.employee_no not in text.split("id=\"counter-title\"")[1]
    assert len(messages) == 1
    assert approval(approval_id).status == "pending"
    reasons = [e.reason_code for e in audit_events("approval.counter_authorise") if e.outcome != "success"]
    assert reasons == list(answers)
    # Only the supervisor of this branch had credentials checked (and counted).
    assert (failures(supervisor), failures(elsewhere), failures(colleague)) == (2, 0, 0)


def test_wrong_passwords_and_codes_count_towards_the_supervisors_sign_in_lock(app, client):
    teller, supervisor = make_staff("teller"), make_staff("supervisor")
    approval_id, case_no = file_request(teller)
    sign_in(client, teller)
    authorise(client, case_no, approval_id, supervisor, password="Wrong-horse-42")
    authorise(client, case_no, approval_id, supervisor, code="000000")
    signing_in = app.test_client()
    for _try in range(2):  # two wrong passwords at the supervisor's own sign-in
        post_form(signing_in, "/auth/login", {"employee_no": supervisor.employee_no, "password": "Wrong-horse-42"})
    assert failures(supervisor) == 4
    last = authorise(client, case_no, approval_id, supervisor, password="Wrong-horse-42")
    assert ONE_ANSWER in page_text(last)  # locked now, but the screen is told the one answer
    db.session.expire_all()
    row = db.session.get(Staff, supervisor.id)
    assert row.failed_signins == 5 and row.locked_until is not None
    db.session.rollback()
    assert [e.actor_type for e in audit_events("staff.locked")] == ["system"]
    # Locked: the right password and code are refused unchecked, here and at sign-in.
    authorise(client, case_no, approval_id, supervisor)
    assert approval(approval_id).status == "pending"
    assert audit_events("approval.counter_authorise")[-1].reason_code == "account_locked"
    refused = post_form(signing_in, "/auth/login", {"employee_no": supervisor.employee_no,
                                                    "password": supervisor.password})
    assert refused.status_code != 302 or not refused.headers["Location"].endswith("/auth/totp")


def test_csrf_is_required(app, client):
    teller, supervisor = make_staff("teller"), make_staff("supervisor")
    approval_id, case_no = file_request(teller)
    sign_in(client, teller)
    form = {"decision": "approve", "note": NOTE, "employee_no": supervisor.employee_no,
            "password": supervisor.password, "code": totp_code(supervisor), "factor": "totp"}
    assert client.post(url(case_no, approval_id), data=form).status_code == 400
    assert client.post(url(case_no, approval_id, key=True),
                       data={**form, "credential": "{}"}).status_code == 400
    assert approval(approval_id).status == "pending" and failures(supervisor) == 0
    assert not audit_events("approval.counter_authorise")


def test_a_worker_killed_anywhere_in_the_authorisation_leaves_it_waiting_or_done_once(app, client):
    """The screen's POST is killed (tests/faults/crash.py: the transaction aborted as when a worker
    dies) before its 1st, 2nd, ... statement, until a run completes or is killed after its decision
    committed. After every killed run the request is either still waiting with the wallet as it
    was, or executed once: never decided without its operation, nor the other way round. Every run
    is typed with a fresh code (one killed after the proof committed has spent its code)."""
    from console.services import audit, sequencer

    from .faults.crash import Crash, crash_before_statement

    teller, supervisor = make_staff("teller"), make_staff("supervisor")
    approval_id, case_no = file_request(teller)
    wallet_no = approval(approval_id).wallet.wallet_no
    db.session.rollback()
    sign_in(client, teller)
    n, waiting = 0, 0
    while True:
        n += 1
        data = {"decision": "approve", "note": NOTE, "employee_no": supervisor.employee_no,
                "password": supervisor.password, "code": totp_code(supervisor), "factor": "totp",
                "csrf_token": csrf_token(client, f"/desk/cases/{case_no}")}
        with crash_before_statement(db.engine, n) as fired:
            try:
                answer = client.post(url(case_no, approval_id), data=data)
            except Crash:
                answer = None
        db.session.remove()
        # Events committed with a change but killed before they were chained wait in the intake
        # for the next run (the sequencer's own crashes: tests/test_audit_sequencer.py).
        sequencer.chain_pending(db.engine)
        row = approval(approval_id)
        frozen = get_wallet(wallet_no).frozen_at is not None
        if row.status == "pending":
            assert frozen and row.checker_id is None, n
            waiting += 1
        else:
            assert (row.status, row.checker_id, frozen) == ("executed", supervisor.id, False), n
        db.session.rollback()
        if fired["at"] is None:
            break
        assert answer is None, n
        if row.status == "executed":
            break  # killed after the decision committed (the notice, the page): done once
    assert waiting >= 5  # the screen's session, the proof's reads and writes, the decision's, were each killed
    assert approval(approval_id).status == "executed"
    assert len(audit_events("approval.approve")) == 1
    assert failures(supervisor) == 0
    assert audit.verify_chain(db.session).intact
    # The customer is told once, however many runs were killed before the one that executed.
    from console.models import Notification

    wallet_id = get_wallet(wallet_no).id
    notices = [n.kind for n in db.session.query(Notification).filter_by(
        wallet_id=wallet_id, kind=operations.registry.get("release_freeze").sms_kind)]
    assert notices == ["freeze_released"]
    # A code spent by the committed proof is not taken again, even for a request still waiting.
    spent = data["code"]
    second_id, second_case = file_request(teller)
    db.session.rollback()
    again = authorise(client, second_case, second_id, supervisor, code=spent)
    assert again.status_code == 422 and approval(second_id).status == "pending"
    last = audit_events("approval.counter_authorise")[-1]
    assert (last.actor_employee_no, last.outcome, last.reason_code, json.loads(last.details)["step"]) == (
        supervisor.employee_no, "failed", "wrong_code", "totp")  # the password passed; the spent code did not
    assert authorise(client, second_case, second_id, supervisor).status_code == 302  # a fresh code does
    assert approval(second_id).status == "executed"


def test_a_supervisor_authorises_with_a_security_key_bound_to_the_decision(app, client):
    teller, supervisor = make_staff("teller"), make_staff("supervisor")
    key = SoftKey()
    enrol(db.session.get(Staff, supervisor.id), key)
    approval_id, case_no = file_request(teller)
    sign_in(client, teller)
    # A number with no key (or nobody's) gets the one answer for the key path.
    none = authorise(client, case_no, approval_id, teller, employee_no="S99999", factor="passkey")
    assert none.status_code == 422 and "没有可用的安全密钥" in page_text(none)
    step = authorise(client, case_no, approval_id, supervisor, decision="reject", factor="passkey")
    assert step.status_code == 200
    text = step.get_data(as_text=True)
    options = html.unescape(re.search(r'data-options="([^"]+)"', text).group(1))
    token = CSRF_RE.search(text).group(1)
    answer = key.assertion(options)
    # The key was touched for a rejection: the same answer cannot approve (and counts as a failure).
    flipped = client.post(url(case_no, approval_id, key=True), data={
        "csrf_token": token, "decision": "approve", "note": NOTE, "employee_no": supervisor.employee_no,
        "credential": answer})
    assert flipped.status_code == 422 and approval(approval_id).status == "pending" and failures(supervisor) == 1
    step = authorise(client, case_no, approval_id, supervisor, factor="passkey")
    text = step.get_data(as_text=True)
    options = html.unescape(re.search(r'data-options="([^"]+)"', text).group(1))
    done = client.post(url(case_no, approval_id, key=True), data={
        "csrf_token": CSRF_RE.search(text).group(1), "decision": "approve", "note": NOTE,
        "employee_no": supervisor.employee_no, "credential": key.assertion(options)})
    assert done.status_code == 302
    row = approval(approval_id)
    assert (row.status, row.checker_id, row.decided_via) == ("executed", supervisor.id, "counter")
    [proof] = [e for e in audit_events("approval.counter_authorise") if e.outcome == "success"]
    assert json.loads(proof.details)["factor"] == "passkey" and proof.session_id == screen_session(teller)
    assert [e.outcome for e in audit_events("staff.passkey_assert")][-1] == "success"
    assert failures(supervisor) == 1  # the earlier failure stays counted; a success does not clear it


@pytest.mark.postgres_only
def test_the_queue_and_the_counter_at_once_decide_exactly_once(app, backend):
    teller, at_counter, at_queue = make_staff("teller"), make_staff("supervisor"), make_staff("supervisor")
    approval_id, _case_no = file_request(teller)
    screen = Actor.for_staff(db.session.get(Staff, teller.id), session_id="0123456789abcdef", channel="counter")

    def load(i):
        checker = (at_counter, at_queue)[i]
        return i, _actor(checker), db.session.get(Approval, approval_id)

    def decide(loaded):
        i, actor, row = loaded  # both hold the request, still pending, before either decides
        try:
            operations.decide(db.session, actor, row, approve=True, note=NOTE, screen=screen if i == 0 else None)
            db.session.commit()
            return "executed"
        except DomainError as exc:
            db.session.rollback()
            return exc.audit["reason_code"]

    outcomes = run_together(decide, 2, app=app, setup=load)
    assert sorted(outcomes) == ["already_decided", "executed"]
    row = approval(approval_id)
    winner = outcomes.index("executed")
    assert (row.status, row.decided_via) == ("executed", ("counter", "queue")[winner])
    assert len([e for e in audit_events("wallet.release_freeze") if e.outcome == "success"]) == 1
    assert len(audit_events("approval.execute")) == 1


@pytest.mark.browser
@pytest.mark.sqlite_only
def test_in_the_browser_a_supervisor_authorises_a_2fa_reset_by_phone_with_their_key(page, app):
    """An agent files a 2FA reset by phone; the call centre's supervisor, at the agent's screen, is
    refused for the agent's own number, then authorises with the key in Chromium's virtual
    authenticator (the same credential the server enrolled: a real signature, verified)."""
    import base64

    from cryptography.hazmat.primitives import serialization

    from .browser import shot
    from .test_accessibility import Accessibility

    agent, supervisor = make_staff("agent", branch_code="CC-001"), make_staff("supervisor", branch_code="CC-001")
    key, staff = SoftKey(), db.session.get(Staff, supervisor.id)
    options = passkeys.begin_registration(db.session, staff, context="session:test")
    assert passkeys.finish_registration(db.session, Actor.for_staff(staff), staff, key.register(options, page.base_url),
                                        name="主管的密钥", context="session:test").passkey
    db.session.commit()
    page.cdp.send("WebAuthn.addCredential", {"authenticatorId": page.authenticator, "credential": {
        "credentialId": base64.b64encode(key.credential_id).decode(), "isResidentCredential": False,
        "rpId": "localhost", "signCount": 0, "privateKey": base64.b64encode(key.private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())).decode()}})
    approval_id = phone_2fa_request_after_new_answers(make_wallet(name="王芳"), agent).id
    case_no = approval(approval_id).case.case_no
    db.session.rollback()

    page.goto(page.base_url + "/auth/login")
    page.fill("#employee_no", agent.employee_no)
    page.fill("#password", agent.password)
    page.keyboard.press("Enter")
    page.wait_for_url("**/auth/totp")
    page.fill("#code", totp_code(agent))
    page.keyboard.press("Enter")
    page.wait_for_url(page.base_url + "/")
    page.goto(f"{page.base_url}/desk/cases/{case_no}")
    page.get_by_role("link", name="主管现场授权").click()
    page.wait_for_url(f"**{url(case_no, approval_id)}")
    a11y = Accessibility(page.base_url)
    page.get_by_label("同意并执行").check()
    page.fill("#note", "已回拨预留手机号确认为本人")
    page.fill("#employee_no", agent.employee_no)  # the agent signed in here: refused before any key
    page.get_by_role("button", name="改用安全密钥").click()
    assert "在本屏幕登录的员工不能在此授权" in page.locator("#counter-refusal").inner_text()
    shot(page, "70-counter-authorisation")
    a11y(page, "counter authorisation, refused", reflow=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.get_by_label("同意并执行").check()
    page.fill("#note", "已回拨预留手机号确认为本人")
    page.fill("#employee_no", supervisor.employee_no)
    page.get_by_role("button", name="改用安全密钥").click()
    page.get_by_role("button", name="使用安全密钥").wait_for()
    shot(page, "71-counter-authorisation-key")
    a11y(page, "counter authorisation, key step")
    page.get_by_role("button", name="使用安全密钥").click()
    page.wait_for_url(f"**/desk/cases/{case_no}*")
    assert "现场授权" in page.locator(".flashes .flash-success").inner_text()
    shot(page, "72-counter-authorised")
    row = approval(approval_id)
    assert (row.status, row.checker_id, row.decided_via, row.counter_staff_id) == (
        "executed", supervisor.id, "counter", agent.id)
    assert [e.outcome for e in audit_events("wallet.reset_2fa")] == ["success"]
    db.session.rollback()
    assert [e for e in page.console_errors if "422" not in e] == []  # the refused form is answered 422
    assert a11y.failures == []
