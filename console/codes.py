"""The domain's vocabulary: every code the console stores, records or matches on, listed once.

Codes are plain strings (they are stored in the database and the audit chain, and travel in the
APIs). Services and the audit trail use them as they are; what a person reads for each of them
lives at the edge (``console/web/labels.py``, ``console/web/roles.py``, ``console/web/desk_labels.py``),
translated there. Nothing in this module imports Flask or Babel.

Wallet operations (unlock, reset password, ...) are not listed here: each declares its own code
and audit action (``wallet.<code>``) in its module of ``services/operations``; see
:func:`audit_actions` for the full list.
"""
from __future__ import annotations

import enum


class Role(str, enum.Enum):
    """Staff roles (DESIGN.md section 1); ``staff.role`` holds the value."""

    teller = "teller"
    agent = "agent"
    supervisor = "supervisor"
    auditor = "auditor"
    admin = "admin"


ROLES: tuple[str, ...] = tuple(role.value for role in Role)

# How an audited action ended.
SUCCESS, DENIED, FAILED = "success", "denied", "failed"
OUTCOMES: tuple[str, ...] = (SUCCESS, DENIED, FAILED)

# Where an audited action came from (``audit_event.channel``). A case is served at the counter or by
# phone (SERVICE_CHANNELS); staff pages are "console"; the wallet's own back end is "wallet"; the
# lockout engine's own events are "system", the risk monitor's "risk"; the command line is "cli";
# the staff JSON API is "api"; the customer's own recovery in the wallet app is "self_service".
COUNTER, PHONE, SELF_SERVICE = "counter", "phone", "self_service"
SERVICE_CHANNELS: tuple[str, ...] = (COUNTER, PHONE)
CHANNELS: tuple[str, ...] = ("console", COUNTER, PHONE, "wallet", "system", "risk", "cli", "api", SELF_SERVICE)

# Which entry point a staff actor came through (``Actor.interface``; recorded in an event's details
# when it is not the console).
INTERFACES: tuple[str, ...] = ("console", "api", "cli")

# Who acts (``Actor.kind``, ``audit_event.actor_type``).
# "customer": the customer acting for themselves (self-service recovery), known by the wallet only
# once they have proven it.
ACTOR_KINDS: tuple[str, ...] = ("staff", "operator", "system", "anonymous", "service", "customer")

# How strongly a verification proved who the customer is: an ID document at the counter is
# strong; an SMS code plus security answers by phone is medium.
STRONG, MEDIUM = "strong", "medium"
VERIFICATION_STRENGTHS: tuple[str, ...] = (STRONG, MEDIUM)
VERIFICATION_METHODS: tuple[str, ...] = ("id_document", "sms_code_and_questions")

# What a failed verification says about the customer. Only these count against them (the 24-hour
# failure count that makes a customer counter-only, ``verification.failed_recently``): a well-formed
# document that does not match the record or the citizen-ID registry, and a wrong SMS code or wrong
# answers given by the caller (or a code left to expire). ``registry_unavailable`` is a failed
# check too, but it says nothing about the customer, so it is not counted.
CUSTOMER_FAILURES: tuple[str, ...] = (
    "document_mismatch", "registry_mismatch", "registry_not_found", "registry_revoked",
    "code_expired", "code_wrong_no_tries_left", "security_answers_wrong",
)

# Self-service recovery (the wallet app's 忘记密码, ``services/recovery.py``). Its steps, the states a
# recovery passes through, why a recovery failed (the first three count against the customer with
# the failed verifications above) and why it sent the customer to the counter or the hotline.
RECOVERY_STATES: tuple[str, ...] = ("code_sent", "code_verified", "verified", "completed", "failed",
                                    "sent_to_counter", "expired", "superseded")
RECOVERY_FAILURES: tuple[str, ...] = ("code_expired", "code_wrong_no_tries_left", "security_answers_wrong",
                                      "authenticator_code_wrong")
RECOVERY_COUNTER_REASONS: tuple[str, ...] = (
    "locked_until_staff_unlock", "risk_freeze", "protective_hold", "counter_only", "no_second_factor",
    "several_wallets", "wallet_closed",
)
RECOVERY_FACTORS: tuple[str, ...] = ("security_answers", "authenticator_code")

# The staff member's own slips, found before an attempt counts: never a failed verification, never
# counted against the customer, never on the receipt. Each is refused as invalid input and audited
# on its own (the verification's action, outcome ``denied``, reason :data:`INPUT_ERROR`, the slip's
# code and field in the details).
INPUT_ERROR = "input_error"
VERIFICATION_SLIPS: tuple[str, ...] = (
    "id_format", "id_birth_date", "id_checksum", "passport_format", "photo_not_attested", "document_type_mismatch",
    "document_expired", "code_format", "answer_missing",
)

# The reasons staff choose from for a wallet operation (``REASON_CODES`` in the configuration may
# narrow them; it may not add any: each needs its label).
REASON_CODES: tuple[str, ...] = (
    "forgot_password", "locked_after_wrong_passwords", "forgot_security_answers", "new_phone", "lost_phone",
    "suspected_fraud", "customer_request", "risk_reviewed",
)

# The security questions a customer may choose; the question a person reads is a label at the edge.
SECURITY_QUESTIONS: tuple[str, ...] = (
    "mother_birthplace", "first_school", "childhood_friend", "first_pet", "favourite_teacher", "first_city",
)

# Audit actions (``audit_event.action``), by area. The wallet operations' own actions come from
# their registry (see :func:`audit_actions`).
AUDIT_ACTIONS: tuple[str, ...] = (
    # Refusals decided at the edge (a URL naming something out of scope, a missing permission).
    "access.denied",
    # Staff sign-in and sessions.
    "staff.signin", "staff.locked", "staff.password_change", "staff.totp_enrol", "staff.signout",
    "staff.session_end",
    # Security keys (passkeys): enrolled, renamed, revoked by their owner or an admin, presented.
    "staff.passkey_enrol", "staff.passkey_rename", "staff.passkey_revoke", "staff.passkey_assert",
    # The bank's directory: a local account moved to it, a sync's run.
    "staff.directory_adopt", "staff.directory_sync",
    # Administration.
    "staff.create", "staff.update", "staff.unlock", "staff.password_reset", "staff.totp_reset",
    "branch.create", "branch.update",
    # Customers and the service desk.
    "customer.create", "customer.search", "customer.view", "customer.reveal", "customer.flagged_counter_only",
    "case.open", "case.view", "case.note", "case.close",
    "verification.counter", "verification.phone", "verification.code_sent", "verification.adopt",
    "approval.request", "approval.list", "approval.view", "approval.decide", "approval.approve",
    "approval.reject", "approval.execute", "approval.expire", "approval.counter_authorise",
    "alert.view", "alert.acknowledge",
    "receipt.issue", "receipt.view", "receipt.print", "receipt.reprint",
    # Wallets: opening, the customer's own changes, the lockout engine and the risk monitor.
    "wallet.open", "wallet.password_change", "wallet.password_reset", "wallet.security_questions_set",
    "wallet.locked", "wallet.lock_lapsed", "wallet.attempt_abandoned", "wallet.frozen",
    # Self-service recovery in the wallet app (console/services/recovery.py), step by step.
    "recovery.start", "recovery.code", "recovery.code_withheld", "recovery.factor", "recovery.complete",
    "recovery.sent_to_counter", "recovery.expired", "recovery.superseded",
    # The audit trail itself.
    "audit.search", "audit.view", "audit.export", "audit.verify", "audit.checkpoint", "audit.bundle",
)


def audit_actions() -> tuple[str, ...]:
    """Every audit action: :data:`AUDIT_ACTIONS` and the registered wallet operations' actions."""
    from .services.operations import registry  # imported here: this module imports nothing of the app

    extra = tuple(op.action for op in registry.all_operations() if op.action not in AUDIT_ACTIONS)
    return AUDIT_ACTIONS + extra
