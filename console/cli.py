"""Command line: ``flask console ...`` and ``flask audit ...``."""
from __future__ import annotations

import json
import os
import sys
import time
from datetime import date, timedelta

import click
import pyotp
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from . import crypto
from .extensions import db
from .adapters.sms import gateway_from_config
from .identity import resident_id_check_char
from .models.customer import TwoFactorBinding, WalletLock
from .models.staff import Branch, BranchKind, Role, Staff
from .passwords import staff_password_problems
from .services import audit, checkpoints, customers, staff_admin, verification, wallet_credentials, wallet_signin
from .services.actor import Actor
from .services.errors import Conflict, NotFound
from .services.notifications import deliver_due
from .timeutil import utcnow

console_cli = AppGroup("console", help="Branch Console administration.")
audit_cli = AppGroup("audit", help="The audit trail.")

DEMO_BRANCHES = [
    ("BJ-001", "北京西城支行 Beijing Xicheng Branch", BranchKind.branch.value),
    ("SH-002", "上海浦东支行 Shanghai Pudong Branch", BranchKind.branch.value),
    ("CC-95588", "客户服务中心 Customer Service Centre", BranchKind.call_centre.value),
    ("HO-000", "总行 Head Office", BranchKind.head_office.value),
]
# employee number, name, role, branch code
DEMO_STAFF = [
    ("T1001", "王柜员", Role.teller.value, "BJ-001"),
    ("A2001", "李坐席", Role.agent.value, "CC-95588"),
    ("S3001", "张主管", Role.supervisor.value, "BJ-001"),
    ("S3002", "陈主管", Role.supervisor.value, "CC-95588"),
    ("U4001", "赵审计", Role.auditor.value, "HO-000"),
    ("M5001", "刘管理", Role.admin.value, "HO-000"),
]


def _refuse_in_production() -> None:
    if not current_app.config.get("DEMO_ALLOWED"):
        click.echo("Refusing: demo data is not allowed under the production configuration.", err=True)
        sys.exit(2)


def _cli_actor() -> Actor:
    return Actor.operator()


@console_cli.command("seed-demo")
@click.option("--if-empty", is_flag=True, help="Do nothing when staff already exist.")
def seed_demo(if_empty: bool) -> None:
    """Create demo branches and one staff member of each role; print their sign-in details."""
    _refuse_in_production()
    if db.session.scalar(select(Staff.id).limit(1)) is not None:
        if if_empty:
            click.echo("Demo data already present; nothing created.")
            saved = os.path.join(current_app.instance_path, "demo-credentials.txt")
            if os.path.exists(saved):
                with open(saved, encoding="utf-8") as fh:
                    click.echo(fh.read())
            return
        click.echo("Refusing: the database already has staff. Use a fresh database for demo data.", err=True)
        sys.exit(2)
    actor = _cli_actor()
    branches = {}
    for code, name, kind in DEMO_BRANCHES:
        branch = Branch(code=code, name=name, kind=kind, active=True)
        db.session.add(branch)
        db.session.flush()
        audit.record(db.session, actor, "branch.create", after=staff_admin.branch_snapshot(branch))
        branches[code] = branch
    lines = []
    for emp, name, role, code in DEMO_STAFF:
        staff = Staff(employee_no=emp, name=name, role=role, branch=branches[code], active=True)
        password = staff_admin.prepare_new_staff(staff)
        # Demo accounts arrive enrolled so a newcomer can sign in at once.
        staff.must_change_password = False
        db.session.add(staff)
        db.session.flush()
        secret = pyotp.random_base32()
        staff.totp_secret_enc = crypto.encrypt(secret, context=f"staff.totp:{staff.id}")
        audit.record(db.session, actor, "staff.create", after=staff_admin.staff_snapshot(staff),
                     details={"demo": True})
        lines.append((emp, name, role, code, password, secret))
    db.session.commit()
    wallets = seed_demo_customers()
    text = _credentials_text(lines) + _wallets_text(wallets)
    path = os.path.join(current_app.instance_path, "demo-credentials.txt")
    os.makedirs(current_app.instance_path, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    click.echo(text)


DEMO_WALLET_PASSWORD = "Spring-rain-2468"
# name, birth date, mobile, state
DEMO_CUSTOMERS = [
    ("张伟", date(1985, 3, 14), "13812345678", "active"),
    ("李娜", date(1990, 7, 2), "13923456789", "locked_30_minutes"),
    ("王芳", date(1978, 11, 23), "13734567890", "locked_until_unlock"),
    ("刘洋", date(1995, 1, 9), "15045678901", "risk_frozen"),
    ("陈静", date(1988, 5, 30), "18656789012", "password_expired"),
    ("杨磊", date(2000, 9, 17), "17767890123", "active_without_2fa"),
]


def demo_resident_id(born: date, sequence: int, region: str = "110105") -> str:
    first17 = f"{region}{born:%Y%m%d}{sequence:03d}"
    return first17 + resident_id_check_char(first17)


def _fire(wallet_no: str, count: int, *, password: str, sources: int = 1) -> list[str]:
    results = []
    for i in range(count):
        outcome = wallet_signin.authenticate(db.session, wallet_no, password, commit=db.session.commit,
                                             source_ip=f"203.0.113.{10 + i % sources}", device_id="demo-cli")
        results.append(outcome.result)
    return results


def seed_demo_customers() -> list[tuple]:
    """Customers in every state the console must handle, locked for real by the lockout engine."""
    actor = _cli_actor()
    made = []
    for i, (name, born, mobile, state) in enumerate(DEMO_CUSTOMERS, start=1):
        customer = customers.create_customer(
            db.session, actor, name=name, id_type="resident_id", id_number=demo_resident_id(born, 100 + i),
            mobile=mobile, id_expires_on=date(2035, 12, 31))
        wallet = customers.open_wallet(db.session, actor, customer, password=DEMO_WALLET_PASSWORD,
                                       tier=2 if i % 2 else 4)
        verification.registry_entry_for(db.session, "resident_id", demo_resident_id(born, 100 + i), name)
        if state != "active_without_2fa":
            db.session.add(TwoFactorBinding(wallet_id=wallet.id, device_id=f"DEV-{wallet.wallet_no[-6:]}",
                                            device_label="华为 Mate 60" if i % 2 else "iPhone 15",
                                            bound_at=utcnow() - timedelta(days=200)))
            wallet_credentials.set_security_questions(
                db.session, actor, wallet, [("mother_birthplace", "杭州"), ("first_school", "实验小学")])
        if state == "password_expired":
            wallet.password_expires_at = utcnow() - timedelta(days=3)
        if state == "locked_until_unlock":
            # Two earlier locks today, both lapsed: the next one lasts until staff unlock it.
            for hours in (5, 3):
                started = utcnow() - timedelta(hours=hours)
                db.session.add(WalletLock(wallet_id=wallet.id, kind="temporary", started_at=started,
                                          until=started + timedelta(minutes=30),
                                          ended_at=started + timedelta(minutes=30), ended_by="lapsed"))
        db.session.commit()
        if state in ("locked_30_minutes", "locked_until_unlock"):
            _fire(wallet.wallet_no, current_app.config["WALLET_LOCKOUT_THRESHOLD"], password="wrong-password")
        if state == "risk_frozen":
            _fire(wallet.wallet_no, current_app.config["RISK_FREEZE_MIN_FAILURES"], password="wrong-password",
                  sources=current_app.config["RISK_FREEZE_MIN_SOURCES"])
        made.append((wallet.wallet_no, name, customer.mobile_masked, state, demo_resident_id(born, 100 + i)))
    return made


def _wallets_text(wallets) -> str:
    out = ["", f"Demo wallets (wallet API sign-in password for all: {DEMO_WALLET_PASSWORD}; the ID number",
           "is what the customer's card shows at the counter; security answers: 杭州 / 实验小学):", ""]
    for wallet_no, name, mobile, state, id_number in wallets:
        out.append(f"{wallet_no}  {name:<4} {mobile}  {id_number}  {state}")
    return "\n".join(out) + "\n"


def _credentials_text(lines) -> str:
    out = ["Demo staff (DEMO ONLY - never use these accounts in production):", ""]
    out.append(f"{'employee':<9} {'role':<11} {'branch':<9} {'password':<17} TOTP secret (add to an authenticator app)")
    for emp, _name, role, code, password, secret in lines:
        out.append(f"{emp:<9} {role:<11} {code:<9} {password:<17} {secret}")
    out.append("")
    out.append("Current authenticator code for a demo account: flask console demo-code EMPLOYEE_NO")
    return "\n".join(out) + "\n"


@console_cli.command("demo-code")
@click.argument("employee_no")
def demo_code(employee_no: str) -> None:
    """Print the current TOTP code of a demo account (demo only)."""
    _refuse_in_production()
    staff = db.session.scalar(select(Staff).where(Staff.employee_no == employee_no))
    if staff is None or not staff.totp_enrolled:
        click.echo("No such staff member with an enrolled authenticator.", err=True)
        sys.exit(1)
    secret = crypto.decrypt(staff.totp_secret_enc, context=f"staff.totp:{staff.id}")
    click.echo(pyotp.TOTP(secret).now())


@console_cli.command("create-staff")
@click.option("--employee-no", required=True)
@click.option("--name", required=True)
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
@click.option("--branch", "branch_code", required=True, help="Branch code.")
@click.option("--create-branch", "branch_name", default=None, help="Create the branch with this name if missing.")
def create_staff(employee_no, name, role, branch_code, branch_name) -> None:
    """Create a staff account; prints its one-time initial password (changed at first sign-in)."""
    actor = Actor.operator()
    branch = db.session.scalar(select(Branch).where(Branch.code == branch_code))
    if branch is None:
        if not branch_name:
            click.echo(f"No branch {branch_code}; pass --create-branch NAME to create it.", err=True)
            sys.exit(1)
        branch = staff_admin.create_branch(db.session, actor, code=branch_code, name=branch_name,
                                           kind=BranchKind.branch.value)
    try:
        staff, initial = staff_admin.create_staff(db.session, actor, employee_no=employee_no, name=name,
                                                  role=role, branch=branch)
    except Conflict:
        db.session.rollback()
        click.echo(f"Employee number {employee_no} already exists.", err=True)
        sys.exit(1)
    db.session.commit()
    click.echo(f"Created {staff.employee_no} ({role}, {branch.code}).")
    click.echo(f"One-time initial password: {initial}")
    click.echo("It must be changed at first sign-in, where the authenticator is enrolled too.")


@console_cli.command("check-password")
@click.argument("employee_no")
def check_password_policy(employee_no: str) -> None:
    """Read a candidate password on stdin and list the staff policy rules it breaks."""
    password = sys.stdin.readline().rstrip("\n")
    problems = staff_password_problems(password, employee_no=employee_no,
                                       min_length=current_app.config["STAFF_PASSWORD_MIN_LENGTH"])
    click.echo(json.dumps(problems))
    sys.exit(1 if problems else 0)


@console_cli.command("fire-signins")
@click.argument("wallet_no")
@click.option("--attempts", default=5, show_default=True, type=click.IntRange(1, 200))
@click.option("--password", default="wrong-password", show_default=True)
@click.option("--sources", default=1, show_default=True, type=click.IntRange(1, 250),
              help="Spread the attempts over this many source addresses.")
def fire_signins(wallet_no: str, attempts: int, password: str, sources: int) -> None:
    """Fire sign-ins at a wallet through the real lockout engine (demo only)."""
    _refuse_in_production()
    try:
        results = _fire(wallet_no, attempts, password=password, sources=sources)
    except NotFound:
        click.echo(f"No active wallet {wallet_no}.", err=True)
        sys.exit(1)
    for n, result in enumerate(results, start=1):
        click.echo(f"{n:>3} {result}")


@console_cli.command("deliver-notifications")
@click.option("--loop", is_flag=True, help="Keep delivering until interrupted.")
@click.option("--interval", default=5.0, show_default=True, help="Seconds between rounds with --loop.")
@click.option("--batch", default=100, show_default=True)
def deliver_notifications(loop: bool, interval: float, batch: int) -> None:
    """Deliver due SMS from the outbox through the configured gateway."""
    gateway = gateway_from_config(current_app.config, current_app.instance_path)
    while True:
        counts = deliver_due(db.session, gateway, limit=batch)
        if counts["sent"] or counts["retry"] or counts["failed"] or not loop:
            click.echo(f"sent {counts['sent']}, to retry {counts['retry']}, failed {counts['failed']} "
                       f"(gateway {gateway.name})")
        db.session.remove()
        if not loop:
            return
        time.sleep(interval)


@audit_cli.command("verify")
def verify() -> None:
    """Walk the chain; exit 0 when intact, 1 with the first broken sequence number otherwise."""
    report = audit.verify_chain(db.session)
    audit.record_verification(db.session, Actor.operator(), report)
    if report.intact:
        db.session.commit()
        click.echo(f"intact: {report.count} events, head {report.head_seq} {report.head_hash}, "
                   f"{report.checkpoints} signed checkpoint(s) hold")
        return
    db.session.rollback()  # never extend a broken chain
    click.echo(f"BROKEN at sequence {report.first_bad_seq}: {report.reason} "
               f"({report.count} events verified before it)")
    sys.exit(1)


@audit_cli.command("checkpoint")
def checkpoint() -> None:
    """Sign the chain head (sequence, hash, time) with the Ed25519 audit key."""
    row = checkpoints.create_checkpoint(db.session, Actor.operator())
    db.session.commit()
    click.echo(f"checkpoint {row.id}: seq {row.seq} hash {row.hash} key {row.key_id}")


@audit_cli.command("partitions")
@click.option("--ahead", default=12, show_default=True, type=click.IntRange(1, 120), help="Months to prepare.")
def partitions(ahead: int) -> None:
    """Create the monthly audit partitions ahead of time (PostgreSQL; run it monthly)."""
    from .models.audit_partitions import ensure_partitions, is_partitioned

    connection = db.session.connection()
    if connection.dialect.name != "postgresql" or not is_partitioned(connection):
        click.echo("The audit table is not partitioned here (SQLite); nothing to do.")
        return
    created = ensure_partitions(connection, today=utcnow().date(), back=0, ahead=ahead)
    db.session.commit()
    click.echo(f"created {len(created)} partition(s): {', '.join(created) or 'none needed'}")


@audit_cli.command("public-key")
def public_key() -> None:
    """Print the PEM public key that verifies checkpoints (give it to auditors)."""
    click.echo(checkpoints.public_key_pem(), nl=False)


def register_cli(app) -> None:
    app.cli.add_command(console_cli)
    app.cli.add_command(audit_cli)

