"""Staff sign-in: password + TOTP, enrolment, forced change, lockout, timeouts, sessions."""
from datetime import timedelta

import pyotp
import pytest

from console import timeutil
from console.extensions import db
from console.models.staff import PendingSignin, Staff, StaffSession

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
    # Locked: even the right password is refused, with the answer of a wrong password (the form
    # must not confirm the number), and no further attempt is counted.
    response = post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    assert "工号或密码错误。" in response.get_data(as_text=True)
    assert "锁定" not in response.get_data(as_text=True)
    assert audit_events("staff.signin")[-1].reason_code == "account_locked"
    # The lock lapses by itself, and the next sign-in tells the staff member about it, once.
    timeutil.set_offset(timedelta(minutes=31))
    post_form(client, "/auth/language", {"lang": "en"}, token_from="/auth/login")
    page = sign_in(client, handle).get_data(as_text=True)
    assert "Your account was locked at" in page and "after 5 failed sign-in attempts" in page
    db.session.expire_all()
    staff = db.session.get(Staff, handle.id)
    assert staff.failed_signins == 0 and staff.lock_notice_at is None
    db.session.rollback()
    post_form(client, "/auth/logout", {}, token_from="/")
    again = sign_in(client, handle).get_data(as_text=True)
    assert "Your account was locked at" not in again


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
    assert db.session.query(PendingSignin).count() == 1
    db.session.rollback()
    timeutil.set_offset(timedelta(seconds=301))
    assert client.get("/auth/totp").headers["Location"].endswith("/auth/login")
    assert db.session.query(PendingSignin).count() == 0
    response = post_form(client, "/auth/totp", {"code": totp_code(handle)}, token_from="/auth/login")
    assert response.headers["Location"].endswith("/auth/login")
    assert db.session.query(StaffSession).count() == 0


def test_login_form_without_csrf_is_refused(client, app):
    handle = make_staff("teller")
    response = client.post("/auth/login", data={"employee_no": handle.employee_no, "password": handle.password})
    assert response.status_code == 400
    assert "表单已过期" in response.get_data(as_text=True)
    assert audit_events("staff.signin") == []


# --- issue #11 part 1: the signing key alone must not sign anyone in --------------------------


def _forged_cookie(app, payload: dict) -> str:
    """A session cookie signed with the app's own SECRET_KEY, as an attacker holding it would."""
    return app.session_interface.get_signing_serializer(app).dumps(payload)


def test_a_cookie_forged_with_the_secret_key_signs_nobody_in(client, app):
    import time

    admin = make_staff("admin", branch_code="HO-000")
    # Exactly what the old code trusted: staff id, generation, "TOTP passed".
    old_shape = {"pending": {"staff": admin.id, "gen": 1, "t": time.time(), "totp": True, "lang": None,
                             "next": None}}
    new_shape = {"pending": {"staff": admin.id, "token": "guessed-token-value"}}
    for payload in (old_shape, new_shape):
        for path in ("/auth/totp", "/auth/change-password", "/auth/enrol"):
            forger = app.test_client()
            forger.set_cookie("bc_session", _forged_cookie(app, payload))
            response = forger.get(path)
            assert response.status_code == 302 and response.headers["Location"].endswith("/auth/login"), path
            assert forger.get("/").status_code == 302
            assert forger.get("/admin/").status_code == 302
    assert db.session.query(StaffSession).count() == 0
    assert [e for e in audit_events("staff.signin") if e.outcome == "success"] == []


def test_the_cookie_holds_only_an_opaque_token(client, app):
    handle = make_staff("teller")
    post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    cookie = client.get_cookie("bc_session").value
    state = app.session_interface.get_signing_serializer(app).loads(cookie)["pending"]
    assert set(state) == {"token", "staff"}  # the staff id is a rate-limit hint, never trusted
    row = db.session.query(PendingSignin).one()
    assert row.token_digest != state["token"] and len(row.token_digest) == 64
    assert row.step == "password" and row.staff_id == handle.id


def test_a_cookie_captured_after_the_password_step_cannot_finish_elsewhere(client, app):
    handle = make_staff("teller")
    post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    stolen = client.get_cookie("bc_session").value
    # From another address, even with a right code: refused, and the pending sign-in is gone.
    thief = app.test_client()
    thief.environ_base["REMOTE_ADDR"] = "203.0.113.66"
    thief.set_cookie("bc_session", stolen)
    response = post_form(thief, "/auth/totp", {"code": totp_code(handle)}, token_from="/auth/login")
    assert response.headers["Location"].endswith("/auth/login")
    assert thief.get("/").status_code == 302
    assert db.session.query(StaffSession).count() == 0 and db.session.query(PendingSignin).count() == 0
    assert audit_events("staff.signin")[-1].reason_code == "pending_address_changed"
    db.session.rollback()
    # The victim's own sign-in must start again (the token was invalidated for everyone).
    assert client.get("/auth/totp").headers["Location"].endswith("/auth/login")


def test_each_pending_token_serves_one_step_and_dies_with_the_sign_in(client, app):
    handle = make_staff("teller")
    post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    after_password = client.get_cookie("bc_session").value
    assert post_form(client, "/auth/totp", {"code": totp_code(handle)}).status_code == 302
    assert client.get("/").status_code == 200
    assert db.session.query(PendingSignin).count() == 0  # deleted once the sign-in completed
    db.session.rollback()
    # Replayed from the same address after the sign-in: nothing to finish.
    replay = app.test_client()
    replay.set_cookie("bc_session", after_password)
    assert replay.get("/auth/totp").headers["Location"].endswith("/auth/login")
    response = post_form(replay, "/auth/totp", {"code": totp_code(handle)}, token_from="/auth/login")
    assert response.headers["Location"].endswith("/auth/login")
    assert replay.get("/").status_code == 302
    assert db.session.query(StaffSession).count() == 1


def test_token_changes_at_each_step_of_a_first_sign_in(client, app):
    handle = make_staff("teller", enrolled=False, must_change=True, password="Initial-pass-0001")
    post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    after_password = client.get_cookie("bc_session").value
    post_form(client, "/auth/change-password", {"new_password": "Blue-river-2931", "confirm": "Blue-river-2931"})
    replay = app.test_client()
    replay.set_cookie("bc_session", after_password)
    assert replay.get("/auth/enrol").headers["Location"].endswith("/auth/login")
    # The enrolment secret lives server-side, encrypted, not in the cookie.
    page = client.get("/auth/enrol").get_data(as_text=True)
    secret = page.split('<code class="secret">')[1].split("</code>")[0].replace(" ", "")
    assert secret not in client.get_cookie("bc_session").value
    assert db.session.query(PendingSignin).one().enrol_secret_enc is not None
    db.session.rollback()
    done = post_form(client, "/auth/enrol", {"code": pyotp.TOTP(secret).now()})
    assert done.headers["Location"].endswith("/") and client.get("/").status_code == 200


def test_an_earlier_admin_cookie_does_not_show_an_initial_password_again(login_as, client, app):
    from .conftest import make_branch
    from .test_admin import slip_passwords

    login_as("admin", branch_code="HO-000")
    branch = make_branch("SH-002")
    created = post_form(client, "/admin/staff_admin/new/", {
        "employee_no": "T2002", "name": "新柜员", "role": "teller", "branch": str(branch.id), "active": "y"})
    assert created.status_code == 302
    captured = client.get_cookie("bc_session").value
    first = client.get(created.headers["Location"]).get_data(as_text=True)
    assert "T2002" in slip_passwords(first)  # the hand-over slip, once
    again = app.test_client()
    again.set_cookie("bc_session", captured)
    assert "T2002" not in slip_passwords(again.get("/admin/staff_admin/").get_data(as_text=True))
    assert "T2002" not in slip_passwords(client.get("/admin/staff_admin/").get_data(as_text=True))


# --- issue #11 part 4: employee numbers cannot be confirmed ----------------------------------

GENERIC = "工号或密码错误。"


def _locked_staff():
    handle = make_staff("teller")
    staff = db.session.get(Staff, handle.id)
    staff.failed_signins = 5
    staff.locked_until = timeutil.utcnow() + timedelta(minutes=30)
    db.session.commit()
    return handle


def _normalise(page: str, employee_no: str) -> str:
    import re

    page = re.sub(r'value="[^"]*"', 'value=""', page)
    page = re.sub(r'nonce="[^"]*"', 'nonce=""', page)
    return page.replace(employee_no, "EMPLOYEE")


def test_unknown_wrong_and_locked_look_alike_on_the_form(client, app):
    real, locked = make_staff("teller"), _locked_staff()
    fifth = make_staff("teller")
    cases = {"unknown": ("NOPE1", "Wrong-pass-123"), "wrong": (real.employee_no, "Wrong-pass-123"),
             "locked": (locked.employee_no, locked.password)}
    answers = {}
    for name, (number, password) in cases.items():
        response = post_form(app.test_client(), "/auth/login", {"employee_no": number, "password": password})
        answers[name] = (response.status_code, _normalise(response.get_data(as_text=True), number))
    assert answers["unknown"] == answers["wrong"] == answers["locked"]
    assert answers["unknown"][0] == 200 and GENERIC in answers["unknown"][1]
    # The attempt that locks the account answers like any wrong password.
    for _ in range(5):
        response = post_form(client, "/auth/login", {"employee_no": fifth.employee_no, "password": "Wrong-pass-123"})
    assert (response.status_code, _normalise(response.get_data(as_text=True), fifth.employee_no)) == answers["wrong"]
    assert db.session.get(Staff, fifth.id).locked_until is not None


def test_unknown_wrong_and_locked_look_alike_on_the_token_endpoint(client, app):
    real, locked = make_staff("teller"), _locked_staff()
    bodies = []
    for number, password in (("NOPE1", "Wrong-pass-123"), (real.employee_no, "Wrong-pass-123"),
                             (locked.employee_no, locked.password)):
        response = client.post("/api/v1/tokens", json={"employee_no": number, "password": password,
                                                       "totp_code": "123456"})
        body = response.get_json()
        body["error"].pop("request_id", None)
        bodies.append((response.status_code, sorted(response.headers.keys()), body))
    assert bodies[0] == bodies[1] == bodies[2]
    assert bodies[0][0] == 401 and bodies[0][2]["error"]["code"] == "invalid_credentials"


@pytest.mark.parametrize("case", ["unknown", "wrong", "locked", "disabled"])
def test_every_refusal_spends_one_password_hash(client, app, monkeypatch, case):
    from console.services import staff_auth

    real = make_staff("teller")
    number, password = real.employee_no, "Wrong-pass-123"
    if case == "unknown":
        number = "NOPE1"
    elif case == "locked":
        number, password = _locked_staff().employee_no, real.password
    elif case == "disabled":
        db.session.get(Staff, real.id).active = False
        db.session.commit()
    calls = []
    original = staff_auth.verify_password
    monkeypatch.setattr(staff_auth, "verify_password",
                        lambda stored, pw: calls.append(stored) or original(stored, pw))
    post_form(client, "/auth/login", {"employee_no": number, "password": password})
    client.post("/api/v1/tokens", json={"employee_no": number, "password": password, "totp_code": "123456"})
    assert len(calls) == 2  # one argon2id verification per attempt, form and API
    if case != "wrong":
        assert calls == [None, None]  # the dummy hash (console/passwords.py)


# --- issue #11 part 7: an inactive branch -----------------------------------------------------


def test_deactivating_a_branch_ends_its_staff_sessions_and_bars_sign_in(app):
    from console.models.staff import Branch
    from console.services import staff_admin
    from console.services.actor import Actor

    handle = make_staff("teller", branch_code="SZ-009")
    other = make_staff("teller", branch_code="BJ-001")
    web, other_web, api = app.test_client(), app.test_client(), app.test_client()
    sign_in(web, handle)
    sign_in(other_web, other)
    token = api.post("/api/v1/tokens", json={"employee_no": handle.employee_no, "password": handle.password,
                                             "totp_code": totp_code(handle)}).get_json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/approvals", headers=bearer).status_code == 403  # signed in, not a supervisor
    admin = make_staff("admin", branch_code="HO-000")
    branch = db.session.query(Branch).filter_by(code="SZ-009").one()
    staff_admin.set_branch_active(db.session, Actor.for_staff(db.session.get(Staff, admin.id)), branch, False)
    db.session.commit()
    assert web.get("/").status_code == 302
    assert api.get("/api/v1/approvals", headers=bearer).status_code == 401
    assert other_web.get("/").status_code == 200  # another branch is untouched
    rows = db.session.query(StaffSession).filter_by(staff_id=handle.id).all()
    assert len(rows) == 2 and all(r.ended_reason == "branch_inactive" for r in rows)
    event = audit_events("branch.update")[-1]
    assert '"active":false' in event.after_state and '"sessions_ended":2' in event.details
    db.session.rollback()
    # Signing in: the answer of a wrong password, audited with the reason.
    response = post_form(web, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    assert GENERIC in response.get_data(as_text=True) and web.get("/").status_code == 302
    assert audit_events("staff.signin")[-1].reason_code == "branch_inactive"
    refused = api.post("/api/v1/tokens", json={"employee_no": handle.employee_no, "password": handle.password,
                                               "totp_code": totp_code(handle)})
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "invalid_credentials"
    # Active again: they sign in as before.
    branch = db.session.query(Branch).filter_by(code="SZ-009").one()
    staff_admin.set_branch_active(db.session, Actor.for_staff(db.session.get(Staff, admin.id)), branch, True)
    db.session.commit()
    assert sign_in(app.test_client(), handle).status_code == 200


def test_deactivating_a_branch_in_flask_admin_ends_sessions(login_as, client, app):
    from console.models.staff import Branch

    teller = make_staff("teller", branch_code="SZ-009")
    web = app.test_client()
    sign_in(web, teller)
    login_as("admin", branch_code="HO-000")
    branch_id = db.session.query(Branch).filter_by(code="SZ-009").one().id
    db.session.rollback()
    url = f"/admin/branch_admin/edit/?id={branch_id}"
    response = post_form(client, url, {"code": "SZ-009", "name": "测试支行", "kind": "branch"})  # "active" unticked
    assert response.status_code == 302
    assert db.session.get(Branch, branch_id).active is False
    assert web.get("/").status_code == 302
    assert "sessions_ended" in audit_events("branch.update")[-1].details


def test_a_pending_sign_in_dies_when_the_branch_is_deactivated(client, app):
    from console.models.staff import Branch

    handle = make_staff("teller", branch_code="SZ-009")
    post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    db.session.query(Branch).filter_by(code="SZ-009").one().active = False
    db.session.commit()
    response = post_form(client, "/auth/totp", {"code": totp_code(handle)}, token_from="/auth/login")
    assert response.headers["Location"].endswith("/auth/login")
    assert db.session.query(StaffSession).count() == 0
