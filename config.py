"""Configuration classes.

Every setting can be overridden from the environment with a ``CONSOLE_`` prefix
(``CONSOLE_DATABASE_URL``, ``CONSOLE_SECRET_KEY``, ...). The production
configuration refuses to start when a secret is missing: it never invents one.
"""
from __future__ import annotations

import base64
import json
import math
import os
import secrets
from collections import Counter
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = Path(os.environ.get("CONSOLE_INSTANCE_PATH", BASE_DIR / "instance"))

# Secrets the application cannot run without (production refuses to start).
REQUIRED_SECRETS = ("SECRET_KEY", "DATA_ENCRYPTION_KEY", "BLIND_INDEX_KEY", "AUDIT_SIGNING_KEY",
                    "WALLET_SERVICE_KEY")
# Settings that are or may hold secrets: each can also be read from a file named by
# CONSOLE_<NAME>_FILE (Docker/Kubernetes secrets, systemd credentials), never both.
FILE_SETTINGS = REQUIRED_SECRETS + ("DATABASE_URL", "RATELIMIT_STORAGE_URI", "SMS_HTTP_TOKEN",
                                    "REGISTRY_HTTP_TOKEN", "DIRECTORY_BIND_PASSWORD")
SECRET_KEY_MIN_LENGTH = 32
SECRET_KEY_MIN_BITS = 128


class ConfigError(RuntimeError):
    """Raised when the configuration is unusable; the message says what to set."""


class BaseConfig:
    ENV_NAME = "base"
    SECRET_KEY: str | None = None
    DATABASE_URL: str | None = None
    # A pooled connection handed back less than this long ago is used again without a ping
    # (console/dbpool.py; HikariCP's aliveBypassWindowMs); 0: a ping on every checkout.
    DATABASE_PING_AFTER_IDLE_SECONDS = 0.5
    # 32-byte keys, base64 (urlsafe or standard) encoded.
    DATA_ENCRYPTION_KEY: str | None = None
    BLIND_INDEX_KEY: str | None = None
    AUDIT_SIGNING_KEY: str | None = None
    # The key the wallet's own back end presents to the wallet API (Authorization: Bearer ...).
    WALLET_SERVICE_KEY: str | None = None

    BANK_NAME = "Branch Console Demo Bank"
    BANK_NAME_ZH = "演示银行"
    HOTLINE = "95588"

    # Wallet sign-in lockout (PCI DSS 8.3.4): the nth lock within the window lasts the nth
    # duration; past the list the wallet stays locked until staff unlock it.
    WALLET_LOCKOUT_THRESHOLD = 5
    WALLET_LOCK_DURATIONS_MINUTES = (30, 60)
    WALLET_LOCK_WINDOW_HOURS = 24
    # How long an attempt waits for in-flight attempts when every slot is claimed.
    WALLET_CLAIM_WAIT_SECONDS = 3
    # A claimed password check that is not settled (or renewed by its owner) within this time is
    # taken as abandoned (its worker died or lost its connection) and reclaimed by the next attempt.
    # Well past the longest check (argon2id takes ~0.1 s of CPU).
    WALLET_CLAIM_TTL_SECONDS = 5
    # Risk monitor: this many failures from this many source addresses within the window freeze.
    RISK_FREEZE_MIN_FAILURES = 20
    RISK_FREEZE_MIN_SOURCES = 5
    RISK_FREEZE_WINDOW_MINUTES = 10
    # ... and self-service recoveries of one wallet from this many addresses or devices within the window.
    RISK_RECOVERY_SOURCES = 3
    RISK_RECOVERY_WINDOW_MINUTES = 60

    # Customer passwords (NIST SP 800-63B).
    WALLET_PASSWORD_MIN_LENGTH = 8
    WALLET_PASSWORD_HISTORY = 4
    WALLET_PASSWORD_EXPIRY_DAYS = 365  # 0: passwords do not expire
    TEMP_PASSWORD_LENGTH = 12
    TEMP_PASSWORD_HOURS = 24
    SECURITY_QUESTIONS_REQUIRED = 2

    # Wallet tiers (e-CNY style); amounts in yuan.
    WALLET_TIER_LIMITS = {
        1: {"balance": None, "per_payment": None, "daily": None},
        2: {"balance": 500000, "per_payment": 50000, "daily": 100000},
        3: {"balance": 20000, "per_payment": 5000, "daily": 10000},
        4: {"balance": 10000, "per_payment": 2000, "daily": 5000},
    }

    # Service desk (DESIGN.md section 3).
    VERIFICATION_VALID_MINUTES = 15
    PHONE_CODE_VALID_MINUTES = 5
    PHONE_CODE_TRIES = 3
    VERIFICATION_FAILURES_TO_FLAG = 3
    VERIFICATION_FLAG_HOURS = 24
    APPROVAL_EXPIRY_MINUTES = 30
    # Self-service recovery in the wallet app (DESIGN.md section 3): a recovery must be finished
    # within its lifetime; its SMS code lasts PHONE_CODE_VALID_MINUTES with PHONE_CODE_TRIES tries,
    # and the token that lets the customer set the new password is single use and short-lived.
    RECOVERY_LIFETIME_MINUTES = 15
    RECOVERY_TOKEN_MINUTES = 5
    # Every recovery start is answered no sooner than this after it arrived, whatever matched: what
    # a start that matched does more (queueing its SMS) is hidden below it (bench/recovery_enumeration.py).
    RECOVERY_START_MIN_MS = 80
    RECOVERY_HISTORY_DAYS = 30  # what the console shows of a customer's self-service attempts
    # Reason codes staff choose from for every operation.
    REASON_CODES = ("forgot_password", "locked_after_wrong_passwords", "forgot_security_answers",
                    "new_phone", "lost_phone", "suspected_fraud", "customer_request", "risk_reviewed")
    # Where customers reach the receipt check page: the address printed in every receipt's QR
    # code. Production requires it (an https:// address customers can reach, checked at start-up);
    # development prints the address it runs at (LOCAL_RUN_ADDRESS).
    PUBLIC_BASE_URL: str | None = None
    PDF_FONT_PATH: str | None = None  # default: the first CJK TrueType font installed
    PDF_REPORT_ROWS_PER_VOLUME = 20000
    # Review dashboard: business hours (Beijing time) and what counts as unusual.
    BUSINESS_HOURS = (8, 20)
    DASHBOARD_HEAVY_RESETS = 20
    DASHBOARD_REPEATED_RESETS = 3
    # Self-service: this many recoveries of one customer's wallet in the period; a recovery
    # followed within this many days by a 2FA or security-question change.
    DASHBOARD_REPEATED_RECOVERIES = 3
    DASHBOARD_RECOVERY_FOLLOWUP_DAYS = 7

    # Citizen-ID registry (联网核查): "local" (a table seeded with demo data) or "http".
    REGISTRY_ADAPTER = "local"
    REGISTRY_HTTP_URL: str | None = None
    REGISTRY_HTTP_TOKEN: str | None = None
    REGISTRY_HTTP_TIMEOUT_SECONDS = 5

    # Retries (DESIGN.md section 7): an Idempotency-Key (APIs) or one-time form token (desk) keeps
    # its first answer this long. A request holding a key it has not answered loses it after the
    # lease (longer than any request lives: gunicorn's worker timeout is 30 s). A second submit
    # of a desk form waits up to this long for the first one's answer.
    IDEMPOTENCY_KEY_HOURS = 24
    # The wallet API's bodies carry customers' passwords and answers: their fingerprints (keyed
    # hashes) are kept only as long as the wallet back end's retries can take.
    IDEMPOTENCY_WALLET_KEY_MINUTES = 15
    IDEMPOTENCY_LEASE_SECONDS = 60
    IDEMPOTENCY_FORM_WAIT_SECONDS = 10
    # The Retry-After of a 503 (the database is unavailable).
    UNAVAILABLE_RETRY_AFTER_SECONDS = 5

    # Rate limits (Flask-Limiter): Redis in production so all nodes share the counters.
    RATELIMIT_ENABLED = True
    RATELIMIT_STORAGE_URI = "memory://"
    RATELIMIT_STRATEGY = "fixed-window"
    LIMIT_STAFF_SIGNIN = "20 per minute"
    LIMIT_WALLET_SIGNIN = "60 per minute"
    LIMIT_OTP_SEND = "5 per 10 minutes"
    LIMIT_OTP_PER_CUSTOMER = "5 per 10 minutes"  # SMS codes to one customer, all staff and channels
    LIMIT_SEARCH = "60 per minute"
    LIMIT_RECOVERY_ADDRESS = "10 per hour"  # recovery starts from one customer address
    LIMIT_RECOVERY_WALLET = "5 per hour"  # recovery starts naming one wallet number or mobile
    LIMIT_RECOVERY_STEP = "30 per 10 minutes"  # code, second-factor and password steps from one address
    # Requests come through this many trusted reverse proxies (0: use the socket address).
    TRUSTED_PROXY_HOPS = 0
    LOG_JSON = True
    LOG_LEVEL = "INFO"

    # SMS gateway: "log" (a local outbox file, the default) or "http".
    SMS_GATEWAY = "log"
    SMS_LOG_PATH: str | None = None  # default: instance/sms-outbox.log
    SMS_HTTP_URL: str | None = None
    SMS_HTTP_TOKEN: str | None = None
    SMS_HTTP_TIMEOUT_SECONDS = 5
    SMS_HTTP_RETRIES = 3
    SMS_MAX_ATTEMPTS = 6
    SMS_RETRY_BASE_SECONDS = 30

    # Staff sign-in policy (PCI DSS 8.2.8, 8.3.4, 8.3.6).
    STAFF_PASSWORD_MIN_LENGTH = 12
    STAFF_LOCKOUT_THRESHOLD = 5
    STAFF_LOCKOUT_MINUTES = 30
    STAFF_IDLE_TIMEOUT_MINUTES = 15
    STAFF_ABSOLUTE_TIMEOUT_HOURS = 12
    STAFF_PENDING_SIGNIN_SECONDS = 300
    TOTP_ISSUER = "Branch Console"
    # Roles that must sign in with a security key (passkey), never with TOTP alone, e.g.
    # "supervisor,admin" (docs/passkeys.md). Empty: a key is optional for everyone.
    STAFF_KEY_REQUIRED_ROLES: tuple = ()
    # WebAuthn relying party (docs/passkeys.md): the console's domain name (never an IP address:
    # browsers refuse one) and the exact origins its pages are served from. Unset, both come from
    # PUBLIC_BASE_URL; checked at start-up.
    WEBAUTHN_RP_ID: str | None = None
    WEBAUTHN_RP_NAME = "Branch Console"
    WEBAUTHN_ORIGINS: tuple = ()

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

    # The audit chain (docs/audit-chain.md). "commit": a request chains its own events right after
    # its COMMIT and returns once they are in the trail; "background": writers don't wait, a
    # sequencer thread in every process chains every AUDIT_SEQUENCER_INTERVAL seconds (one at a
    # time across nodes), so appends scale with writers. Both keep an event in its change's
    # transaction.
    AUDIT_CHAIN_MODE = "commit"
    AUDIT_SEQUENCER_INTERVAL = 0.2
    # Signed checkpoints of the chain head, taken automatically after this many new events or
    # this many seconds (0 switches a rule off), and written to AUDIT_WITNESS_DIR (an absolute
    # path outside the database's reach: another disk, a WORM mount) as well as the database.
    AUDIT_CHECKPOINT_EVERY = 10_000
    AUDIT_CHECKPOINT_SECONDS = 3600
    AUDIT_WITNESS_DIR: str | None = None
    # The largest range of events one bundle (flask audit bundle, the workbench download) holds.
    AUDIT_BUNDLE_MAX_EVENTS = 1_000_000

    # Streaming the audit chain to the bank's SIEM (docs/siem.md, console/services/siem.py).
    SIEM_SYSLOG_URL: str | None = None        # tcp://host:port or tls://host:port; unset: no export
    SIEM_CA_FILE: str | None = None           # PEM CA bundle for tls:// (default: system CAs)
    SIEM_CLIENT_CERT_FILE: str | None = None  # mutual TLS: client certificate and key (PEM files)
    SIEM_CLIENT_KEY_FILE: str | None = None
    SIEM_BATCH = 200
    SIEM_REPLAY_BYTES = 8 * 1024 * 1024       # resent after a lost connection (> receiver's TCP buffer)
    SIEM_APP_NAME = "branch-console"
    SIEM_HOSTNAME: str | None = None          # default: this machine's name
    SIEM_ENTERPRISE_ID = "32473"              # the bank's IANA PEN in the SD-IDs (32473 = documentation)
    SIEM_FACILITY = 13                        # log audit
    SIEM_TIMEOUT_SECONDS = 10
    SIEM_INTERVAL_SECONDS = 1.0
    SIEM_BACKOFF_MAX_SECONDS = 30.0

    # The bank's directory (docs/directory.md, console/services/directory.py). Empty URL: off, every
    # account is local. ldaps://host[:port] or ldap://host[:port] (with DIRECTORY_STARTTLS on).
    DIRECTORY_URL = ""
    DIRECTORY_STARTTLS = True                 # ldap:// only; plain LDAP needs DIRECTORY_ALLOW_PLAIN
    DIRECTORY_ALLOW_PLAIN = False             # plain LDAP: loopback test set-ups only
    DIRECTORY_CA_FILE: str | None = None      # PEM CA bundle (default: system CAs)
    DIRECTORY_BIND_DN = ""                    # the console's search account
    DIRECTORY_BIND_PASSWORD = ""
    DIRECTORY_USER_BASE = ""
    DIRECTORY_USER_FILTER = "(objectClass=inetOrgPerson)"
    DIRECTORY_EMPLOYEE_ATTRIBUTE = "employeeNumber"
    DIRECTORY_NAME_ATTRIBUTE = "displayName"
    DIRECTORY_BRANCH_ATTRIBUTE = "departmentNumber"  # holds the branch code
    # Entries matching this filter (within the user filter) are disabled in the directory.
    DIRECTORY_DISABLED_FILTER = "(employeeType=disabled)"
    # Group DN -> role, as JSON in CONSOLE_DIRECTORY_GROUP_ROLES; groups are groupOfNames (member).
    # A member of several mapped groups gets the first one's role (the mapping's order).
    DIRECTORY_GROUP_ROLES: dict = {}
    DIRECTORY_GROUP_MEMBER_ATTRIBUTE = "member"
    DIRECTORY_TIMEOUT_SECONDS = 5
    DIRECTORY_SYNC_SECONDS = 300              # run `flask staff directory-sync` this often

    @classmethod
    def load(cls) -> dict:
        """Return this class's settings with ``CONSOLE_*`` environment overrides applied."""
        values = {k: getattr(cls, k) for k in dir(cls) if k.isupper()}
        for key, default in list(values.items()):
            raw = os.environ.get(f"CONSOLE_{key}")
            if raw is None:
                continue
            try:
                values[key] = _coerce(raw, default)
            except ValueError:
                raise ConfigError(f"CONSOLE_{key}={raw!r} is not usable; it takes a value like "
                                  f"{_example(default)!r}.") from None
        for key in FILE_SETTINGS:
            from_file = _read_secret_file(key)
            if from_file is not None:
                values[key] = from_file
        values["SQLALCHEMY_DATABASE_URI"] = values.get("DATABASE_URL")
        return values


def _read_secret_file(key: str) -> str | None:
    """The value of CONSOLE_<key>_FILE's file, one trailing newline stripped (None: not set)."""
    path = os.environ.get(f"CONSOLE_{key}_FILE")
    if not path:
        return None
    if os.environ.get(f"CONSOLE_{key}") is not None:
        raise ConfigError(f"Both CONSOLE_{key} and CONSOLE_{key}_FILE are set; set only one.")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            value = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"CONSOLE_{key}_FILE: cannot read {path!r} ({reason}).") from None
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    return value


def _example(default) -> str:
    """A setting's default as it would be written in the environment."""
    if isinstance(default, (tuple, list)):
        return ",".join(str(part) for part in default)
    if isinstance(default, timedelta):
        return str(int(default.total_seconds()))
    return str(default)


def _coerce(raw: str, default):
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, timedelta):
        return timedelta(seconds=int(raw))
    if isinstance(default, (tuple, list)):
        parts = tuple(p.strip() for p in raw.split(",") if p.strip())
        if default and all(isinstance(d, int) for d in default):
            return tuple(int(p) for p in parts)
        return parts
    return raw


def _development_secrets() -> dict:
    """Keys for the embedded development database, kept in instance/ (never committed).

    They are generated once, on purpose, for a local demo; the production config
    never reaches this function.
    """
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    path = INSTANCE_DIR / "dev-secrets.json"
    values = json.loads(path.read_text()) if path.exists() else {}
    missing = [k for k in REQUIRED_SECRETS if not values.get(k)]
    if not missing:
        return values
    for key in missing:
        values[key] = (secrets.token_urlsafe(48) if key == "SECRET_KEY"
                       else base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return values


# Where `make run` (and a plain `flask run`) serves the development console.
LOCAL_RUN_ADDRESS = (f"http://{os.environ.get('FLASK_RUN_HOST', '127.0.0.1')}"
                     f":{os.environ.get('FLASK_RUN_PORT', '5000')}")


class DevelopmentConfig(BaseConfig):
    ENV_NAME = "development"
    DATABASE_URL = f"sqlite:///{INSTANCE_DIR / 'console.db'}"
    PUBLIC_BASE_URL = LOCAL_RUN_ADDRESS
    # Security keys need a domain name: the demo is opened at http://localhost:5000, not 127.0.0.1.
    WEBAUTHN_RP_ID = "localhost"
    WEBAUTHN_ORIGINS = (f"http://localhost:{os.environ.get('FLASK_RUN_PORT', '5000')}",)

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
    # Automatic checkpoints off in tests (a test that moves the clock would get extra events);
    # the tests of checkpoints switch them on.
    AUDIT_CHECKPOINT_EVERY = 0
    AUDIT_CHECKPOINT_SECONDS = 0
    WALLET_SERVICE_KEY = base64.urlsafe_b64encode(b"w" * 32).decode()
    DATABASE_URL = "sqlite://"
    PUBLIC_BASE_URL = "https://wallet.bank.test"
    WEBAUTHN_RP_ID = "localhost"
    WEBAUTHN_ORIGINS = ("http://localhost",)
    RATELIMIT_ENABLED = False  # tests that exercise limits switch them on
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
        missing = [f"CONSOLE_{k}" for k in ("DATABASE_URL",) + REQUIRED_SECRETS + ("PUBLIC_BASE_URL",)
                   if not values.get(k)]
        if missing:
            raise ConfigError(
                "Production configuration is incomplete; set " + ", ".join(missing)
                + " in the environment (or each as a file named by <NAME>_FILE). Refusing to start."
            )
        _check_secret_key(values["SECRET_KEY"])
        _check_public_base_url(values["PUBLIC_BASE_URL"])
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
    check_directory(values)
    check_ping_window(values.get("DATABASE_PING_AFTER_IDLE_SECONDS"))
    return values


def check_ping_window(value) -> None:
    """A connection idle longer than a minute is always pinged: the window is for one that was in
    use a moment ago (console/dbpool.py)."""
    if type(value) not in (int, float) or not 0 <= value <= 60:
        raise ConfigError("CONSOLE_DATABASE_PING_AFTER_IDLE_SECONDS must be a number of seconds from 0 to 60.")


DIRECTORY_ROLES = ("teller", "supervisor", "auditor", "admin", "agent")


def check_directory(values: dict) -> None:
    """Refuse to start on a directory setting that cannot work (docs/directory.md); normalises
    DIRECTORY_GROUP_ROLES from its JSON form. Nothing to check when DIRECTORY_URL is empty."""
    roles = values.get("DIRECTORY_GROUP_ROLES") or {}
    if isinstance(roles, str):
        try:
            roles = json.loads(roles)
        except ValueError:
            raise ConfigError("CONSOLE_DIRECTORY_GROUP_ROLES must be a JSON object: "
                              '{"cn=tellers,ou=groups,dc=bank,dc=cn": "teller", ...}.') from None
    values["DIRECTORY_GROUP_ROLES"] = roles
    url = (values.get("DIRECTORY_URL") or "").strip()
    if not url:
        return
    scheme, _, rest = url.partition("://")
    if scheme not in ("ldap", "ldaps") or not rest.strip("/"):
        raise ConfigError(f"CONSOLE_DIRECTORY_URL {url!r}: use ldaps://host[:port] or ldap://host[:port].")
    if scheme == "ldap" and not values.get("DIRECTORY_STARTTLS") and not values.get("DIRECTORY_ALLOW_PLAIN"):
        raise ConfigError("CONSOLE_DIRECTORY_URL is plain ldap:// without StartTLS: passwords would cross "
                          "the network in clear. Use ldaps://, CONSOLE_DIRECTORY_STARTTLS=1, or (loopback "
                          "tests only) CONSOLE_DIRECTORY_ALLOW_PLAIN=1.")
    for key in ("DIRECTORY_BIND_DN", "DIRECTORY_BIND_PASSWORD", "DIRECTORY_USER_BASE",
                "DIRECTORY_EMPLOYEE_ATTRIBUTE", "DIRECTORY_BRANCH_ATTRIBUTE"):
        if not str(values.get(key) or "").strip():
            raise ConfigError(f"CONSOLE_{key} must be set when CONSOLE_DIRECTORY_URL is.")
    for key in ("DIRECTORY_USER_FILTER", "DIRECTORY_DISABLED_FILTER"):
        text = str(values.get(key) or "")
        if not (text.startswith("(") and text.endswith(")") and text.count("(") == text.count(")")):
            raise ConfigError(f"CONSOLE_{key} {text!r} is not an LDAP filter (it must be parenthesised).")
    if not isinstance(roles, dict) or not roles:
        raise ConfigError("CONSOLE_DIRECTORY_GROUP_ROLES must map at least one group DN to a role.")
    for group, role in roles.items():
        if role not in DIRECTORY_ROLES:
            raise ConfigError(f"CONSOLE_DIRECTORY_GROUP_ROLES: {group!r} maps to {role!r}, not a role "
                              f"({', '.join(DIRECTORY_ROLES)}).")
    ca_file = values.get("DIRECTORY_CA_FILE")
    if ca_file and not os.path.isfile(ca_file):
        raise ConfigError(f"CONSOLE_DIRECTORY_CA_FILE {ca_file!r} is not a readable file.")
    for key in ("DIRECTORY_TIMEOUT_SECONDS", "DIRECTORY_SYNC_SECONDS"):
        if not isinstance(values.get(key), (int, float)) or values[key] <= 0:
            raise ConfigError(f"CONSOLE_{key} must be a positive number of seconds.")


def _check_key(name: str, value: str) -> None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"CONSOLE_{name} must be 32 random bytes, base64 encoded.")


def _check_secret_key(value: str) -> None:
    """The session signing key must be long and random: whoever knows it can forge cookies."""
    counts = Counter(value)
    bits = -sum(n * math.log2(n / len(value)) for n in counts.values()) if value else 0.0
    if len(value.encode()) < SECRET_KEY_MIN_LENGTH or bits < SECRET_KEY_MIN_BITS:
        raise ConfigError(
            f"CONSOLE_SECRET_KEY must be at least {SECRET_KEY_MIN_LENGTH} random bytes; the value given is "
            "too short or not random enough. Generate one with "
            "python -c \"import secrets;print(secrets.token_urlsafe(48))\".")


def _check_public_base_url(value: str) -> None:
    """Customers scan it from a printed receipt: it must be the bank's public https address, never
    this machine's."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        host = (parts.hostname or "").lower()
    except ValueError:
        parts, host = urlsplit(""), ""
    if (parts.scheme != "https" or not host or parts.query or parts.fragment
            or host in ("localhost", "0.0.0.0", "::1") or host.startswith("127.")):
        raise ConfigError(
            "CONSOLE_PUBLIC_BASE_URL must be the https:// address where customers reach this console "
            f"(the receipt QR code's address), e.g. https://console.bank.example; got {value!r}.")
