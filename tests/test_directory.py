"""The bank's directory (docs/directory.md) against a real slapd: the directory checks the password,
TOTP stays ours, groups map to roles and an attribute to the branch, the sync ends the sessions of
an account disabled there, and an outage refuses directory sign-in while break-glass accounts work."""
import pytest
from ldap3 import MODIFY_REPLACE

from config import ConfigError, check_directory
from console import policy
from console.extensions import db
from console.models.staff import Staff, StaffSession
from console.services import staff_admin, staff_auth
from console.services.actor import Actor
from console.services.errors import NotAllowed

from .conftest import audit_events, make_branch, make_staff, post_form, sign_in
from .ldap_server import Slapd, person_dn, slapd_or_skip

PEOPLE = [
    {"uid": "li.na", "employee_no": "E9101", "name": "李娜", "branch": "BJ-001", "password": "Dir-pass-101",
     "group": "tellers"},
    {"uid": "wang.qiang", "employee_no": "E9102", "name": "王强", "branch": "SH-002", "password": "Dir-pass-102",
     "group": "supervisors"},
    {"uid": "zhao.lei", "employee_no": "E9103", "name": "赵磊", "branch": "BJ-001", "password": "Dir-pass-103"},
]


@pytest.fixture
def ldap(app, tmp_path):
    slapd_or_skip()
    with Slapd(tmp_path / "slapd", PEOPLE) as server:
        app.config.update(server.config)
        yield server


def directory_staff(employee_no, password, role="teller", branch_code="BJ-001"):
    """An account of the directory's person, TOTP enrolled; its local hash is never the password."""
    handle = make_staff(role, employee_no=employee_no, branch_code=branch_code, password="Local-never-used-1")
    staff = db.session.get(Staff, handle.id)
    staff.auth_source, staff.directory_dn, staff.password_hash = "directory", None, "!directory"
    db.session.commit()
    handle.password = password
    return handle


def test_sign_in_through_the_directory_with_our_totp(ldap, client):
    handle = directory_staff("E9101", "Dir-pass-101")
    assert sign_in(client, handle).status_code == 200
    assert db.session.get(Staff, handle.id).directory_dn == person_dn("li.na")
    # The local hash plays no part for a directory account.
    result = staff_auth.check_password(db.session, "E9101", "Local-never-used-1", source_ip="127.0.0.1")
    assert (result.status, result.reason) == ("invalid", "bad_credentials")


def test_first_sign_in_provisions_role_and_branch_from_the_directory(ldap, app):
    make_branch("SH-002")
    result = staff_auth.check_password(db.session, "E9102", "Dir-pass-102", source_ip="127.0.0.1")
    assert result.status == "ok"
    staff = result.staff
    assert (staff.role, staff.branch.code, staff.auth_source, staff.name) == ("supervisor", "SH-002", "directory", "王强")
    assert not staff.must_change_password and not staff.totp_enrolled
    db.session.commit()
    assert [e.reason_code for e in audit_events("staff.create")] == ["directory_provisioned"]
    # In the directory but in no mapped group: answered like an unknown number, no account.
    result = staff_auth.check_password(db.session, "E9103", "Dir-pass-103", source_ip="127.0.0.1")
    assert (result.status, result.reason) == ("invalid", "directory_no_group")
    assert db.session.query(Staff).filter_by(employee_no="E9103").count() == 0


def test_wrong_directory_password_counts_towards_the_lockout(ldap, app):
    handle = directory_staff("E9101", "Dir-pass-101")
    threshold = policy.current().staff_signin.lockout_threshold
    for _ in range(threshold):
        result = staff_auth.check_password(db.session, "E9101", "wrong-password", source_ip="127.0.0.1")
        db.session.commit()
    assert result.status == "invalid"
    staff = db.session.get(Staff, handle.id)
    assert staff.locked_until is not None
    # The directory ignores case, the console does not: "e9101" is not a way around E9101's lock
    # (nor a second account for it).
    result = staff_auth.check_password(db.session, "e9101", "Dir-pass-101", source_ip="127.0.0.1")
    assert (result.status, result.reason) == ("invalid", "unknown_employee")
    assert db.session.query(Staff).filter_by(employee_no="e9101").count() == 0
    # Locked: even the right password is refused before the directory is asked.
    result = staff_auth.check_password(db.session, "E9101", "Dir-pass-101", source_ip="127.0.0.1")
    assert (result.status, result.reason) == ("invalid", "account_locked")


def test_disabled_in_the_directory_ends_the_session_at_the_next_sync(ldap, app, client, runner):
    handle = directory_staff("E9101", "Dir-pass-101")
    assert sign_in(client, handle).status_code == 200
    assert client.get("/").status_code == 200
    ldap.modify(person_dn("li.na"), {"employeeType": [(MODIFY_REPLACE, ["disabled"])]})
    result = runner.invoke(args=["console", "directory-sync"])
    assert result.exit_code == 0, result.output
    assert "E9101: directory_disabled" in result.output
    db.session.expire_all()
    staff = db.session.get(Staff, handle.id)
    assert not staff.active
    assert db.session.query(StaffSession).filter_by(staff_id=handle.id, ended_at=None).count() == 0
    event = [e for e in audit_events("staff.update") if e.reason_code == "directory_disabled"]
    assert len(event) == 1 and event[0].actor_type == "system"
    assert client.get("/").status_code in (302, 401)


def test_sync_updates_role_and_branch_moved_in_the_directory(ldap, app, runner):
    make_branch("SH-002")
    handle = directory_staff("E9102", "Dir-pass-102", role="teller", branch_code="BJ-001")
    result = runner.invoke(args=["console", "directory-sync"])
    assert result.exit_code == 0 and "E9102: directory_role_or_branch" in result.output
    db.session.expire_all()
    staff = db.session.get(Staff, handle.id)
    assert (staff.role, staff.branch.code, staff.active) == ("supervisor", "SH-002", True)


def test_outage_refuses_directory_sign_in_but_break_glass_works(ldap, app, client, runner):
    handle = directory_staff("E9101", "Dir-pass-101")
    admin = make_staff("admin")
    ldap.stop()  # the directory goes down
    page = post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    assert page.status_code == 200
    assert "银行统一身份目录暂时不可用" in page.get_data(as_text=True)
    assert [e.reason_code for e in audit_events("staff.signin")][-1] == "directory_unavailable"
    assert db.session.get(Staff, handle.id).failed_signins == 0
    assert sign_in(client, admin).status_code == 200
    result = runner.invoke(args=["console", "directory-sync"])
    assert result.exit_code == 1 and "nothing was changed" in result.output
    assert db.session.get(Staff, handle.id).active


def test_a_local_account_is_moved_to_the_directory_and_loses_its_local_password(ldap, app, client, runner):
    handle = make_staff("teller", employee_no="E9101", password="Local-pass-9101")
    assert runner.invoke(args=["console", "directory-adopt", "E9103"]).exit_code != 0  # no account
    result = runner.invoke(args=["console", "directory-adopt", "E9101"])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    staff = db.session.get(Staff, handle.id)
    assert (staff.auth_source, staff.directory_dn) == ("directory", person_dn("li.na"))
    assert [e.action for e in audit_events("staff.directory_adopt")] == ["staff.directory_adopt"]
    assert staff_auth.check_password(db.session, "E9101", "Local-pass-9101", source_ip=None).status == "invalid"
    handle.password = "Dir-pass-101"
    assert sign_in(client, handle).status_code == 200
    # Its password lives in the directory: no local reset.
    admin = make_staff("admin")
    with pytest.raises(NotAllowed):
        staff_admin.reset_staff_password(db.session, Actor.for_staff(db.session.get(Staff, admin.id)),
                                         db.session.get(Staff, handle.id))


@pytest.mark.parametrize("change, message", [
    ({"DIRECTORY_URL": "http://dir"}, "ldaps://"),
    ({"DIRECTORY_STARTTLS": False}, "in clear"),
    ({"DIRECTORY_BIND_PASSWORD": ""}, "DIRECTORY_BIND_PASSWORD"),
    ({"DIRECTORY_GROUP_ROLES": '{"cn=x": "banker"}'}, "not a role"),
    ({"DIRECTORY_GROUP_ROLES": "not json"}, "JSON"),
    ({"DIRECTORY_USER_FILTER": "objectClass=person"}, "not an LDAP filter"),
    ({"DIRECTORY_CA_FILE": "/nonexistent.pem"}, "readable"),
])
def test_config_validation(change, message):
    values = {"DIRECTORY_URL": "ldap://dir.bank.test", "DIRECTORY_STARTTLS": True, "DIRECTORY_ALLOW_PLAIN": False,
              "DIRECTORY_CA_FILE": None, "DIRECTORY_BIND_DN": "cn=console", "DIRECTORY_BIND_PASSWORD": "x",
              "DIRECTORY_USER_BASE": "ou=people", "DIRECTORY_USER_FILTER": "(objectClass=inetOrgPerson)",
              "DIRECTORY_DISABLED_FILTER": "(employeeType=disabled)", "DIRECTORY_EMPLOYEE_ATTRIBUTE": "employeeNumber",
              "DIRECTORY_BRANCH_ATTRIBUTE": "departmentNumber", "DIRECTORY_GROUP_ROLES": {"cn=t": "teller"},
              "DIRECTORY_TIMEOUT_SECONDS": 5, "DIRECTORY_SYNC_SECONDS": 300}
    check_directory(dict(values))
    with pytest.raises(ConfigError, match=message):
        check_directory({**values, **change})


def test_a_directory_supervisor_authorises_at_the_counter_with_the_directory_password(ldap, app, client):
    """主管现场授权 by a supervisor whose password lives in the directory: the directory checks it;
    in an outage the screen is told so and nothing is counted against the supervisor."""
    from .test_counter_authorisation import approval, authorise, failures, file_request, page_text

    make_branch("SH-002")
    supervisor = directory_staff("E9102", "Dir-pass-102", role="supervisor", branch_code="SH-002")
    teller = make_staff("teller", branch_code="SH-002")
    approval_id, case_no = file_request(teller)
    sign_in(client, teller)
    wrong = authorise(client, case_no, approval_id, supervisor, password="Local-never-used-1")
    assert wrong.status_code == 422 and failures(supervisor) == 1
    ldap.stop()
    down = authorise(client, case_no, approval_id, supervisor)
    assert down.status_code == 422 and "银行统一身份目录" in page_text(down)
    assert failures(supervisor) == 1 and approval(approval_id).status == "pending"
    assert [e.reason_code for e in audit_events("approval.counter_authorise")][-1] == "directory_unavailable"
    ldap.start()
    answer = authorise(client, case_no, approval_id, supervisor)
    assert answer.status_code == 302
    row = approval(approval_id)
    assert (row.status, row.checker_id, row.decided_via) == ("executed", supervisor.id, "counter")
