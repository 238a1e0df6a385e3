"""Configuration: environment overrides, production fails fast, independent apps."""
import pytest

from config import ConfigError, ProductionConfig, load_config
from console import create_app

PROD_ENV = {
    "CONSOLE_DATABASE_URL": "postgresql+psycopg://app@db/console",
    "CONSOLE_SECRET_KEY": "rK3v9QmZt1Lw8Xb2Nf5Hc7Jd0Ps4Ug6Ya_-eTiOoWqEnRlMkBzVyxCaGhDj",
    "CONSOLE_DATA_ENCRYPTION_KEY": "dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=",
    "CONSOLE_BLIND_INDEX_KEY": "dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=",
    "CONSOLE_AUDIT_SIGNING_KEY": "dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=",
    "CONSOLE_WALLET_SERVICE_KEY": "dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=",
    "CONSOLE_PUBLIC_BASE_URL": "https://console.bank.example",
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


def _production_env(monkeypatch):
    for key, value in PROD_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("value", ["x", "x" * 48, "abcd" * 10, "short-but-mixed-Key-9"])
def test_production_refuses_a_short_or_predictable_secret_key(monkeypatch, value):
    _production_env(monkeypatch)
    monkeypatch.setenv("CONSOLE_SECRET_KEY", value)
    with pytest.raises(ConfigError, match="CONSOLE_SECRET_KEY must be at least 32 random bytes"):
        load_config("production")


def test_production_accepts_a_generated_secret_key(monkeypatch):
    import secrets

    _production_env(monkeypatch)
    for value in (secrets.token_urlsafe(48), secrets.token_hex(32)):
        monkeypatch.setenv("CONSOLE_SECRET_KEY", value)
        assert load_config("production")["SECRET_KEY"] == value


@pytest.mark.parametrize("name", ["SECRET_KEY", "DATA_ENCRYPTION_KEY", "BLIND_INDEX_KEY", "AUDIT_SIGNING_KEY",
                                  "WALLET_SERVICE_KEY", "DATABASE_URL"])
def test_every_secret_can_come_from_a_file(monkeypatch, tmp_path, name):
    _production_env(monkeypatch)
    value = PROD_ENV[f"CONSOLE_{name}"]
    path = tmp_path / name.lower()
    path.write_text(value + "\n")  # one trailing newline, as editors and `echo` leave it
    monkeypatch.delenv(f"CONSOLE_{name}")
    monkeypatch.setenv(f"CONSOLE_{name}_FILE", str(path))
    assert load_config("production")[name] == value


def test_a_secret_file_keeps_everything_but_one_trailing_newline(monkeypatch, tmp_path):
    path = tmp_path / "token"
    path.write_bytes(b" token with spaces \n\n")
    monkeypatch.setenv("CONSOLE_SMS_HTTP_TOKEN_FILE", str(path))
    assert load_config("testing")["SMS_HTTP_TOKEN"] == " token with spaces \n"


def test_an_unreadable_secret_file_is_named(monkeypatch, tmp_path):
    _production_env(monkeypatch)
    monkeypatch.delenv("CONSOLE_SECRET_KEY")
    monkeypatch.setenv("CONSOLE_SECRET_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="CONSOLE_SECRET_KEY_FILE: cannot read .*missing"):
        load_config("production")


def test_a_secret_set_both_ways_is_refused(monkeypatch, tmp_path):
    _production_env(monkeypatch)
    path = tmp_path / "key"
    path.write_text(PROD_ENV["CONSOLE_DATA_ENCRYPTION_KEY"])
    monkeypatch.setenv("CONSOLE_DATA_ENCRYPTION_KEY_FILE", str(path))
    with pytest.raises(ConfigError, match="Both CONSOLE_DATA_ENCRYPTION_KEY and CONSOLE_DATA_ENCRYPTION_KEY_FILE"):
        load_config("production")


def test_an_empty_secret_file_counts_as_missing(monkeypatch, tmp_path):
    _production_env(monkeypatch)
    path = tmp_path / "empty"
    path.write_text("\n")
    monkeypatch.delenv("CONSOLE_AUDIT_SIGNING_KEY")
    monkeypatch.setenv("CONSOLE_AUDIT_SIGNING_KEY_FILE", str(path))
    with pytest.raises(ConfigError, match="CONSOLE_AUDIT_SIGNING_KEY"):
        load_config("production")


@pytest.mark.parametrize("name, value", [("STAFF_LOCKOUT_THRESHOLD", "seven"),
                                         ("WALLET_LOCK_DURATIONS_MINUTES", "15,forty"),
                                         ("DATABASE_PING_AFTER_IDLE_SECONDS", "half")])
def test_a_typed_setting_that_is_not_a_number_is_named(monkeypatch, name, value):
    monkeypatch.setenv(f"CONSOLE_{name}", value)
    with pytest.raises(ConfigError, match=f"CONSOLE_{name}="):
        load_config("testing")


@pytest.mark.parametrize("value", ["-0.1", "61", "nan", "inf"])
def test_the_ping_window_is_refused_outside_0_to_60_seconds(monkeypatch, value):
    monkeypatch.setenv("CONSOLE_DATABASE_PING_AFTER_IDLE_SECONDS", value)
    with pytest.raises(ConfigError, match="DATABASE_PING_AFTER_IDLE_SECONDS must be"):
        load_config("testing")


def test_the_ping_window_takes_whole_and_fractional_seconds(monkeypatch):
    for value, expected in (("0", 0.0), ("2", 2.0), ("0.25", 0.25)):
        monkeypatch.setenv("CONSOLE_DATABASE_PING_AFTER_IDLE_SECONDS", value)
        assert load_config("testing")["DATABASE_PING_AFTER_IDLE_SECONDS"] == expected
