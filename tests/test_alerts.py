"""Risk alerts belong to the wallet's home branch: its supervisors see them, open the customer from
them and acknowledge them with an owner and a note (audited); another branch's supervisor neither
sees nor acts on them."""
import json
from datetime import date

import pytest

from console import timeutil
from console.extensions import db
from console.models.customer import RiskAlert
from console.models.staff import Staff
from console.services import alerts, customers
from console.services.actor import Actor
from console.services.errors import DomainError

from .conftest import audit_events, get_wallet, make_branch, make_staff, make_wallet, post_form, sign_in


def _frozen_with_alert(home="BJ-001", name="刘洋"):
    """A wallet of ``home`` frozen by the risk monitor, with its open alert (as the monitor leaves them)."""
    wallet_no = make_wallet(name=name)
    wallet = get_wallet(wallet_no)
    wallet.home_branch_id = make_branch(home).id
    now = timeutil.utcnow()
    wallet.frozen_at, wallet.frozen_reason = now, "failure_burst"
    alert = RiskAlert(wallet_id=wallet.id, rule="failure_burst", raised_at=now, status="open",
                      details=json.dumps({"failures": 20, "sources": 5, "window_minutes": 10}))
    db.session.add(alert)
    db.session.commit()
    return wallet_no, alert.id, wallet.customer.customer_no


def test_a_wallet_takes_the_opening_staff_members_branch_as_its_home(app):
    teller = make_staff("teller", branch_code="SH-002")
    actor = Actor.for_staff(db.session.get(Staff, teller.id), channel="counter")
    customer = customers.create_customer(db.session, actor, name="赵六", id_type="passport", id_number="E12345678",
                                         mobile="13600000001", birth_date=date(1990, 1, 1))
    wallet = customers.open_wallet(db.session, actor, customer, password="Spring-rain-2468")
    db.session.commit()
    assert wallet.home_branch.code == "SH-002"
    assert json.loads(audit_events("wallet.open")[-1].after_state)["home_branch"] == "SH-002"


def test_another_branchs_supervisor_neither_sees_nor_acts_on_the_alert(app, client):
    wallet_no, alert_id, _customer_no = _frozen_with_alert(home="BJ-001")
    outsider = make_staff("supervisor", branch_code="SH-002")
    sign_in(client, outsider)
    assert wallet_no not in client.get("/").get_data(as_text=True)
    assert wallet_no not in client.get("/alerts/").get_data(as_text=True)
    assert client.get(f"/alerts/{alert_id}").status_code == 404
    response = post_form(client, f"/alerts/{alert_id}", {"owner": str(outsider.id), "note": "我来处理"},
                         token_from="/alerts/")
    assert response.status_code == 404
    db.session.expire_all()
    assert db.session.get(RiskAlert, alert_id).acknowledged_at is None
    denied = audit_events("alert.view")
    assert denied and all(e.outcome == "denied" and e.reason_code == "not_found_or_other_branch" for e in denied)
    assert audit_events("alert.acknowledge") == []
    # The service says the same, whatever the page does.
    with pytest.raises(DomainError):
        alerts.acknowledge(db.session, Actor.for_staff(db.session.get(Staff, outsider.id)),
                           db.session.get(RiskAlert, alert_id), owner_id=outsider.id, note="越权")
    db.session.rollback()


def test_the_home_branch_supervisor_acknowledges_with_an_owner_and_a_note(app, client):
    wallet_no, alert_id, customer_no = _frozen_with_alert(home="BJ-001")
    supervisor = make_staff("supervisor", branch_code="BJ-001")
    teller = make_staff("teller", branch_code="BJ-001")
    elsewhere = make_staff("teller", branch_code="SH-002")
    sign_in(client, supervisor)
    home = client.get("/").get_data(as_text=True)
    assert wallet_no in home and f"/desk/customers/{customer_no}" in home and f"/alerts/{alert_id}" in home
    assert "尚未确认" in home
    page = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
    assert f"/desk/customers/{customer_no}" in page and "刘*" in page and "刘洋" not in page
    assert elsewhere.employee_no not in page  # owners come from the branch only
    # A note is required; an owner from another branch is refused; neither changes anything.
    empty = post_form(client, f"/alerts/{alert_id}", {"owner": str(teller.id), "note": "  "})
    assert empty.status_code == 422
    foreign = post_form(client, f"/alerts/{alert_id}", {"owner": str(elsewhere.id), "note": "交给上海"})
    assert foreign.status_code == 422 and "本网点" in foreign.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(RiskAlert, alert_id).acknowledged_at is None and audit_events("alert.acknowledge") == []
    done = post_form(client, f"/alerts/{alert_id}", {"owner": str(teller.id), "note": "已致电客户，请其到柜面解冻"},
                     follow=True)
    assert done.status_code == 200
    body = done.get_data(as_text=True)
    assert "已致电客户，请其到柜面解冻" in body and teller.employee_no in body
    db.session.expire_all()
    row = db.session.get(RiskAlert, alert_id)
    assert row.owner_id == teller.id and row.acknowledged_by_id == supervisor.id and row.status == "open"
    [event] = audit_events("alert.acknowledge")
    assert event.actor_employee_no == supervisor.employee_no and event.customer_ref == customer_no
    assert json.loads(event.after_state) == {"acknowledged": True, "owner": teller.employee_no}
    assert json.loads(event.details)["note"] == "已致电客户，请其到柜面解冻"
    # The home page shows who owns it now.
    assert "负责人" in client.get("/").get_data(as_text=True)


def test_tellers_have_no_alert_pages_and_resolved_alerts_are_not_acknowledged(app, client):
    _wallet_no, alert_id, _customer_no = _frozen_with_alert(home="BJ-001")
    teller = make_staff("teller", branch_code="BJ-001")
    sign_in(client, teller)
    assert client.get("/alerts/").status_code == 403
    assert client.get(f"/alerts/{alert_id}").status_code == 403
    supervisor = make_staff("supervisor", branch_code="BJ-001")
    row = db.session.get(RiskAlert, alert_id)
    row.status, row.resolved_at = "resolved", timeutil.utcnow()
    db.session.commit()
    with pytest.raises(DomainError) as caught:
        alerts.acknowledge(db.session, Actor.for_staff(db.session.get(Staff, supervisor.id)), row,
                           owner_id=teller.id, note="晚了")
    assert caught.value.audit["reason_code"] == "alert_resolved"
    db.session.rollback()
    assert alerts.branch_alerts(db.session, Actor.for_staff(db.session.get(Staff, supervisor.id))) == []


@pytest.mark.browser
@pytest.mark.sqlite_only
def test_a_supervisor_decides_a_request_and_takes_an_alert_in_hand_in_the_browser(app, backend):
    """In Chromium: the pending count in the navigation, the approval page with its risk signals,
    a rejection the maker then sees on the case and the home page, and an alert acknowledged."""
    from playwright.sync_api import sync_playwright

    from .browser import CHROMIUM_ARGS, LiveServer, chromium_or_skip, shot
    from .conftest import totp_code
    from .test_approvals_and_registry import phone_2fa_request_after_new_answers

    executable = chromium_or_skip()
    maker = make_staff("agent", branch_code="CC-95588")
    checker = make_staff("supervisor", branch_code="CC-95588")
    make_staff("agent", branch_code="CC-95588")
    approval = phone_2fa_request_after_new_answers(make_wallet(name="王芳"), maker)
    case_no, approval_id = approval.case.case_no, approval.id
    _wallet_no, alert_id, _customer_no = _frozen_with_alert(home="CC-95588")
    db.session.commit()  # end the test's read (and read nothing more): SQLite's writer lock is the server's

    def sign_in_page(page, handle):
        page.goto(page.base_url + "/auth/login")
        page.fill("#employee_no", handle.employee_no)
        page.fill("#password", handle.password)
        page.keyboard.press("Enter")
        page.wait_for_url("**/auth/totp")
        page.fill("#code", totp_code(handle))
        page.keyboard.press("Enter")
        page.wait_for_url(page.base_url + "/")

    with LiveServer(app) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
        page = context.new_page()
        page.base_url = server.url
        errors = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        sign_in_page(page, checker)
        assert "1 笔待审批" in page.inner_text("nav")
        shot(page, "40-supervisor-home")
        page.click("nav >> text=授权审批")
        page.wait_for_url("**/desk/approvals")
        shot(page, "41-approval-queue")
        page.click("table a.btn-primary")
        page.wait_for_url(f"**/desk/approvals/{approval_id}")
        assert "高风险" in page.inner_text("main")
        shot(page, "42-approval-review")
        page.check("input[value=reject]")
        page.fill("#note", "安全问题刚被修改，请客户本人持证件到柜面办理")
        with page.expect_navigation():
            page.click("button[type=submit].btn-primary")
        assert "已拒绝" in page.inner_text("main")
        page.goto(page.base_url + "/")
        page.click(f"a[href='/alerts/{alert_id}']")
        page.wait_for_url(f"**/alerts/{alert_id}")
        shot(page, "43-alert")
        page.fill("#note", "已致电客户，约其明日到柜面解冻")
        with page.expect_navigation():
            page.click("button[type=submit].btn-primary")
        assert "已致电客户" in page.inner_text("main")
        shot(page, "44-alert-acknowledged")
        page.click("button:has-text('退出')")
        sign_in_page(page, maker)
        assert "已拒绝" in page.inner_text("main")
        shot(page, "45-maker-home")
        page.goto(page.base_url + f"/desk/cases/{case_no}")
        assert "安全问题刚被修改" in page.inner_text("main")
        shot(page, "46-maker-case")
        assert errors == []
        context.close()
        browser.close()
