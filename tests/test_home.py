"""Home pages as work queues: each role lands on the work in front of it."""
from console.extensions import db
from console.models.service import Approval
from console.models.staff import Staff
from console.services import cases, operations, staff_admin
from console.services.actor import Actor

from .conftest import get_wallet, make_staff, make_wallet, sign_in
from .test_approvals_and_registry import _verified_request


def _actor(handle, channel="counter"):
    return Actor.for_staff(db.session.get(Staff, handle.id), channel=channel)


def test_a_teller_sees_open_and_todays_cases_and_the_decisions_on_their_requests(app, client):
    teller = make_staff("teller")
    supervisor = make_staff("supervisor")
    colleague = make_staff("teller")
    approval_id = _verified_request(make_wallet(name="刘洋"), teller)  # its case stays open
    other = cases.open_case(db.session, _actor(teller), get_wallet(make_wallet(name="陈静")).customer)
    theirs = cases.open_case(db.session, _actor(colleague), get_wallet(make_wallet(name="杨磊")).customer)
    db.session.commit()
    filed_case = db.session.get(Approval, approval_id).case.case_no
    operations.decide(db.session, _actor(supervisor), db.session.get(Approval, approval_id), approve=False,
                      note="请客户本人到柜面")
    db.session.commit()
    sign_in(client, teller)
    page = client.get("/").get_data(as_text=True)
    for case_no in (filed_case, other.case_no):
        assert f'href="/desk/cases/{case_no}"' in page
    assert theirs.case_no not in page  # a colleague's case is theirs
    assert "我未办结的受理单" in page and "今日受理单" in page
    assert "我提交的审批申请" in page and "已拒绝" in page and "请客户本人到柜面" in page
    assert supervisor.employee_no in page
    assert "刘洋" not in page and "刘*" in page
    assert "待您审批" not in page and "风险预警" not in page  # not a teller's work


def test_a_supervisor_sees_the_pending_count_in_the_navigation_and_on_the_home_page(app, client):
    maker = make_staff("teller")
    supervisor = make_staff("supervisor")
    other_branch = make_staff("supervisor", branch_code="SH-002")
    _verified_request(make_wallet(), maker)
    sign_in(client, supervisor)
    page = client.get("/").get_data(as_text=True)
    assert "1 笔待审批" in page  # the badge on the Approvals link
    assert "1 笔本网点申请等待您审批" in page and 'href="/desk/approvals"' in page
    assert "本网点钱包暂无待处理风险预警" in page
    other = app.test_client()
    sign_in(other, other_branch)
    assert "笔待审批" not in other.get("/").get_data(as_text=True)  # another branch's request


def test_an_auditor_sees_the_chain_and_where_the_exceptions_are(app, client):
    auditor = make_staff("auditor", branch_code="HO-000")
    sign_in(client, auditor)
    page = client.get("/").get_data(as_text=True)
    assert "审计链" in page and 'href="/audit/chain"' in page
    assert "/audit/events?outcome=denied" in page and 'href="/audit/dashboard"' in page
    assert "我未办结的受理单" not in page


def test_an_admin_sees_staff_and_branch_administration_and_its_latest_actions(app, client):
    admin = make_staff("admin", branch_code="HO-000")
    staff_admin.create_staff(db.session, _actor(admin, "console"), employee_no="T9999", name="新柜员",
                             role="teller", branch=db.session.get(Staff, admin.id).branch)
    db.session.commit()
    sign_in(client, admin)
    page = client.get("/").get_data(as_text=True)
    from flask import url_for

    with app.test_request_context():
        staff_url, branch_url = url_for("staff_admin.index_view"), url_for("branch_admin.index_view")
    assert f'href="{staff_url}"' in page and f'href="{branch_url}"' in page
    assert "最近的管理操作" in page and admin.employee_no in page and "T9999" in page
    assert "staff.create" not in page
    assert "我未办结的受理单" not in page and "待您审批" not in page
