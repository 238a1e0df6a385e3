"""Flask-Admin brought into the console (issue #12 part 7): the console's frame and words, per-row
staff actions behind a page that names the account, bulk confirmations that name the accounts,
one-time passwords without look-alike characters on a printable hand-over slip, never logged."""
import json
import logging
import re
from datetime import timedelta

from console import timeutil
from console.extensions import db
from console.models.staff import Staff
from console.passwords import UNAMBIGUOUS_ALPHABET, generate_initial_password, verify_password
from console.services import audit
from console.services.actor import Actor

from .conftest import audit_events, csrf_token, make_staff, post_form, sign_in
from .test_admin import slip_passwords


def _account(handle) -> str:
    return f"测试{handle.role}（{handle.employee_no}）"


def test_one_time_passwords_have_no_look_alike_characters():
    assert not set("Il1Oo0") & set(UNAMBIGUOUS_ALPHABET)
    for _ in range(300):
        password = generate_initial_password()
        assert len(password) == 16 and set(password) <= set(UNAMBIGUOUS_ALPHABET)
        assert re.search(r"[A-Za-z]", password) and re.search(r"\d", password)  # still the staff policy


def test_a_row_action_names_the_account_first_and_changes_nothing_until_confirmed(login_as, client, app, caplog):
    login_as("admin", branch_code="HO-000")
    other = make_staff("teller")
    colleague = app.test_client()
    sign_in(colleague, other)
    listing = client.get("/admin/staff_admin/").get_data(as_text=True)
    url = f"/admin/staff_admin/account/reset_password/?id={other.id}"
    assert re.search(rf"/admin/staff_admin/account/reset_password/\?id={other.id}&(amp;)?url=", listing)

    page = client.get(url).get_data(as_text=True)
    assert _account(other) in page and "所有会话立即结束" in page and "取消" in page
    assert not audit_events("staff.password_reset")
    assert client.post(url, data={}).status_code == 400  # no CSRF token: refused, nothing changed
    assert not audit_events("staff.password_reset")
    assert colleague.get("/").status_code == 200

    caplog.set_level(logging.DEBUG)
    done = post_form(client, url, {}, follow=True).get_data(as_text=True)
    assert f"已为 {_account(other)} 重置密码" in done
    password = slip_passwords(done)[other.employee_no]
    assert verify_password(db.session.get(Staff, other.id).password_hash, password)
    assert not set("Il1Oo0") & set(password)
    # The slip has what the new user needs, unmasked: name, employee number, role, how to sign in.
    slip = done.split('class="slip"', 1)[1]
    assert "测试teller" in slip and other.employee_no in slip and "柜员" in slip and "/auth/login" in slip
    [event] = audit_events("staff.password_reset")
    assert json.loads(event.details)["sessions_ended"] == 1
    assert colleague.get("/").status_code == 302  # the reset ended the colleague's session
    # Never logged, never in the audit trail; shown once.
    assert password not in caplog.text
    assert all(password not in (e.details or "") + (e.after_state or "") for e in audit_events())
    assert password not in client.get("/admin/staff_admin/").get_data(as_text=True)


def test_row_actions_follow_the_accounts_state(login_as, client):
    me = login_as("admin", branch_code="HO-000")
    active, disabled = make_staff("teller"), make_staff("agent", branch_code="CC-001")
    locked = make_staff("teller")
    db.session.get(Staff, disabled.id).active = False
    row = db.session.get(Staff, locked.id)
    row.failed_signins, row.locked_until = 5, timeutil.utcnow() + timedelta(minutes=30)
    db.session.commit()
    page = client.get("/admin/staff_admin/").get_data(as_text=True)

    def offered(handle):
        cell = re.search(rf'aria-label="{re.escape(_account(handle))} 的账号操作">(.*?)</ul>', page, re.S)
        return re.findall(r"/account/(\w+)/", cell.group(1)) if cell else []

    assert offered(active) == ["reset_password", "reset_totp", "disable"]
    assert offered(locked) == ["reset_password", "reset_totp", "unlock", "disable"]
    assert offered(disabled) == ["enable"]
    assert offered(me) == []  # one's own account is not managed from this list
    # An action that does not apply (anymore) changes nothing and says so.
    stale = client.get(f"/admin/staff_admin/account/unlock/?id={active.id}", follow_redirects=True)
    assert "不适用" in stale.get_data(as_text=True) and not audit_events("staff.unlock")
    mine = post_form(client, f"/admin/staff_admin/account/disable/?id={me.id}", {},
                     token_from="/admin/staff_admin/", follow=True)
    assert "不适用" in mine.get_data(as_text=True) and db.session.get(Staff, me.id).active


def test_disabling_per_row_ends_sessions_and_unlocking_is_audited(login_as, client, app):
    login_as("admin", branch_code="HO-000")
    other, locked = make_staff("teller"), make_staff("teller")
    row = db.session.get(Staff, locked.id)
    row.failed_signins, row.locked_until = 5, timeutil.utcnow() + timedelta(minutes=30)
    db.session.commit()
    colleague = app.test_client()
    sign_in(colleague, other)
    page = post_form(client, f"/admin/staff_admin/account/disable/?id={other.id}", {}, follow=True)
    assert f"已停用并结束全部会话：{_account(other)}" in page.get_data(as_text=True)
    assert colleague.get("/").status_code == 302
    db.session.expire_all()
    assert db.session.get(Staff, other.id).active is False
    assert json.loads(audit_events("staff.update")[-1].after_state)["active"] is False
    post_form(client, f"/admin/staff_admin/account/unlock/?id={locked.id}", {}, follow=True)
    db.session.expire_all()
    assert db.session.get(Staff, locked.id).locked_until is None and len(audit_events("staff.unlock")) == 1


def test_bulk_actions_name_the_selected_accounts_and_come_in_a_sensible_order(login_as, client):
    login_as("admin", branch_code="HO-000")
    other = make_staff("teller")
    page = client.get("/admin/staff_admin/").get_data(as_text=True)
    assert f'data-account="{_account(other)}"' in page
    assert f'aria-label="选择 {_account(other)}"' in page
    confirmations = json.loads(re.search(r'id="actions-confirmation-data"[^>]*>(.*?)</div>', page, re.S).group(1))
    assert all("{accounts}" in text for text in confirmations.values())
    order = re.findall(r'data-model-action="(\w+)"', page)
    assert order == ["reset_password", "reset_totp", "unlock", "disable"]  # disabling last, not first


def test_admin_pages_are_the_consoles_own(login_as, client):
    login_as("admin", branch_code="HO-000")
    for url, current in (("/admin/", "概览"), ("/admin/staff_admin/", "员工"), ("/admin/staff_admin/new/", "员工"),
                         ("/admin/branch_admin/", "网点"), ("/admin/branch_admin/new/", "网点")):
        page = client.get(url).get_data(as_text=True)
        assert '<html lang="zh-CN">' in page, url
        assert '<header class="topbar">' in page and '<main id="main"' in page and "<nav" in page, url
        assert re.search(rf'aria-current="page"[^>]*>{current}</a>', page), url
        assert "/static/console.css" in page and "/static/admin.css" in page, url
    form = client.get("/admin/staff_admin/new/").get_data(as_text=True)
    roles = dict(re.findall(r'<option[^>]*value="(\w+)"[^>]*>([^<]+)</option>', form))
    assert roles["teller"] == "柜员" and roles["agent"] == "客服坐席" and roles["admin"] == "系统管理员"
    kinds = dict(re.findall(r'<option[^>]*value="(\w+)"[^>]*>([^<]+)</option>',
                            client.get("/admin/branch_admin/new/").get_data(as_text=True)))
    assert kinds["call_centre"] != "call_centre" and kinds["head_office"] != "head_office"


def test_the_audit_browser_reads_in_chinese_and_beijing_time(login_as, client):
    actor = Actor(kind="staff", employee_no="T1001", role="teller", branch_code="BJ-001", channel="counter")
    audit.record(db.session, actor, "wallet.unlock", customer_ref="C000000007")
    db.session.commit()
    event = audit_events("wallet.unlock")[0]
    login_as("auditor", branch_code="HO-000")
    page = client.get("/audit/browse/audit_browser_events/").get_data(as_text=True)
    assert '<html lang="zh-CN">' in page and "时间（北京时间）" in page and "审计序号" in page
    assert timeutil.format_local(event.occurred_at, "%Y-%m-%d %H:%M:%S") in page
    assert "解锁钱包" in page and "柜员" in page and "柜面" in page
    details = client.get(f"/audit/browse/audit_browser_events/details/?id={event.seq}").get_data(as_text=True)
    assert "UTC" in details and "wallet.unlock" in details  # the code stays in sight for the auditor


def test_account_actions_are_the_admins_alone(login_as, client):
    teller = make_staff("teller")
    login_as("supervisor")
    response = client.get(f"/admin/staff_admin/account/reset_password/?id={teller.id}")
    assert response.status_code == 403
    assert audit_events("access.denied")[-1].outcome == "denied"


def test_unknown_accounts_and_actions_are_not_found(login_as, client):
    login_as("admin", branch_code="HO-000")
    other = make_staff("teller")
    assert client.get("/admin/staff_admin/account/reset_password/?id=999999").status_code == 404
    assert client.get("/admin/staff_admin/account/reset_password/?id=x").status_code == 404
    assert client.get(f"/admin/staff_admin/account/delete/?id={other.id}").status_code == 404
    assert client.get("/admin/staff_admin/account/reset_password/?id=99999999999999999999").status_code == 404
    token = csrf_token(client, "/admin/staff_admin/")
    response = client.post("/admin/staff_admin/action/", data={"action": "disable", "rowid": "abc",
                                                               "csrf_token": token})
    assert response.status_code == 302 and not audit_events("staff.update")
