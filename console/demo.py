"""Demo data: branches, one staff member of each role, and customers whose wallets are in every
state the console must handle (``flask console seed-demo``; refused under the production config).

Everything is made through the services production uses, so the demo cannot drift from what the
console really does: branches and staff through ``staff_admin`` (as an admin would), the demo
accounts' first sign-in (password change, authenticator enrolment) through ``staff_auth`` (as the
staff member would), customers and wallets through ``customers``, security questions through
``wallet_credentials``, and every lock and the risk freeze through the real lockout engine
(``wallet_signin.authenticate`` with wrong passwords). Each writes its own audit events.

Three things have no service, because in production they are not done by anyone but time or
another system, so they are written here directly and only here:

- the 2FA device binding (the wallet app binds a device; the console only ever unbinds one),
- an expired password (a password expires by time passing),
- the two lapsed locks earlier today that make the next lock last until staff unlock it
  (the engine locks only at the present moment; these rows are what it leaves behind once a
  lock has lapsed).

Nothing here commits by itself: the caller passes ``commit`` (the CLI passes ``boundary.commit_now``),
called where the demo needs its work durable before going on (the lockout engine commits its
claims through it too).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Callable

import pyotp
from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import policy
from .identity import resident_id_check_char
from .models.customer import TwoFactorBinding, Wallet, WalletLock
from .models.staff import Branch, BranchKind, Role, Staff
from .passwords import generate_initial_password, staff_password_problems
from .services import customers, staff_admin, staff_auth, verification, wallet_credentials, wallet_signin
from .services.actor import Actor
from .timeutil import utcnow

Commit = Callable[[], None]

# code, name (in Chinese only: pages, receipts and reports give any English themselves), kind
DEMO_BRANCHES = [
    ("BJ-001", "北京西城支行", BranchKind.branch.value),
    ("SH-002", "上海浦东支行", BranchKind.branch.value),
    ("CC-95588", "客户服务中心", BranchKind.call_centre.value),
    ("HO-000", "总行", BranchKind.head_office.value),
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

DEMO_WALLET_PASSWORD = "Spring-rain-2468"
DEMO_SECURITY_ANSWERS = [("mother_birthplace", "杭州"), ("first_school", "实验小学")]
# name, birth date, mobile, state
DEMO_CUSTOMERS = [
    ("张伟", date(1985, 3, 14), "13812345678", "active"),
    ("李娜", date(1990, 7, 2), "13923456789", "locked_30_minutes"),
    ("王芳", date(1978, 11, 23), "13734567890", "locked_until_unlock"),
    ("刘洋", date(1995, 1, 9), "15045678901", "risk_frozen"),
    ("陈静", date(1988, 5, 30), "18656789012", "password_expired"),
    ("杨磊", date(2000, 9, 17), "17767890123", "active_without_2fa"),
]
CREDENTIALS_FILE = "demo-credentials.txt"  # in the instance folder, mode 600


def demo_resident_id(born: date, sequence: int, region: str = "110105") -> str:
    """A valid 18-character resident ID number (with its check character) for a birth date."""
    first17 = f"{region}{born:%Y%m%d}{sequence:03d}"
    return first17 + resident_id_check_char(first17)


@dataclass(frozen=True)
class DemoStaff:
    employee_no: str
    name: str
    role: str
    branch_code: str
    password: str
    totp_secret: str


@dataclass(frozen=True)
class DemoWallet:
    wallet_no: str
    name: str
    mobile_masked: str
    state: str
    id_number: str


@dataclass
class DemoData:
    staff: list[DemoStaff] = field(default_factory=list)
    wallets: list[DemoWallet] = field(default_factory=list)

    def text(self) -> str:
        """What the demo prints (and keeps in the instance folder): how to sign in as whom."""
        return credentials_text(self.staff) + wallets_text(self.wallets)


def has_staff(session: Session) -> bool:
    return session.scalar(select(Staff.id).limit(1)) is not None


def seed(session: Session, actor: Actor, *, commit: Commit) -> DemoData:
    """The whole demo: branches, staff, customers. Expects a database without staff."""
    staff = seed_staff(session, actor)
    commit()
    return DemoData(staff=staff, wallets=seed_customers(session, actor, commit=commit))


def seed_staff(session: Session, actor: Actor) -> list[DemoStaff]:
    """The demo branches and one staff member of each role, created by ``actor`` (an admin) and
    already through their first sign-in, so a newcomer can sign in at once."""
    branches = {code: staff_admin.create_branch(session, actor, code=code, name=name, kind=kind)
                for code, name, kind in DEMO_BRANCHES}
    made = []
    for employee_no, name, role, code in DEMO_STAFF:
        staff, _initial = staff_admin.create_staff(session, actor, employee_no=employee_no, name=name, role=role,
                                                   branch=branches[code])
        password, secret = _complete_first_sign_in(session, staff)
        made.append(DemoStaff(employee_no, name, role, code, password, secret))
    return made


def _complete_first_sign_in(session: Session, staff: Staff) -> tuple[str, str]:
    """What the staff member does at first sign-in: choose a password, enrol an authenticator.
    Returns the password and the authenticator's secret."""
    min_length = policy.current().staff_signin.password_min_length
    while True:
        password = generate_initial_password()
        if not staff_password_problems(password, employee_no=staff.employee_no, min_length=min_length):
            break
    problems = staff_auth.change_own_password(session, staff, password, source_ip=None)
    if problems:
        raise RuntimeError(f"demo password of {staff.employee_no} refused: {problems}")
    secret = staff_auth.new_totp_secret()
    # Enrol with the previous step's code (accepted as clock drift), so the code an authenticator
    # shows right now is still unused when the newcomer signs in.
    for _ in range(3):  # the step may turn between computing the code and checking it
        code = pyotp.TOTP(secret).at(utcnow(), counter_offset=-1)
        if staff_auth.enroll_totp(session, staff, secret, code, source_ip=None):
            return password, secret
    raise RuntimeError(f"could not enrol the demo authenticator of {staff.employee_no}")


def seed_customers(session: Session, actor: Actor, *, commit: Commit) -> list[DemoWallet]:
    """Customers in every state the console must handle, locked for real by the lockout engine."""
    rules = policy.current()
    made = []
    # The demo customers live in Beijing: their wallets' home branch is the first demo branch, whose
    # supervisor handles their risk alerts.
    home = session.scalar(select(Branch.id).where(Branch.code == DEMO_BRANCHES[0][0]))
    for i, (name, born, mobile, state) in enumerate(DEMO_CUSTOMERS, start=1):
        id_number = demo_resident_id(born, 100 + i)
        customer = customers.create_customer(session, actor, name=name, id_type="resident_id", id_number=id_number,
                                             mobile=mobile, id_expires_on=date(2035, 12, 31))
        wallet = customers.open_wallet(session, actor, customer, password=DEMO_WALLET_PASSWORD,
                                       tier=2 if i % 2 else 4, home_branch_id=home)
        verification.registry_entry_for(session, "resident_id", id_number, name)
        if state != "active_without_2fa":
            _bind_device(session, wallet, label="华为 Mate 60" if i % 2 else "iPhone 15")
            wallet_credentials.set_security_questions(session, actor, wallet, DEMO_SECURITY_ANSWERS)
        if state == "password_expired":
            _expire_password(wallet)
        if state == "locked_until_unlock":
            _lapsed_locks_earlier_today(session, wallet)
        commit()
        if state in ("locked_30_minutes", "locked_until_unlock"):
            fire_signins(session, wallet.wallet_no, rules.wallet_lockout.threshold, password="wrong-password",
                         commit=commit)
        if state == "risk_frozen":
            fire_signins(session, wallet.wallet_no, rules.risk.min_failures, password="wrong-password",
                         sources=rules.risk.min_sources, commit=commit)
        made.append(DemoWallet(wallet.wallet_no, name, customer.mobile_masked, state, id_number))
    return made


def fire_signins(session: Session, wallet_no: str, count: int, *, password: str, commit: Commit,
                 sources: int = 1) -> list[str]:
    """Sign in ``count`` times through the real lockout engine, spread over ``sources`` addresses;
    returns each attempt's result. Raises NotFound for an unknown or closed wallet."""
    results = []
    for i in range(count):
        outcome = wallet_signin.authenticate(session, wallet_no, password, commit=commit,
                                             source_ip=f"203.0.113.{10 + i % sources}", device_id="demo-cli")
        results.append(outcome.result)
    return results


def _bind_device(session: Session, wallet: Wallet, *, label: str) -> None:
    """The wallet app binds a device; the console has no service for it (it only unbinds)."""
    session.add(TwoFactorBinding(wallet_id=wallet.id, device_id=f"DEV-{wallet.wallet_no[-6:]}", device_label=label,
                                 bound_at=utcnow() - timedelta(days=200)))


def _expire_password(wallet: Wallet) -> None:
    """A password expires by time passing; the demo backdates it."""
    wallet.password_expires_at = utcnow() - timedelta(days=3)


def _lapsed_locks_earlier_today(session: Session, wallet: Wallet) -> None:
    """Two locks earlier today, both lapsed (as the engine leaves them): the next one the engine
    places is the third in its window, which lasts until staff unlock it."""
    for hours in (5, 3):
        started = utcnow() - timedelta(hours=hours)
        session.add(WalletLock(wallet_id=wallet.id, kind="temporary", started_at=started,
                               until=started + timedelta(minutes=30), ended_at=started + timedelta(minutes=30),
                               ended_by="lapsed"))


def current_code(session: Session, employee_no: str) -> str | None:
    """The authenticator code a demo account's app shows now (None: no such enrolled account)."""
    staff = session.scalar(select(Staff).where(Staff.employee_no == employee_no))
    if staff is None or not staff.totp_enrolled:
        return None
    return pyotp.TOTP(staff_auth.staff_totp_secret(staff)).now()


def credentials_text(staff: list[DemoStaff]) -> str:
    out = ["Demo staff (DEMO ONLY - never use these accounts in production):", ""]
    out.append(f"{'employee':<9} {'role':<11} {'branch':<9} {'password':<17} TOTP secret (add to an authenticator app)")
    for s in staff:
        out.append(f"{s.employee_no:<9} {s.role:<11} {s.branch_code:<9} {s.password:<17} {s.totp_secret}")
    out.append("")
    out.append("Current authenticator code for a demo account: flask console demo-code EMPLOYEE_NO")
    return "\n".join(out) + "\n"


def wallets_text(wallets: list[DemoWallet]) -> str:
    answers = " / ".join(answer for _question, answer in DEMO_SECURITY_ANSWERS)
    out = ["", f"Demo wallets (wallet API sign-in password for all: {DEMO_WALLET_PASSWORD}; the ID number",
           f"is what the customer's card shows at the counter; security answers: {answers}):", ""]
    for w in wallets:
        out.append(f"{w.wallet_no}  {w.name:<4} {w.mobile_masked}  {w.id_number}  {w.state}")
    return "\n".join(out) + "\n"


def _credentials_path() -> str:
    return os.path.join(current_app.instance_path, CREDENTIALS_FILE)


def save_credentials(text: str) -> None:
    """Keep what the seed printed, readable by the owner only, for ``seed-demo --if-empty``."""
    os.makedirs(current_app.instance_path, exist_ok=True)
    fd = os.open(_credentials_path(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def saved_credentials() -> str | None:
    path = _credentials_path()
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return fh.read()
