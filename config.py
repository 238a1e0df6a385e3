"""Configuration classes.

Every setting can be overridden from the environment with a ``CONSOLE_`` prefix
(``CONSOLE_DATABASE_URL``, ``CONSOLE_SECRET_KEY``, ...). The production
configuration refuses to start when a secret is missing: it never invents one.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = Path(os.environ.get("CONSOLE_INSTANCE_PATH", BASE_DIR / "instance"))

# Secrets the application cannot run without (production refuses to start).
REQUIRED_SECRETS = ("SECRET_KEY", "DATA_ENCRYPTION_KEY", "BLIND_INDEX_KEY", "AUDIT_SIGNING_KEY")


class ConfigError(RuntimeError):
    """Raised when the configuration is unusable; the message says what to set."""


class BaseConfig:
    ENV_NAME = "base"
    SECRET_KEY: str | None = None
    DATABASE_URL: str | None = None
    # 32-byte keys, base64 (urlsafe or standard) encoded.
    DATA_ENCRYPTION_KEY: str | None = None
    BLIND_INDEX_KEY: str | None = None
    AUDIT_SIGNING_KEY: str | None = None

    BANK_NAME = "Branch Console Demo Bank"

    # Staff sign-in policy (PCI DSS 8.2.8, 8.3.4, 8.3.6).
    STAFF_PASSWORD_MIN_LENGTH = 12
    STAFF_LOCKOUT_THRESHOLD = 5
    STAFF_LOCKOUT_MINUTES = 30
    STAFF_IDLE_TIMEOUT_MINUTES = 15
    STAFF_ABSOLUTE_TIMEOUT_HOURS = 12
    STAFF_PENDING_SIGNIN_SECONDS = 300
    TOTP_ISSUER = "Branch Console"

    # Flask / cookies.
    SESSION_COOKIE_NAME = "bc_session"
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = False
    PERMANENT_SESSION_LIFETIME = timedelta(hours=12)
    MAX_CONTENT_LENGTH = 1 * 1024 * 1024
    WTF_CSRF_TIME_LIMIT = 3600
    PREFERRED_URL_SCHEME = "http"
    HSTS = False

    BABEL_DEFAULT_LOCALE = "zh_CN"
    BABEL_DEFAULT_TIMEZONE = "Asia/Shanghai"
    LANGUAGES = ("zh_CN", "en")

    SQLALCHEMY_ENGINE_OPTIONS: dict = {}
    DEMO_ALLOWED = True

    @classmethod
    def load(cls) -> dict:
        """Return this class's settings with ``CONSOLE_*`` environment overrides applied."""
        values = {k: getattr(cls, k) for k in dir(cls) if k.isupper()}
        for key, default in list(values.items()):
            raw = os.environ.get(f"CONSOLE_{key}")
            if raw is None:
                continue
            values[key] = _coerce(raw, default)
        values["SQLALCHEMY_DATABASE_URI"] = values.get("DATABASE_URL")
        return values


def _coerce(raw: str, default):
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, timedelta):
        return timedelta(seconds=int(raw))
    if isinstance(default, (tuple, list)):
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    return raw


def _development_secrets() -> dict:
    """Keys for the embedded development database, kept in instance/ (never committed).

    They are generated once, on purpose, for a local demo; the production config
    never reaches this function.
    """
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    path = INSTANCE_DIR / "dev-secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    values = {
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATA_ENCRYPTION_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "BLIND_INDEX_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "AUDIT_SIGNING_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return values


class DevelopmentConfig(BaseConfig):
    ENV_NAME = "development"
    DATABASE_URL = f"sqlite:///{INSTANCE_DIR / 'console.db'}"

    @classmethod
    def load(cls) -> dict:
        values = super().load()
        for key, value in _development_secrets().items():
            if not values.get(key):
                values[key] = value
        return values


class TestingConfig(BaseConfig):
    ENV_NAME = "testing"
    TESTING = True
    SECRET_KEY = "testing-secret-key-not-for-production"
    DATA_ENCRYPTION_KEY = base64.urlsafe_b64encode(b"t" * 32).decode()
    BLIND_INDEX_KEY = base64.urlsafe_b64encode(b"b" * 32).decode()
    AUDIT_SIGNING_KEY = base64.urlsafe_b64encode(b"s" * 32).decode()
    DATABASE_URL = "sqlite://"
    WTF_CSRF_ENABLED = True


class ProductionConfig(BaseConfig):
    ENV_NAME = "production"
    SESSION_COOKIE_SECURE = True
    PREFERRED_URL_SCHEME = "https"
    HSTS = True
    DEMO_ALLOWED = False

    @classmethod
    def load(cls) -> dict:
        values = super().load()
        missing = [f"CONSOLE_{k}" for k in ("DATABASE_URL",) + REQUIRED_SECRETS if not values.get(k)]
        if missing:
            raise ConfigError(
                "Production configuration is incomplete; set " + ", ".join(missing)
                + " in the environment. Refusing to start."
            )
        return values


CONFIGS = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def load_config(name: str | None = None) -> dict:
    name = name or os.environ.get("CONSOLE_ENV", "development")
    try:
        cls = CONFIGS[name]
    except KeyError:
        raise ConfigError(f"Unknown CONSOLE_ENV {name!r}; use one of {', '.join(CONFIGS)}.") from None
    values = cls.load()
    for key in REQUIRED_SECRETS:
        if key != "SECRET_KEY" and values.get(key):
            _check_key(key, values[key])
    return values


def _check_key(name: str, value: str) -> None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"CONSOLE_{name} must be 32 random bytes, base64 encoded.")
