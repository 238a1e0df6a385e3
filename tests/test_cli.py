"""CLI: demo data, staff creation, production refusals."""
import re

import pyotp
import pytest

from console.extensions import db
from console.models.staff import Branch, Staff

from .conftest import audit_events, post_form


def test_seed_demo_creates_branches_and_one_staff_of_each_role(app, runner):
    result = runner.invoke(args=["console", "seed-demo"])
    assert result.exit_code == 0, result.output
    roles = {s.role for s in db.session.query(Staff).all()}
    assert roles == {"teller", "agent", "supervisor", "auditor", "admin"}
    assert db.session.query(Branch).filter_by(kind="call_centre").count() == 1
    assert "T1001" in result.output and "DEMO ONLY" in result.output
    again = runner.invoke(args=["console", "seed-demo", "--if-empty"])
    assert again.exit_code == 0 and "already present" in again.output
    assert runner.invoke(args=["audit", "verify"]).output.startswith("intact:")


def test_demo_staff_sign_in_with_printed_password_and_totp(app, runner, client):
    output = runner.invoke(args=["console", "seed-demo"]).output
    line = next(l for l in output.splitlines() if l.startswith("S3001"))
    employee_no, _role, _branch, password, secret = line.split()
    post_form(client, "/auth/login", {"employee_no": employee_no, "password": password})
    response = post_form(client, "/auth/totp", {"code": pyotp.TOTP(secret).now()}, follow=True)
    assert "主管（授权员）" in response.get_data(as_text=True)
    code = runner.invoke(args=["console", "demo-code", "S3001"]).output.strip()
    assert re.fullmatch(r"\d{6}", code)


def test_demo_commands_refuse_under_production(app, runner):
    app.config["DEMO_ALLOWED"] = False
    result = runner.invoke(args=["console", "seed-demo"])
    assert result.exit_code == 2 and "production" in result.output
    assert db.session.query(Staff).count() == 0


def test_create_staff_prints_a_one_time_password(app, runner):
    result = runner.invoke(args=["console", "create-staff", "--employee-no", "T8001", "--name", "新柜员",
                                 "--role", "teller", "--branch", "GZ-001", "--create-branch", "广州支行"])
    assert result.exit_code == 0, result.output
    password = re.search(r"One-time initial password: (\S+)", result.output).group(1)
    staff = db.session.query(Staff).filter_by(employee_no="T8001").one()
    assert staff.must_change_password and not staff.totp_enrolled
    assert [e.action for e in audit_events()] == ["branch.create", "staff.create"]
    assert password not in "".join((e.after_state or "") + (e.details or "") for e in audit_events())
    duplicate = runner.invoke(args=["console", "create-staff", "--employee-no", "T8001", "--name", "x",
                                    "--role", "teller", "--branch", "GZ-001"])
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output


@pytest.mark.parametrize("password,problems", [
    ("short1", ["too_short"]),
    ("abcdefghijklmn", ["needs_letter_and_digit"]),
    ("Password123456", ["common"]),
    ("T8001abcdefgh1", ["contains_employee_no"]),
    ("Blue-river-2931", []),
])
def test_staff_password_policy(password, problems):
    from console.passwords import staff_password_problems

    assert staff_password_problems(password, employee_no="T8001", min_length=12) == problems
