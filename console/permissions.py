"""Who may do what: the role matrix of DESIGN.md section 1, as data.

Views and services ask ``can(actor, "permission")``; nothing compares role names inline.
"""
from __future__ import annotations

from .codes import Role

# Permission names, grouped as in DESIGN.md section 1.
CUSTOMER_VIEW = "customer.view"
VERIFY_COUNTER = "verify.counter"
VERIFY_PHONE = "verify.phone"
WALLET_UNLOCK = "wallet.unlock"
CREDENTIALS_RESET = "credentials.reset"
TWOFA_RESET = "twofa.reset"               # executes directly (in person, or supervisor)
TWOFA_RESET_REQUEST = "twofa.reset.request"  # must be approved by a supervisor
HOLD_PLACE = "hold.place"
HOLD_RELEASE_REQUEST = "hold.release.request"
APPROVAL_DECIDE = "approval.decide"
PII_REVEAL = "pii.reveal"
AUDIT_READ_OWN = "audit.read.own"
AUDIT_READ_BRANCH = "audit.read.branch"
AUDIT_READ_ALL = "audit.read.all"
AUDIT_EXPORT = "audit.export"
AUDIT_VERIFY = "audit.verify"
ADMIN_MANAGE = "admin.manage"

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.teller.value: frozenset({
        CUSTOMER_VIEW, VERIFY_COUNTER, WALLET_UNLOCK, CREDENTIALS_RESET, TWOFA_RESET,
        HOLD_PLACE, HOLD_RELEASE_REQUEST, AUDIT_READ_OWN, AUDIT_EXPORT,
    }),
    Role.agent.value: frozenset({
        CUSTOMER_VIEW, VERIFY_PHONE, WALLET_UNLOCK, CREDENTIALS_RESET, TWOFA_RESET_REQUEST,
        HOLD_PLACE, HOLD_RELEASE_REQUEST, AUDIT_READ_OWN, AUDIT_EXPORT,
    }),
    Role.supervisor.value: frozenset({
        CUSTOMER_VIEW, VERIFY_COUNTER, VERIFY_PHONE, WALLET_UNLOCK, CREDENTIALS_RESET,
        TWOFA_RESET, TWOFA_RESET_REQUEST, HOLD_PLACE, HOLD_RELEASE_REQUEST, APPROVAL_DECIDE,
        PII_REVEAL, AUDIT_READ_OWN, AUDIT_READ_BRANCH, AUDIT_EXPORT,
    }),
    Role.auditor.value: frozenset({
        AUDIT_READ_OWN, AUDIT_READ_BRANCH, AUDIT_READ_ALL, AUDIT_EXPORT, AUDIT_VERIFY,
    }),
    Role.admin.value: frozenset({AUDIT_VERIFY, ADMIN_MANAGE}),
}

ALL_PERMISSIONS = frozenset().union(*ROLE_PERMISSIONS.values())


def permissions_for(role: str | None) -> frozenset[str]:
    return ROLE_PERMISSIONS.get(role or "", frozenset())


def can(actor, permission: str) -> bool:
    """True when ``actor`` (a Staff, an Actor, or anything with ``role``) holds ``permission``."""
    if permission not in ALL_PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")
    if actor is None or not getattr(actor, "is_authenticated", True):
        return False
    if getattr(actor, "active", True) is False:
        return False
    return permission in permissions_for(getattr(actor, "role", None))
