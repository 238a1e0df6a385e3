"""Test fixtures in the flaskr style, on SQLite and on PostgreSQL.

Every test that takes ``app`` runs once per backend. The schema is built by the real
migrations once per run into a template database; each test gets a fresh copy of it
(a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL).
"""
from __future__ import annotations

import contextvars
import itertools
import os
import re
import shutil
import uuid
from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from flask import has_app_context
from flask.testing import FlaskClient

from console import create_app, timeutil
from console.extensions import db

PG_URL = os.environ.get("CONSOLE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = bool(os.environ.get("CI") or os.environ.get("CONSOLE_TEST_REQUIRE_POSTGRES"))
RUN_ID = uuid.uuid4().hex[:8]
_counter = itertools.count()


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: run on the SQLite backend only")
    config.addinivalue_line("markers", "postgres_only: run on the PostgreSQL backend only")
    config.addinivalue_line("markers", "browser: drives headless Chromium")
    _cheap_argon2()


def _cheap_argon2() -> None:
    """argon2id at its production cost is ~0.1 s of CPU a hash or check, and the suite makes
    thousands of them (every staff member, wallet, answer and sign-in): two thirds of its time.
    Tests in this process hash with the same algorithm at its lowest cost, as Django's test
    settings do. argon2 checks a hash at the cost stored in it, so the gunicorn nodes of
    tests/faults check these hashes cheaply too; the benches run the production profile, and
    test_production_shape checks that a plain process uses it."""
    import dataclasses

    from argon2 import PasswordHasher

    from console import passwords

    passwords.hasher = PasswordHasher.from_parameters(
        dataclasses.replace(passwords.PROFILE, time_cost=1, memory_cost=8, parallelism=1))
    passwords._dummy_hash.cache_clear()


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        backends = ["sqlite", "postgresql"]
        if metafunc.definition.get_closest_marker("sqlite_only"):
            backends = ["sqlite"]
        if metafunc.definition.get_closest_marker("postgres_only"):
            backends = ["postgresql"]
        metafunc.parametrize("backend", backends, scope="session")


def _pg_admin_engine():
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def _pg_available() -> bool:
    engine = _pg_admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def _migrate(url: str) -> None:
    app = create_app("testing", {"DATABASE_URL": url})
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
        db.engine.dispose()


@pytest.fixture(scope="session")
def template_db(backend, tmp_path_factory):
    """A migrated database per backend per run; tests copy it."""
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("db") / "template.db"
        _migrate(f"sqlite:///{path}")
        yield ("sqlite", str(path))
        return
    if not _pg_available():
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required (CI) but not reachable at {PG_URL}")
        pytest.skip("PostgreSQL not reachable")
    name = f"bc_tmpl_{RUN_ID}"
    engine = _pg_admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    _migrate(make_url(PG_URL).set(database=name).render_as_string(hide_password=False))
    yield ("postgresql", name)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def database_url(template_db, tmp_path):
    kind, source = template_db
    if kind == "sqlite":
        path = tmp_path / "test.db"
        shutil.copyfile(source, path)
        yield f"sqlite:///{path}"
        return
    name = f"bc_t_{RUN_ID}_{next(_counter)}"
    engine = _pg_admin_engine()
    with engine.connect() as conn:
        # FILE_COPY: a copy of the template's files, quicker here than WAL-logging every page of it.
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{source}" STRATEGY FILE_COPY'))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


class IsolatedClient(FlaskClient):
    """Each request runs in its own application context, as in production.

    Without this, Flask reuses the test's pushed app context, so ``g`` (CSRF token,
    session row, CSP nonce) would leak from one request into the next. The test's own
    transaction is committed first so SQLite's writer lock is free for the request.
    """

    def open(self, *args, **kwargs):
        if not has_app_context():  # a redirect followed inside an isolated request
            return super().open(*args, **kwargs)
        db.session.commit()
        kwargs.setdefault("buffered", True)  # a streamed body is read inside the request's own context
        return contextvars.Context().run(super().open, *args, **kwargs)


@pytest.fixture
def app(database_url, tmp_path):
    app = create_app("testing", {"DATABASE_URL": database_url, "SERVER_NAME": None})
    app.test_client_class = IsolatedClient
    app.instance_path = str(tmp_path / "instance")
    with app.app_context():
        yield app
        try:
            db.session.remove()
        except Exception:  # the connection may have been cut (the fault tests restart PostgreSQL)
            pass
        db.engine.dispose()
    timeutil.set_offset(None)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(autouse=True)
def _reset_clock():
    yield
    timeutil.set_offset(None)


# --- factories ---------------------------------------------------------------------------


class StaffHandle:
    """A staff account made by a test, with what the test needs to sign in as it."""

    def __init__(self, staff_id, employee_no, password, totp_secret, role, branch_code):
        self.id, self.employee_no, self.password = staff_id, employee_no, password
        self.totp_secret, self.role, self.branch_code = totp_secret, role, branch_code


def make_branch(code="BJ-001", name="测试支行", kind="branch"):
    from console.models.staff import Branch

    branch = db.session.query(Branch).filter_by(code=code).first()
    if branch is None:
        branch = Branch(code=code, name=name, kind=kind, active=True)
        db.session.add(branch)
        db.session.flush()
    return branch


def make_staff(role="teller", *, employee_no=None, branch_code="BJ-001", enrolled=True,
               must_change=False, password="Correct-horse-42") -> StaffHandle:
    """Create a staff member directly (no audit needed for fixtures)."""
    from console import crypto
    from console.models.staff import Staff
    from console.passwords import hash_password

    branch = make_branch(branch_code, kind="call_centre" if branch_code.startswith("CC") else "branch")
    employee_no = employee_no or f"{role[0].upper()}{next(_counter) + 7000}"
    staff = Staff(employee_no=employee_no, name=f"测试{role}", role=role, branch=branch, active=True,
                  password_hash=hash_password(password), must_change_password=must_change,
                  created_at=timeutil.utcnow(), session_generation=1, failed_signins=0)
    db.session.add(staff)
    db.session.flush()
    secret = None
    if enrolled:
        secret = pyotp.random_base32()
        staff.totp_secret_enc = crypto.encrypt(secret, context=f"staff.totp:{staff.id}")
    staff_id = staff.id
    db.session.commit()  # and no read after it: SQLite's writer lock must stay free for the server
    return StaffHandle(staff_id, employee_no, password, secret, role, branch_code)


def totp_code(handle: StaffHandle) -> str:
    """A code the server will accept now: never one already used (replay protection)."""
    from console.models.staff import Staff

    db.session.expire_all()
    last = db.session.get(Staff, handle.id).totp_last_step
    db.session.rollback()  # end the read transaction (SQLite writers wait for it)
    totp = pyotp.TOTP(handle.totp_secret)
    now_step = int(timeutil.utcnow().timestamp()) // 30
    step = now_step if last is None or last < now_step else last + 1
    if step > now_step + 1:
        # Both codes of this window are spent: move the application clock on.
        timeutil.set_offset((timeutil._offset or timedelta()) + timedelta(seconds=30 * (step - now_step)))
    return totp.generate_otp(step)


CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token(client, url="/auth/login") -> str:
    page = client.get(url)
    match = CSRF_RE.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {url}"
    return match.group(1)


def post_form(client, url, data, *, token_from=None, follow=False):
    data = dict(data)
    data.setdefault("csrf_token", csrf_token(client, token_from or url))
    return client.post(url, data=data, follow_redirects=follow)


def sign_in(client, handle: StaffHandle, *, follow=True):
    """Sign in through the real pages: password, then TOTP."""
    response = post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    assert response.headers["Location"].endswith("/auth/totp"), response.headers["Location"]
    return post_form(client, "/auth/totp", {"code": totp_code(handle)}, follow=follow)


@pytest.fixture
def login_as(app, client):
    """``login_as("teller")`` creates a staff member of that role and signs the client in."""
    def _login(role="teller", **kwargs):
        handle = make_staff(role, **kwargs)
        response = sign_in(client, handle)
        assert response.status_code == 200
        return handle
    return _login


def audit_events(action=None):
    from console.models.audit import AuditEvent

    db.session.expire_all()
    query = db.session.query(AuditEvent).order_by(AuditEvent.seq)
    if action:
        query = query.filter(AuditEvent.action == action)
    return query.all()


# --- customers and wallets -------------------------------------------------------------------

WALLET_PASSWORD = "Spring-rain-2468"
ID_NUMBERS: dict = {}  # the last made customer's ID number under None, and by wallet number
_mobiles = itertools.count(13800000001)


def make_wallet(*, name="张伟", password=WALLET_PASSWORD, born=None, mobile=None, with_2fa=True, questions=True):
    """A customer with one wallet, created through the real services (commits)."""
    from datetime import date

    from console.demo import demo_resident_id
    from console.models.customer import TwoFactorBinding
    from console.services import customers, wallet_credentials
    from console.services.actor import Actor

    from console.services import verification

    actor = Actor.operator()
    born = born or date(1985, 3, 14)
    id_number = demo_resident_id(born, next(_counter) % 1000)
    customer = customers.create_customer(
        db.session, actor, name=name, id_type="resident_id", id_number=id_number,
        mobile=mobile or str(next(_mobiles)), id_expires_on=date(2035, 12, 31))
    verification.registry_entry_for(db.session, "resident_id", id_number, name)
    ID_NUMBERS[None] = id_number
    wallet = customers.open_wallet(db.session, actor, customer, password=password)
    if with_2fa:
        db.session.add(TwoFactorBinding(wallet_id=wallet.id, device_id="DEV-1", device_label="phone",
                                        bound_at=timeutil.utcnow()))
    if questions:
        wallet_credentials.set_security_questions(db.session, actor, wallet,
                                                  [("mother_birthplace", "杭州"), ("first_school", "实验小学")])
    wallet_no = wallet.wallet_no
    ID_NUMBERS[wallet_no] = id_number
    db.session.commit()
    return wallet_no


def sign_in_wallet(wallet_no, password, *, source_ip="198.51.100.7"):
    from console.services import wallet_signin

    outcome = wallet_signin.authenticate(db.session, wallet_no, password, commit=db.session.commit,
                                         source_ip=source_ip)
    return outcome


def hold_live_claims(wallet_no, count=5, seconds=4):
    """``count`` checks of the wallet in flight on live workers (claims expiring in ``seconds``)."""
    from console.models.customer import LoginAttempt, Wallet

    wallet = get_wallet(wallet_no)
    now = timeutil.utcnow()
    for seq in range(wallet.attempt_seq + 1, wallet.attempt_seq + count + 1):
        db.session.add(LoginAttempt(wallet_id=wallet.id, at=now, purpose="sign_in", result="pending", seq=seq,
                                    claim_owner="node-a:1:1", claim_expires_at=now + timedelta(seconds=seconds)))
    wallet.attempt_seq += count
    db.session.commit()


def get_wallet(wallet_no):
    from console.models.customer import Wallet

    db.session.expire_all()
    return db.session.query(Wallet).filter_by(wallet_no=wallet_no).one()


def tamper(*statements, table="audit_event"):
    """Change audit rows behind the append-only triggers' back (drop, change, recreate)."""
    from sqlalchemy import text as sql

    from console.models.audit import append_only_ddl, drop_append_only_ddl
    from console.models.audit_partitions import chain_head_guard_ddl, drop_chain_head_guard_ddl

    dialect = db.engine.dialect.name
    db.session.rollback()
    if dialect == "postgresql":  # as a superuser would: every trigger off for this transaction
        db.session.execute(sql("SET LOCAL session_replication_role = replica"))
        for statement in statements:
            db.session.execute(sql(statement))
        db.session.commit()
        return
    for ddl in drop_append_only_ddl(dialect, table) + drop_chain_head_guard_ddl(dialect):
        db.session.execute(sql(ddl))
    for statement in statements:
        db.session.execute(sql(statement))
    for ddl in append_only_ddl(dialect, table) + chain_head_guard_ddl(dialect):
        db.session.execute(sql(ddl))
    db.session.commit()
