"""Flask-Admin for the admin role: staff and branches, with CSRF and audit events."""
import json
import re

from console.extensions import db
from console.models.staff import Branch, Staff
from console.passwords import verify_password

from .conftest import audit_events, csrf_token, make_branch, make_staff, post_form

# A hand-over slip's password, drawn in groups of four (``templates/admin/_handover.html``).
SLIP = re.compile(r'<article class="slip" data-employee-no="(\w+)".*?<p class="otp"><code>((?:<span>\w{1,4}</span>)+)</code>',
                  re.S)


def slip_passwords(page: str) -> dict[str, str]:
    """Employee number -> one-time password, from the slips on a page."""
    return {employee_no: re.sub(r"</?span>", "", groups) for employee_no, groups in SLIP.findall(page)}


def _create_staff(client, branch_id, employee_no="T2002", role="teller"):
    return post_form(client, "/admin/staff_admin/new/", {
        "employee_no": employee_no, "name": "新柜员", "role": role, "branch": str(branch_id), "active": "y",
    }, follow=True)


def test_admin_creates_staff_with_a_one_time_password_shown_once(login_as, client):
    login_as("admin", branch_code="HO-000")
    branch = make_branch("SH-002", "上海浦东支行")
    page = _create_staff(client, branch.id).get_data(as_text=True)
    assert "一次性初始密码" in page and "员工账号交接单" in page
    password = slip_passwords(page)["T2002"]
    assert len(password) == 16 and not set(password) & set("Il1Oo0")
    staff = db.session.query(Staff).filter_by(employee_no="T2002").one()
    assert staff.must_change_password and not staff.totp_enrolled
    assert verify_password(staff.password_hash, password)
    # Shown exactly once.
    assert password not in client.get("/admin/staff_admin/").get_data(as_text=True)
    event = audit_events("staff.create")[-1]
    assert json.loads(event.after_state)["employee_no"] == "T2002"
    assert password not in (event.after_state + (event.details or ""))


def test_new_staff_must_change_password_and_enrol_at_first_sign_in(login_as, client, app):
    login_as("admin", branch_code="HO-000")
    branch = make_branch("SH-002")
    page = _create_staff(client, branch.id, "A3003", "agent").get_data(as_text=True)
    password = slip_passwords(page)["A3003"]
    newcomer = app.test_client()
    response = post_form(newcomer, "/auth/login", {"employee_no": "A3003", "password": password})
    assert response.headers["Location"].endswith("/auth/change-password")


def test_hashes_and_totp_secrets_never_appear_in_admin_pages(login_as, client):
    handle = login_as("admin", branch_code="HO-000")
    other = make_staff("teller")
    staff = db.session.get(Staff, other.id)
    pages = [client.get(url).get_data(as_text=True) for url in (
        "/admin/staff_admin/", f"/admin/staff_admin/edit/?id={staff.id}", f"/admin/staff_admin/details/?id={staff.id}",
    )]
    for page in pages:
        assert "$argon2" not in page and "password_hash" not in page
        assert other.totp_secret not in page and handle.totp_secret not in page
    edit = pages[1]
    assert 'name="password_hash"' not in edit and 'name="totp_secret_enc"' not in edit


def test_admin_forms_require_csrf(login_as, client):
    login_as("admin", branch_code="HO-000")
    branch = make_branch("SH-002")
    response = client.post("/admin/staff_admin/new/", data={
        "employee_no": "T9", "name": "x", "role": "teller", "branch": str(branch.id), "active": "y"})
    assert response.status_code == 400
    assert db.session.query(Staff).filter_by(employee_no="T9").count() == 0


def test_editing_staff_is_audited_with_before_and_after(login_as, client):
    login_as("admin", branch_code="HO-000")
    other = make_staff("teller")
    staff = db.session.get(Staff, other.id)
    post_form(client, f"/admin/staff_admin/edit/?id={staff.id}", {
        "employee_no": staff.employee_no, "name": "改名柜员", "role": "teller", "branch": str(staff.branch_id),
    }, follow=True)
    event = audit_events("staff.update")[-1]
    assert json.loads(event.before_state)["active"] is True
    assert json.loads(event.after_state)["active"] is False
    assert json.loads(event.after_state)["name"] == "改名柜员"
    db.session.expire_all()
    assert db.session.get(Staff, other.id).active is False


def test_admin_cannot_disable_itself(login_as, client):
    handle = login_as("admin", branch_code="HO-000")
    staff = db.session.get(Staff, handle.id)
    page = post_form(client, f"/admin/staff_admin/edit/?id={staff.id}", {
        "employee_no": staff.employee_no, "name": staff.name, "role": "admin", "branch": str(staff.branch_id),
    }, follow=True).get_data(as_text=True)
    assert "不能停用自己的账号" in page
    db.session.expire_all()
    assert db.session.get(Staff, handle.id).active is True
    # Nothing changed, and the refusal survived the rollback as an event of its own.
    [refusal] = audit_events("staff.update")
    assert (refusal.outcome, refusal.reason_code, refusal.actor_employee_no) == ("denied", "own_account",
                                                                                staff.employee_no)


def test_bulk_actions_reset_password_and_unlock(login_as, client, app):
    login_as("admin", branch_code="HO-000")
    other = make_staff("teller")
    signed_in = app.test_client()
    from .conftest import sign_in

    sign_in(signed_in, other)
    token = csrf_token(client, "/admin/staff_admin/")
    page = client.post("/admin/staff_admin/action/", data={
        "action": "reset_password", "rowid": str(other.id), "csrf_token": token}, follow_redirects=True)
    text = page.get_data(as_text=True)
    assert f"已为 测试teller（{other.employee_no}） 重置密码" in text
    assert verify_password(db.session.get(Staff, other.id).password_hash, slip_passwords(text)[other.employee_no])
    assert signed_in.get("/").status_code == 302  # the reset ended the session
    assert db.session.get(Staff, other.id).must_change_password
    assert len(audit_events("staff.password_reset")) == 1


def test_bulk_actions_leave_out_the_admins_own_account(login_as, client):
    me = login_as("admin", branch_code="HO-000")
    other = make_staff("teller")
    token = csrf_token(client, "/admin/staff_admin/")
    own_id = db.session.query(Staff).filter_by(employee_no=me.employee_no).one().id
    page = client.post("/admin/staff_admin/action/", data={
        "action": "reset_password", "rowid": [str(own_id), str(other.id)], "csrf_token": token},
        follow_redirects=True).get_data(as_text=True)
    assert "已跳过" in page and me.employee_no in page
    assert [e.details for e in audit_events("staff.password_reset")].__len__() == 1
    assert client.get("/").status_code == 200  # still signed in: its own password was not reset


def test_branches_are_managed_and_audited(login_as, client):
    login_as("admin", branch_code="HO-000")
    post_form(client, "/admin/branch_admin/new/", {"code": "GZ-003", "name": "广州天河支行", "kind": "branch", "active": "y"},
              follow=True)
    assert db.session.query(Branch).filter_by(code="GZ-003").one().name == "广州天河支行"
    assert json.loads(audit_events("branch.create")[-1].after_state)["code"] == "GZ-003"


def test_nothing_can_be_deleted_from_admin(login_as, client):
    login_as("admin", branch_code="HO-000")
    other = make_staff("teller")
    response = post_form(client, "/admin/staff_admin/delete/", {"id": str(other.id)}, token_from="/admin/staff_admin/")
    assert response.status_code in (302, 404, 405)
    assert db.session.get(Staff, other.id) is not None
