"""Staff sign-in: password + TOTP, enrolment, forced change, lockout, timeouts, sessions."""
from datetime import timedelta

import pyotp
import pytest

from console import timeutil
from console.extensions import db
from console.models.staff import Staff, StaffSession

from .conftest import CSRF_RE, audit_events, make_staff, post_form, sign_in, totp_code


def test_sign_in_with_password_and_totp_reaches_role_home(client, app):
    handle = make_staff("teller")
    response = sign_in(client, handle)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "柜员" in page and "您的角色可以办理" in page
    events = audit_events("staff.signin")
    assert [e.outcome for e in events] == ["success"]
    assert events[0].actor_employee_no == handle.employee_no and events[0].session_id


def test_wrong_employee_number_and_wrong_password_give_the_same_message(client, app):
    handle = make_staff("teller")
    unknown = post_form(client, "/auth/login", {"employee_no": "NOPE1", "password": "whatever-123"})
    wrong = post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": "wrong-pass-123"})
    assert unknown.status_code == wrong.status_code == 200
    message = "工号或密码错误。"
    assert message in unknown.get_data(as_text=True) and message in wrong.get_data(as_text=True)
    reasons = [e.reason_code for e in audit_events("staff.signin")]
    assert reasons == ["unknown_employee", "bad_credentials"]


def test_wrong_totp_is_refused_and_counted(client, app):
    handle = make_staff("agent")
    post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    response = post_form(client, "/auth/totp", {"code": "000000"})
    assert "动态口令错误或已被使用" in response.get_data(as_text=True)
    assert db.session.get(Staff, handle.id).failed_signins == 1
    assert client.get("/").status_code == 302  # not signed in


def test_totp_code_cannot_be_replayed(client, app):
    handle = make_staff("teller")
    code = totp_code(handle)
    post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    assert post_form(client, "/auth/totp", {"code": code}).status_code == 302
    other = app.test_client()
    post_form(other, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    replay = post_form(other, "/auth/totp", {"code": code})
    assert "动态口令错误或已被使用" in replay.get_data(as_text=True)


def test_five_failures_lock_for_thirty_minutes(client, app):
    handle = make_staff("teller")
    for _ in range(5):
        post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": "wrong-pass-123"})
    staff = db.session.get(Staff, handle.id)
    assert staff.locked_until is not None
    minutes = (staff.locked_until - timeutil.utcnow()).total_seconds() / 60
    assert 29 < minutes <= 30
    assert len(audit_events("staff.locked")) == 1
    # Locked: even the right password is refused, and no further attempt is counted.
    response = post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    assert "账号已被锁定" in response.get_data(as_text=True)
    assert audit_events("staff.signin")[-1].reason_code == "account_locked"
    # The lock lapses by itself.
    timeutil.set_offset(timedelta(minutes=31))
    assert sign_in(client, handle).status_code == 200
    db.session.expire_all()
    assert db.session.get(Staff, handle.id).failed_signins == 0


def test_first_sign_in_forces_password_change_and_totp_enrolment(client, app):
    handle = make_staff("supervisor", enrolled=False, must_change=True, password="Initial-pass-0001")
    response = post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    assert response.headers["Location"].endswith("/auth/change-password")
    weak = post_form(client, "/auth/change-password", {"new_password": "short1", "confirm": "short1"})
    text = weak.get_data(as_text=True)
    assert "密码长度至少为 12 位" in text
    common = post_form(client, "/auth/change-password", {"new_password": "Password12345", "confirm": "Password12345"})
    assert "过于常见" in common.get_data(as_text=True)
    with_no = f"x{handle.employee_no}abcdef12"
    has_no = post_form(client, "/auth/change-password", {"new_password": with_no, "confirm": with_no})
    assert "不能包含您的工号" in has_no.get_data(as_text=True)
    letters = post_form(client, "/auth/change-password", {"new_password": "onlylettersherezz", "confirm": "onlylettersherezz"})
    assert "同时包含字母和数字" in letters.get_data(as_text=True)
    ok = post_form(client, "/auth/change-password", {"new_password": "Blue-river-2931", "confirm": "Blue-river-2931"})
    assert ok.headers["Location"].endswith("/auth/enrol")
    page = client.get("/auth/enrol").get_data(as_text=True)
    assert "data:image/svg+xml" in page
    secret = page.split('<code class="secret">')[1].split("</code>")[0].replace(" ", "")
    done = post_form(client, "/auth/enrol", {"code": pyotp.TOTP(secret).now()})
    assert done.status_code == 302 and done.headers["Location"].endswith("/")
    staff = db.session.get(Staff, handle.id)
    assert staff.totp_enrolled and not staff.must_change_password
    assert client.get("/").status_code == 200
    actions = [e.action for e in audit_events()]
    assert actions.count("staff.password_change") == 5  # four refusals and the change
    assert "staff.totp_enrol" in actions and actions[-1] == "staff.signin"
    # The enrolment secret never reaches the audit trail.
    assert all(secret not in (e.details or "") + (e.after_state or "") for e in audit_events())


def test_a_new_session_at_every_sign_in(client, app):
    handle = make_staff("teller")
    sign_in(client, handle)
    first = db.session.query(StaffSession).one()
    post_form(client, "/auth/logout", {}, token_from="/")
    sign_in(client, handle)
    db.session.expire_all()
    rows = db.session.query(StaffSession).order_by(StaffSession.id).all()
    assert len(rows) == 2 and rows[0].ended_reason == "signout" and rows[1].ended_at is None
    assert rows[0].token_digest != rows[1].token_digest and first.public_id != rows[1].public_id


def test_sign_out_ends_the_session_even_for_a_copied_cookie(client, app):
    handle = make_staff("teller")
    sign_in(client, handle)
    stolen = client.get_cookie("bc_session").value
    post_form(client, "/auth/logout", {}, token_from="/")
    thief = app.test_client()
    thief.set_cookie("bc_session", stolen)
    assert thief.get("/").status_code == 302
    assert audit_events("staff.signout")[0].reason_code == "signout"


def test_idle_timeout_after_fifteen_minutes(client, app):
    handle = make_staff("teller")
    sign_in(client, handle)
    timeutil.set_offset(timedelta(minutes=14))
    assert client.get("/").status_code == 200
    timeutil.set_offset(timedelta(minutes=14 + 16))
    response = client.get("/")
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]
    assert "15 分钟未操作" in client.get(response.headers["Location"]).get_data(as_text=True)
    assert audit_events("staff.session_end")[0].reason_code == "idle_timeout"


def test_absolute_timeout_after_twelve_hours_despite_activity(client, app):
    handle = make_staff("teller")
    sign_in(client, handle)
    for minutes in range(10, 12 * 60, 10):
        timeutil.set_offset(timedelta(minutes=minutes))
        assert client.get("/").status_code == 200, minutes
    timeutil.set_offset(timedelta(hours=12, minutes=1))
    assert client.get("/").status_code == 302
    assert audit_events("staff.session_end")[0].reason_code == "absolute_timeout"


def test_disabling_a_staff_account_ends_all_its_sessions(app):
    from console.services import staff_admin
    from console.services.actor import Actor

    handle = make_staff("teller")
    first, second = app.test_client(), app.test_client()
    sign_in(first, handle)
    sign_in(second, handle)
    assert first.get("/").status_code == 200 and second.get("/").status_code == 200
    admin = make_staff("admin", branch_code="HO-000")
    staff = db.session.get(Staff, handle.id)
    actor = Actor.for_staff(db.session.get(Staff, admin.id))
    staff_admin.set_staff_active(db.session, actor, staff, False)
    db.session.commit()
    assert first.get("/").status_code == 302 and second.get("/").status_code == 302
    assert all(row.ended_at for row in db.session.query(StaffSession).all())
    update = audit_events("staff.update")[0]
    assert '"active":false' in update.after_state and '"active":true' in update.before_state


@pytest.mark.parametrize("target", [
    "https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)", "http:/evil",
])
def test_next_cannot_redirect_off_site(client, app, target):
    handle = make_staff("teller")
    page = client.get("/auth/login", query_string={"next": target}).get_data(as_text=True)
    token = CSRF_RE.search(page).group(1)
    client.post("/auth/login", data={"employee_no": handle.employee_no, "password": handle.password,
                                     "next": target, "csrf_token": token})
    response = post_form(client, "/auth/totp", {"code": totp_code(handle)})
    assert response.headers["Location"] == "/"


def test_next_keeps_a_local_path(client, app):
    handle = make_staff("auditor")
    assert client.get("/audit/chain").headers["Location"].startswith("/auth/login?next=/audit/chain")
    page = client.get("/auth/login?next=/audit/chain").get_data(as_text=True)
    token = CSRF_RE.search(page).group(1)
    client.post("/auth/login", data={"employee_no": handle.employee_no, "password": handle.password,
                                     "next": "/audit/chain", "csrf_token": token})
    assert post_form(client, "/auth/totp", {"code": totp_code(handle)}).headers["Location"] == "/audit/chain"


def test_pending_sign_in_expires(client, app):
    handle = make_staff("teller")
    post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    import time

    with client.session_transaction() as sess:
        sess["pending"] = {**sess["pending"], "t": time.time() - 301}
    assert client.get("/auth/totp").headers["Location"].endswith("/auth/login")


def test_login_form_without_csrf_is_refused(client, app):
    handle = make_staff("teller")
    response = client.post("/auth/login", data={"employee_no": handle.employee_no, "password": handle.password})
    assert response.status_code == 400
    assert "表单已过期" in response.get_data(as_text=True)
    assert audit_events("staff.signin") == []
