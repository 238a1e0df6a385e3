"""One policy (built and checked in create_app) and one vocabulary (console.codes), labelled at the edge."""
import ast
import dataclasses
import re
from datetime import date, datetime, timezone

import pytest

from config import ConfigError
from console import ROOT, codes, create_app, permissions, policy, timeutil

CONSOLE = ROOT / "console"


def _app(tmp_path, **overrides):
    return create_app("testing", {"DATABASE_URL": f"sqlite:///{tmp_path}/p.db", **overrides})


@pytest.mark.parametrize("setting, value", [
    ("WALLET_LOCKOUT_THRESHOLD", 0),
    ("WALLET_LOCK_DURATIONS_MINUTES", (30, 0)),
    ("WALLET_CLAIM_TTL_SECONDS", 0),
    ("PHONE_CODE_TRIES", "three"),
    ("BUSINESS_HOURS", (20, 8)),
    ("BABEL_DEFAULT_TIMEZONE", "Mars/Olympus_Mons"),
    ("REASON_CODES", ("forgot_password", "made_up_reason")),
    ("LIMIT_OTP_PER_CUSTOMER", "often"),
    ("SECURITY_QUESTIONS_REQUIRED", 99),
    ("PUBLIC_BASE_URL", "receipts.example"),
])
def test_a_bad_policy_setting_refuses_to_start_and_is_named(tmp_path, setting, value):
    with pytest.raises(ConfigError, match=f"CONSOLE_{setting} must be"):
        _app(tmp_path, **{setting: value})


def test_every_bad_setting_is_named_at_once(tmp_path):
    with pytest.raises(ConfigError) as raised:
        _app(tmp_path, STAFF_LOCKOUT_THRESHOLD=0, APPROVAL_EXPIRY_MINUTES=-5)
    assert "CONSOLE_STAFF_LOCKOUT_THRESHOLD" in str(raised.value)
    assert "CONSOLE_APPROVAL_EXPIRY_MINUTES" in str(raised.value)
    assert "Refusing to start" in str(raised.value)


def test_an_environment_override_is_checked_too(tmp_path, monkeypatch):
    monkeypatch.setenv("CONSOLE_BUSINESS_HOURS", "20,8")
    with pytest.raises(ConfigError, match="CONSOLE_BUSINESS_HOURS"):
        _app(tmp_path)


def test_the_policy_is_frozen_built_once_and_rebuilt_when_the_config_changes(tmp_path):
    app = _app(tmp_path)
    with app.app_context():
        rules = policy.current()
        assert rules.wallet_lockout.threshold == app.config["WALLET_LOCKOUT_THRESHOLD"]
        assert rules.reason_codes == tuple(app.config["REASON_CODES"])
        with pytest.raises(dataclasses.FrozenInstanceError):
            rules.wallet_lockout.threshold = 99
        assert policy.current() is rules  # built once: reading it does not read the config again
        client = app.test_client()
        for _ in range(3):
            client.get("/auth/login")
        assert policy.current() is rules  # nothing rewrites the config while requests are served
        # A setting changed after start-up (a test's) is never silently ignored: every way of
        # changing the config makes the next read rebuild the policy.
        app.config["WALLET_LOCKOUT_THRESHOLD"] = 3
        assert policy.current().wallet_lockout.threshold == 3
        app.config.update(WALLET_CLAIM_WAIT_SECONDS=60)
        assert policy.current().wallet_lockout.claim_wait_seconds == 60
        app.config.pop("HOTLINE")
        with pytest.raises(ConfigError):
            policy.current()
        app.config.setdefault("HOTLINE", "95588")
        assert policy.current().bank.hotline == "95588"
        assert policy.rebuild(app) is policy.current()


def test_local_time_is_the_policys_zone(tmp_path):
    app = _app(tmp_path)
    with app.app_context():
        assert timeutil.local_midnight_utc(date(2024, 3, 1)) == datetime(2024, 2, 29, 16, tzinfo=timezone.utc)
        assert timeutil.format_local(datetime(2024, 3, 1, 23, 30, tzinfo=timezone.utc)) == "2024-03-02 07:30"
        assert timeutil.format_local(None) == ""
        assert timeutil.utc_offset().total_seconds() == 8 * 3600
        app.config["BABEL_DEFAULT_TIMEZONE"] = "UTC"
        policy.rebuild(app)
        assert timeutil.format_local(datetime(2024, 3, 1, 23, 30, tzinfo=timezone.utc)) == "2024-03-01 23:30"


# --- the vocabulary ---------------------------------------------------------------------------------


def _recorded_actions():
    """Audit actions written literally in the source: the action argument of audit.record, refusal,
    refuse and record calls, and the "action" of refusal dictionaries."""
    pattern = re.compile(r"^[a-z]+\.[a-z_]+$")
    names = {"record", "refusal", "refuse"}
    found = {}
    for path in CONSOLE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            values = []
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                if name in names:
                    values = [a for a in node.args[:3] if isinstance(a, ast.Constant)]
            elif isinstance(node, ast.Dict):
                values = [v for k, v in zip(node.keys, node.values)
                          if isinstance(k, ast.Constant) and k.value == "action" and isinstance(v, ast.Constant)]
            for value in values:
                if isinstance(value.value, str) and pattern.match(value.value):
                    found.setdefault(value.value, str(path.relative_to(ROOT)))
    return found


def test_every_recorded_audit_action_is_in_the_vocabulary():
    recorded = _recorded_actions()
    assert len(recorded) > 30  # the scan finds them
    listed = set(codes.audit_actions())
    assert {a: p for a, p in recorded.items() if a not in listed} == {}


def test_the_vocabulary_lists_each_code_once():
    for values in (codes.ROLES, codes.OUTCOMES, codes.CHANNELS, codes.REASON_CODES, codes.SECURITY_QUESTIONS,
                   codes.VERIFICATION_STRENGTHS, codes.audit_actions()):
        assert len(set(values)) == len(values)
    assert set(codes.SERVICE_CHANNELS) <= set(codes.CHANNELS)


def test_every_role_has_permissions_and_every_code_has_words():
    from console.web import desk_labels, labels, roles

    assert set(permissions.ROLE_PERMISSIONS) == set(codes.ROLES)
    assert set(roles.ROLE_LABELS) == set(roles.ROLE_SUMMARIES) == set(codes.ROLES)
    assert set(labels.OUTCOME_LABELS) == set(codes.OUTCOMES)
    assert set(labels.CHANNEL_LABELS) == set(codes.CHANNELS)
    assert set(labels.SECURITY_QUESTION_LABELS) == set(codes.SECURITY_QUESTIONS)
    assert set(codes.REASON_CODES) <= set(desk_labels.REASON_LABELS)


def test_services_hold_codes_and_read_the_policy():
    """No UI words (flask_babel) and no configuration reads inside the services: labels live at the
    edge, and the numbers come from the policy."""
    offenders = []
    for path in sorted((CONSOLE / "services").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "flask_babel" in text or "current_app.config" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
