"""The bank's rules as one frozen object: built once from the configuration when the application
starts, checked there, and read by the services through :func:`current`.

A setting that makes no sense (a threshold of 0, business hours 20 to 8, an unknown time zone, a
reason code nobody can label) refuses to start, naming the ``CONSOLE_*`` variable to fix, as
``config.py`` does for secrets. Secrets and deployment settings (database, gateways, rate limits,
cookies) stay in the configuration; the keys are read by ``console.crypto``.

Tests that change ``app.config`` after ``create_app`` call :func:`rebuild` so the services see it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import flask
from flask import current_app

from config import ConfigError

from . import codes

EXTENSION = "console.policy"


@dataclass(frozen=True)
class Bank:
    name: str
    name_zh: str  # on receipts and in SMS texts
    hotline: str  # the customer service hotline printed on receipts and in SMS texts
    public_base_url: str  # where customers reach the receipt check page (the QR code's address), no trailing /


@dataclass(frozen=True)
class StaffSignin:
    """Staff sign-in (PCI DSS 8.2.8, 8.3.4, 8.3.6)."""

    password_min_length: int
    lockout_threshold: int  # failures that lock the account
    lockout_minutes: int
    idle_timeout_minutes: int
    absolute_timeout_hours: int
    pending_signin_seconds: int  # between the password and the second factor
    totp_issuer: str
    key_required_roles: tuple[str, ...]  # these roles sign in with a security key, never TOTP alone
    relying_party: RelyingParty  # the security keys' (WebAuthn) relying party


@dataclass(frozen=True)
class RelyingParty:
    """Where security keys are valid (WebAuthn): a domain name and the exact origins of the pages."""

    rp_id: str
    name: str
    origins: tuple[str, ...]


@dataclass(frozen=True)
class WalletLockout:
    """The wallet sign-in lockout engine (PCI DSS 8.3.4)."""

    threshold: int  # wrong passwords that lock the wallet
    lock_durations_minutes: tuple[int, ...]  # the nth lock in the window lasts the nth; past them: until unlock
    lock_window_hours: int
    claim_wait_seconds: float  # how long an attempt waits for in-flight ones before "busy"
    claim_ttl_seconds: float  # an unsettled claim older than this was abandoned


@dataclass(frozen=True)
class RiskFreeze:
    """This many failures from this many addresses within the window freeze the wallet."""

    min_failures: int
    min_sources: int
    window_minutes: int
    recovery_sources: int  # self-service recoveries of one wallet from this many addresses or devices ...
    recovery_window_minutes: int  # ... within this many minutes freeze it


@dataclass(frozen=True)
class WalletPasswords:
    """Customer passwords (NIST SP 800-63B) and security questions."""

    min_length: int
    history: int  # earlier passwords that may not be reused
    expiry_days: int  # 0: passwords do not expire
    temporary_length: int
    temporary_hours: int
    security_questions_required: int


@dataclass(frozen=True)
class Verification:
    """Proving who the customer is (DESIGN.md section 3)."""

    valid_minutes: int  # a passed verification lasts this long
    code_valid_minutes: int  # an SMS code
    code_tries: int  # per verification; a new code does not reset them
    failures_to_flag: int  # failed verifications within flag_hours: phone help refused
    flag_hours: int
    codes_per_customer: str  # SMS codes to one customer's mobile, e.g. "5 per 10 minutes"


@dataclass(frozen=True)
class Recovery:
    """Self-service recovery (DESIGN.md section 3); its code lasts and may be tried as a phone
    verification's (``Verification.code_valid_minutes``, ``code_tries``)."""

    lifetime_minutes: int  # start to new password
    token_minutes: int  # the single-use token that sets the new password
    history_days: int  # what the console shows
    start_min_ms: int  # a start is answered no sooner than this, matched or not
    limit_per_address: str
    limit_per_wallet: str
    limit_per_step: str


@dataclass(frozen=True)
class Approvals:
    expiry_minutes: int  # a request not decided within this time expires


@dataclass(frozen=True)
class Sms:
    max_attempts: int  # deliveries tried before a message is given up
    retry_base_seconds: int  # the first back-off; it doubles after each failure


@dataclass(frozen=True)
class Idempotency:
    key_hours: int  # how long a retried request gets its first answer
    wallet_key_minutes: int  # the same for the wallet API, whose bodies carry passwords
    lease_seconds: int  # a key held but not answered is lost after this
    form_wait_seconds: float  # a second submit of a desk form waits this long for the first one's answer


@dataclass(frozen=True)
class Review:
    """The auditor's dashboard and reports."""

    business_hours: tuple[int, int]  # local hours [start, end)
    heavy_resets: int  # unlocks or resets by one staff member that count as unusually many
    repeated_resets: int  # resets of one customer that count as repeated
    repeated_recoveries: int  # self-service recoveries of one customer that count as many
    recovery_followup_days: int  # a 2FA or question change this soon after a recovery is an exception
    pdf_rows_per_volume: int
    pdf_font_path: str | None  # None: the first CJK TrueType font installed


@dataclass(frozen=True)
class AuditChain:
    """How the audit chain is appended, checkpointed and exported (docs/audit-chain.md)."""

    chain_mode: str  # "commit": a request chains its own events before it returns; "background": a thread does
    sequencer_interval_seconds: float  # background mode: the most an event waits to be chained, unloaded
    checkpoint_every: int  # sign the head after this many new events (0: not by count)
    checkpoint_seconds: int  # ... or this long after the last checkpoint, if anything new (0: not by time)
    witness_dir: str | None  # every checkpoint is also written here, outside the database
    bundle_max_events: int  # the largest range one bundle may hold


@dataclass(frozen=True)
class Policy:
    bank: Bank
    time_zone: str  # IANA name; times are stored in UTC and shown in this zone
    staff_signin: StaffSignin
    wallet_lockout: WalletLockout
    risk: RiskFreeze
    wallet_passwords: WalletPasswords
    wallet_tiers: Mapping[int, Mapping[str, int | None]]  # tier -> limits in yuan (None: no limit)
    verification: Verification
    recovery: Recovery
    approvals: Approvals
    reason_codes: tuple[str, ...]  # the reasons staff may choose (a subset of codes.REASON_CODES)
    sms: Sms
    idempotency: Idempotency
    review: Review
    audit: AuditChain
    # The bank's directory's connection settings (DIRECTORY_* without the prefix), checked at start-up
    # by config.check_directory; console/services/directory.py reads them here. Never shown.
    directory: Mapping[str, object] = field(repr=False, default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)  # ZoneInfo keeps one instance per name


# --- building and checking --------------------------------------------------------------------


class _Reader:
    """Reads settings from the configuration, noting every unusable one (all are reported at once)."""

    def __init__(self, config: Mapping):
        self.config = config
        self.problems: list[str] = []

    def _bad(self, key: str, expected: str) -> None:
        self.problems.append(f"CONSOLE_{key} must be {expected} (got {self.config.get(key)!r})")

    def whole(self, key: str, minimum: int = 1, maximum: int | None = None) -> int:
        value = self.config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
                maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            self._bad(key, f"a whole number {bound}")
            return minimum
        return value

    def seconds(self, key: str, *, allow_zero: bool = False) -> float:
        value = self.config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                value == 0 and not allow_zero):
            self._bad(key, "a number of seconds of at least 0" if allow_zero else "a number of seconds above 0")
            return 1
        return value

    def text(self, key: str, *, optional: bool = False) -> str | None:
        value = self.config.get(key)
        if optional and (value is None or value == ""):
            return None
        if not isinstance(value, str) or not value.strip():
            self._bad(key, "a non-empty text")
            return ""
        return value

    def one_of(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.config.get(key)
        if value not in allowed:
            self._bad(key, "one of " + ", ".join(allowed))
            return allowed[0]
        return value

    def durations(self, key: str) -> tuple[int, ...]:
        value = self.config.get(key)
        if not isinstance(value, (tuple, list)) or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            self._bad(key, "a comma-separated list of whole minutes, each at least 1")
            return ()
        return tuple(value)

    def hours_of_day(self, key: str) -> tuple[int, int]:
        value = self.config.get(key)
        ok = (isinstance(value, (tuple, list)) and len(value) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
              and 0 <= value[0] < value[1] <= 24)
        if not ok:
            self._bad(key, "two hours of the day, start before end, e.g. 8,20")
            return (0, 24)
        return (value[0], value[1])

    def time_zone(self, key: str) -> str:
        value = self.config.get(key)
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, TypeError, ValueError):
            self._bad(key, "an IANA time zone name such as Asia/Shanghai")
            return "UTC"
        return value

    def limit(self, key: str) -> str:
        from limits import parse

        value = self.config.get(key)
        try:
            parse(value)
        except (ValueError, TypeError):
            self._bad(key, 'a rate such as "5 per 10 minutes"')
            return "1 per second"
        return value

    def url(self, key: str) -> str:
        """An http(s) address with a host and no query or fragment, without its trailing slash."""
        from urllib.parse import urlsplit

        value = self.config.get(key)
        try:
            parts = urlsplit(value) if isinstance(value, str) else None
            host = parts.hostname if parts else None
        except ValueError:  # e.g. an unclosed [IPv6 literal
            parts = host = None
        if (parts is None or not host or parts.scheme not in ("http", "https") or parts.query
                or parts.fragment):
            self._bad(key, "an http:// or https:// address such as https://console.bank.example")
            return ""
        return value.rstrip("/")

    def roles(self, key: str) -> tuple[str, ...]:
        value = self.config.get(key)
        if not isinstance(value, (tuple, list)) or any(v not in codes.ROLES for v in value):
            self._bad(key, "a comma-separated list of roles among " + ", ".join(codes.ROLES) + " (or empty)")
            return ()
        return tuple(dict.fromkeys(value))

    def relying_party(self) -> RelyingParty:
        """WEBAUTHN_RP_ID and WEBAUTHN_ORIGINS (by default both from PUBLIC_BASE_URL): a domain name,
        never an IP address (browsers refuse one), and origins on it or its subdomains, https except
        on localhost (and https only in production)."""
        from ipaddress import ip_address
        from urllib.parse import urlsplit

        base = self.config.get("PUBLIC_BASE_URL")
        rp_id = self.config.get("WEBAUTHN_RP_ID") or (urlsplit(base).hostname if isinstance(base, str) else None)
        origins = self.config.get("WEBAUTHN_ORIGINS") or (
            ("{0.scheme}://{0.netloc}".format(urlsplit(base)),) if isinstance(base, str) else ())
        production = self.config.get("ENV_NAME") == "production"
        try:
            ip_address((rp_id or "").strip("[]"))
            is_ip = True
        except ValueError:
            is_ip = False
        labels = (rp_id or "").split(".")
        if (not isinstance(rp_id, str) or is_ip or rp_id != rp_id.lower() or len(rp_id) > 253
                or not all(label and len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
                           and not label.startswith("-") and not label.endswith("-") for label in labels)):
            self._bad("WEBAUTHN_RP_ID", "the console's domain name in lower case, such as console.bank.example "
                      "(an IP address is not allowed: browsers refuse security keys there; for a local demo "
                      "use localhost)")
            return RelyingParty(rp_id="localhost", name="", origins=())
        checked = []
        for origin in origins if isinstance(origins, (tuple, list)) else (origins,):
            try:
                parts = urlsplit(origin) if isinstance(origin, str) else None
                host = parts.hostname if parts else None
                parts.port  # noqa: B018  (raises on a port that is not a number)
            except (ValueError, AttributeError):
                parts = host = None
            on_rp = host is not None and (host == rp_id or host.endswith("." + rp_id))
            secure = parts is not None and (parts.scheme == "https" or (
                parts.scheme == "http" and host == "localhost" and not production))
            if not (on_rp and secure) or parts.path not in ("", "/") or parts.query or parts.fragment:
                self._bad("WEBAUTHN_ORIGINS", f"a comma-separated list of origins such as https://{rp_id}, "
                          f"on {rp_id} or its subdomains, https (http only for localhost outside production)")
                return RelyingParty(rp_id=rp_id, name="", origins=())
            checked.append(f"{parts.scheme}://{parts.netloc}")
        if not checked:
            self._bad("WEBAUTHN_ORIGINS", f"at least one origin such as https://{rp_id}")
        return RelyingParty(rp_id=rp_id, name=self.text("WEBAUTHN_RP_NAME") or "", origins=tuple(checked))

    def reason_codes(self, key: str) -> tuple[str, ...]:
        value = self.config.get(key)
        if (not isinstance(value, (tuple, list)) or not value or len(set(value)) != len(value)
                or any(v not in codes.REASON_CODES for v in value)):
            self._bad(key, "a comma-separated list of distinct reason codes among " + ", ".join(codes.REASON_CODES))
            return codes.REASON_CODES
        return tuple(value)

    def tiers(self, key: str) -> Mapping[int, Mapping[str, int | None]]:
        value = self.config.get(key)
        ok = isinstance(value, Mapping) and value and all(
            isinstance(tier, int) and isinstance(limits, Mapping) for tier, limits in value.items())
        if not ok:
            self._bad(key, "a mapping of tier numbers to their limits")
            return MappingProxyType({})
        return MappingProxyType({tier: MappingProxyType(dict(limits)) for tier, limits in value.items()})


def build(config: Mapping) -> Policy:
    """The policy of ``config`` (an ``app.config``); ConfigError names every unusable setting."""
    r = _Reader(config)
    policy = Policy(
        bank=Bank(name=r.text("BANK_NAME"), name_zh=r.text("BANK_NAME_ZH"), hotline=r.text("HOTLINE"),
                  public_base_url=r.url("PUBLIC_BASE_URL")),
        time_zone=r.time_zone("BABEL_DEFAULT_TIMEZONE"),
        staff_signin=StaffSignin(
            password_min_length=r.whole("STAFF_PASSWORD_MIN_LENGTH"),
            lockout_threshold=r.whole("STAFF_LOCKOUT_THRESHOLD"),
            lockout_minutes=r.whole("STAFF_LOCKOUT_MINUTES"),
            idle_timeout_minutes=r.whole("STAFF_IDLE_TIMEOUT_MINUTES"),
            absolute_timeout_hours=r.whole("STAFF_ABSOLUTE_TIMEOUT_HOURS"),
            pending_signin_seconds=r.whole("STAFF_PENDING_SIGNIN_SECONDS"),
            totp_issuer=r.text("TOTP_ISSUER"),
            key_required_roles=r.roles("STAFF_KEY_REQUIRED_ROLES"),
            relying_party=r.relying_party()),
        wallet_lockout=WalletLockout(
            threshold=r.whole("WALLET_LOCKOUT_THRESHOLD"),
            lock_durations_minutes=r.durations("WALLET_LOCK_DURATIONS_MINUTES"),
            lock_window_hours=r.whole("WALLET_LOCK_WINDOW_HOURS"),
            claim_wait_seconds=r.seconds("WALLET_CLAIM_WAIT_SECONDS", allow_zero=True),
            claim_ttl_seconds=r.seconds("WALLET_CLAIM_TTL_SECONDS")),
        risk=RiskFreeze(
            min_failures=r.whole("RISK_FREEZE_MIN_FAILURES"),
            min_sources=r.whole("RISK_FREEZE_MIN_SOURCES"),
            window_minutes=r.whole("RISK_FREEZE_WINDOW_MINUTES"),
            recovery_sources=r.whole("RISK_RECOVERY_SOURCES", minimum=2),
            recovery_window_minutes=r.whole("RISK_RECOVERY_WINDOW_MINUTES")),
        wallet_passwords=WalletPasswords(
            min_length=r.whole("WALLET_PASSWORD_MIN_LENGTH"),
            history=r.whole("WALLET_PASSWORD_HISTORY"),
            expiry_days=r.whole("WALLET_PASSWORD_EXPIRY_DAYS", minimum=0),
            temporary_length=r.whole("TEMP_PASSWORD_LENGTH", minimum=8),
            temporary_hours=r.whole("TEMP_PASSWORD_HOURS"),
            security_questions_required=r.whole("SECURITY_QUESTIONS_REQUIRED",
                                                maximum=len(codes.SECURITY_QUESTIONS))),
        wallet_tiers=r.tiers("WALLET_TIER_LIMITS"),
        verification=Verification(
            valid_minutes=r.whole("VERIFICATION_VALID_MINUTES"),
            code_valid_minutes=r.whole("PHONE_CODE_VALID_MINUTES"),
            code_tries=r.whole("PHONE_CODE_TRIES"),
            failures_to_flag=r.whole("VERIFICATION_FAILURES_TO_FLAG"),
            flag_hours=r.whole("VERIFICATION_FLAG_HOURS"),
            codes_per_customer=r.limit("LIMIT_OTP_PER_CUSTOMER")),
        recovery=Recovery(
            lifetime_minutes=r.whole("RECOVERY_LIFETIME_MINUTES"),
            token_minutes=r.whole("RECOVERY_TOKEN_MINUTES"),
            history_days=r.whole("RECOVERY_HISTORY_DAYS"),
            start_min_ms=r.whole("RECOVERY_START_MIN_MS", minimum=0),
            limit_per_address=r.limit("LIMIT_RECOVERY_ADDRESS"),
            limit_per_wallet=r.limit("LIMIT_RECOVERY_WALLET"),
            limit_per_step=r.limit("LIMIT_RECOVERY_STEP")),
        approvals=Approvals(expiry_minutes=r.whole("APPROVAL_EXPIRY_MINUTES")),
        reason_codes=r.reason_codes("REASON_CODES"),
        sms=Sms(max_attempts=r.whole("SMS_MAX_ATTEMPTS"), retry_base_seconds=r.whole("SMS_RETRY_BASE_SECONDS")),
        idempotency=Idempotency(
            key_hours=r.whole("IDEMPOTENCY_KEY_HOURS"),
            wallet_key_minutes=r.whole("IDEMPOTENCY_WALLET_KEY_MINUTES"),
            lease_seconds=r.whole("IDEMPOTENCY_LEASE_SECONDS"),
            form_wait_seconds=r.seconds("IDEMPOTENCY_FORM_WAIT_SECONDS", allow_zero=True)),
        review=Review(
            business_hours=r.hours_of_day("BUSINESS_HOURS"),
            heavy_resets=r.whole("DASHBOARD_HEAVY_RESETS"),
            repeated_resets=r.whole("DASHBOARD_REPEATED_RESETS"),
            repeated_recoveries=r.whole("DASHBOARD_REPEATED_RECOVERIES"),
            recovery_followup_days=r.whole("DASHBOARD_RECOVERY_FOLLOWUP_DAYS"),
            pdf_rows_per_volume=r.whole("PDF_REPORT_ROWS_PER_VOLUME"),
            pdf_font_path=r.text("PDF_FONT_PATH", optional=True)),
        audit=AuditChain(
            chain_mode=r.one_of("AUDIT_CHAIN_MODE", ("commit", "background")),
            sequencer_interval_seconds=r.seconds("AUDIT_SEQUENCER_INTERVAL"),
            checkpoint_every=r.whole("AUDIT_CHECKPOINT_EVERY", minimum=0),
            checkpoint_seconds=r.whole("AUDIT_CHECKPOINT_SECONDS", minimum=0),
            witness_dir=r.text("AUDIT_WITNESS_DIR", optional=True),
            bundle_max_events=r.whole("AUDIT_BUNDLE_MAX_EVENTS")),
        directory=MappingProxyType({key.removeprefix("DIRECTORY_"): value for key, value in config.items()
                                    if key.startswith("DIRECTORY_")}),
    )
    if r.problems:
        raise ConfigError("The policy settings are not usable; " + "; ".join(r.problems) + ". Refusing to start.")
    return policy


def init_app(app) -> Policy:
    """Build the application's policy (refusing to start on a bad setting) and let templates read it."""
    built = rebuild(app)

    @app.context_processor
    def _policy():
        return {"policy": current()}

    return built


class Config(flask.Config):
    """Flask's configuration, counting its changes (``ConsoleFlask.config_class``): a policy built
    from an older state of it is rebuilt on the next read, so a setting changed after start-up (a
    test's) is never silently ignored. In production the configuration is not changed after
    ``create_app``, and reading the policy costs one comparison."""

    changes = 0

    def _changed(self) -> None:
        self.changes += 1

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key):
        super().__delitem__(key)
        self._changed()

    def update(self, *args, **kwargs):
        super().update(*args, **kwargs)
        self._changed()

    def setdefault(self, key, default=None):
        value = super().setdefault(key, default)
        self._changed()
        return value

    def pop(self, *args):
        value = super().pop(*args)
        self._changed()
        return value


def rebuild(app) -> Policy:
    """Build the policy again from ``app.config`` (also done by :func:`current` when it changed)."""
    built = build(app.config)
    app.extensions[EXTENSION] = (built, getattr(app.config, "changes", 0))
    return built


def current() -> Policy:
    """The running application's policy (rebuilt first if its configuration changed since)."""
    built, seen = current_app.extensions[EXTENSION]
    if getattr(current_app.config, "changes", seen) != seen:
        return rebuild(current_app._get_current_object())
    return built
