"""Configuration: environment overrides, production fails fast, independent apps."""
import pytest

from config import ConfigError, ProductionConfig, load_config
from console import create_app

PROD_ENV = {
    "CONSOLE_DATABASE_URL": "postgresql+psycopg://app@db/console",
    "CONSOLE_SECRET_KEY": "x" * 48,
    "CONSOLE_DATA_ENCRYPTION_KEY": "dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=",
    "CONSOLE_BLIND_INDEX_KEY": "dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=",
    "CONSOLE_AUDIT_SIGNING_KEY": "dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=",
    "CONSOLE_WALLET_SERVICE_KEY": "dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=",
}


@pytest.mark.parametrize("missing", sorted(PROD_ENV))
def test_production_refuses_to_start_without_each_secret(monkeypatch, missing):
    for key, value in PROD_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(missing)
    with pytest.raises(ConfigError, match=missing):
        load_config("production")


def test_production_config_is_hardened(monkeypatch):
    for key, value in PROD_ENV.items():
        monkeypatch.setenv(key, value)
    values = load_config("production")
    assert values["SESSION_COOKIE_SECURE"] and values["HSTS"] and not values["DEMO_ALLOWED"]
    assert values["SQLALCHEMY_DATABASE_URI"] == PROD_ENV["CONSOLE_DATABASE_URL"]


def test_short_keys_are_refused(monkeypatch):
    for key, value in PROD_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CONSOLE_DATA_ENCRYPTION_KEY", "c2hvcnQ=")
    with pytest.raises(ConfigError, match="32 random bytes"):
        load_config("production")


def test_environment_overrides_are_typed(monkeypatch):
    monkeypatch.setenv("CONSOLE_STAFF_LOCKOUT_THRESHOLD", "7")
    monkeypatch.setenv("CONSOLE_HSTS", "true")
    monkeypatch.setenv("CONSOLE_WALLET_LOCK_DURATIONS_MINUTES", "15,45,90")
    values = load_config("testing")
    assert values["STAFF_LOCKOUT_THRESHOLD"] == 7 and values["HSTS"] is True
    assert values["WALLET_LOCK_DURATIONS_MINUTES"] == (15, 45, 90)


def test_unknown_environment_name(monkeypatch):
    with pytest.raises(ConfigError, match="Unknown CONSOLE_ENV"):
        load_config("staging")


def test_each_create_app_is_independent(tmp_path):
    first = create_app("testing", {"DATABASE_URL": f"sqlite:///{tmp_path}/a.db"})
    second = create_app("testing", {"DATABASE_URL": f"sqlite:///{tmp_path}/b.db"})
    assert first is not second
    assert first.extensions["admin"][0] is not second.extensions["admin"][0]
    assert {r.endpoint for r in first.url_map.iter_rules()} == {r.endpoint for r in second.url_map.iter_rules()}
    assert ProductionConfig.SESSION_COOKIE_SECURE
