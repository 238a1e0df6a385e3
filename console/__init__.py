"""Branch Console: the back office that unlocks wallets and resets credentials."""
from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask

from config import INSTANCE_DIR, ConfigError, check_ping_window, load_config

from .answers import ConsoleFlask
from .extensions import csrf, db, login_manager, migrate

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)


def create_app(config_name: str | None = None, overrides: dict | None = None) -> Flask:
    """Build a fresh, independent application: config -> policy -> extensions -> blueprints -> admin -> cli."""
    app = ConsoleFlask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(Path(__file__).parent / "static"),
        instance_path=str(INSTANCE_DIR),
    )
    app.config.update(load_config(config_name))
    if overrides:
        app.config.update(overrides)
        if "DATABASE_URL" in overrides:
            app.config["SQLALCHEMY_DATABASE_URI"] = overrides["DATABASE_URL"]
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        raise ConfigError("No database configured; set CONSOLE_DATABASE_URL.")
    _engine_options(app)

    from . import policy

    policy.init_app(app)  # the bank's rules, checked once: a bad setting refuses to start

    from . import answers, models  # noqa: F401  (register tables)
    from .services import audit

    db.init_app(app)
    _check_connections(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True, compare_type=True)
    csrf.init_app(app)
    login_manager.init_app(app)
    audit.install_hooks()
    from .services import sequencer

    sequencer.init_app(app)
    from .services import checkpoints

    checkpoints.init_app(app)
    answers.install_hooks()

    from .web import i18n, inputs, security

    i18n.init_app(app)
    security.init_app(app)
    inputs.init_app(app)  # converters before the blueprints; its hook before the rate limiter's

    from .web import alerts, auditing, auth, desk, errors, home, receipt_check

    app.register_blueprint(auth.bp)
    app.register_blueprint(home.bp)
    app.register_blueprint(auditing.bp)
    app.register_blueprint(desk.bp)
    app.register_blueprint(receipt_check.bp)
    app.register_blueprint(alerts.bp)
    from .web import passkeys as passkey_pages

    passkey_pages.init_app(app)

    from .web import ops, self_service

    app.register_blueprint(ops.bp)
    self_service.init_app(app)

    from .api import staff as staff_api
    from .api import wallet as wallet_api

    app.register_blueprint(wallet_api.bp)
    app.register_blueprint(staff_api.bp)
    errors.init_app(app)

    from . import observability, ratelimits

    ratelimits.init_app(app)
    observability.init_app(app)
    if app.config.get("TRUSTED_PROXY_HOPS"):
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = app.config["TRUSTED_PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    app.extensions["migration_head"] = _migration_head()

    from .admin import build_admin, build_audit_browser

    build_admin(app)
    build_audit_browser(app)
    inputs.check_references(app)  # after every view is registered

    from .cli import register_cli

    register_cli(app)
    return app


def _migration_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    return ScriptDirectory.from_config(config).get_current_head()


def _engine_options(app: Flask) -> None:
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    if uri.startswith("sqlite"):
        options.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        if uri in ("sqlite://", "sqlite:///:memory:"):
            from sqlalchemy.pool import StaticPool

            options.setdefault("poolclass", StaticPool)
        else:
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    else:
        # A dead connection is replaced on checkout (console/dbpool.py: checked if it was idle for
        # a while); a database that is down fails fast.
        options.setdefault("pool_timeout", 10)
        options.setdefault("pool_use_lifo", True)  # the connection used last goes out first
        options.setdefault("connect_args", {"connect_timeout": 5})
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options
    app.config.setdefault("SQLALCHEMY_TRACK_MODIFICATIONS", False)
    _sqlite_pragmas_once()


def _check_connections(app: Flask) -> None:
    """PostgreSQL: a pooled connection idle for a while is pinged on checkout (unless the deployment
    chose SQLAlchemy's own ``pool_pre_ping`` in SQLALCHEMY_ENGINE_OPTIONS)."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        return
    if app.config["SQLALCHEMY_ENGINE_OPTIONS"].get("pool_pre_ping"):
        return
    from . import dbpool

    window = app.config["DATABASE_PING_AFTER_IDLE_SECONDS"]
    check_ping_window(window)  # set by the environment (checked there already) or by create_app's overrides
    with app.app_context():
        dbpool.check_on_checkout(db.engine, window)


_pragmas_installed = False


def _sqlite_pragmas_once() -> None:
    """SQLite: WAL, foreign keys, and BEGIN IMMEDIATE so writers queue instead of failing."""
    global _pragmas_installed
    if _pragmas_installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _on_connect(dbapi_conn, record):
        import sqlite3

        if isinstance(dbapi_conn, sqlite3.Connection):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    @event.listens_for(Engine, "begin")
    def _on_begin(conn):
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    _pragmas_installed = True
