"""Words people read for the domain's codes (``console.codes``), translated at the edge.

Services hold codes only; pages and forms look their words up here (roles and permissions:
``roles.py``; the service desk's operations, reasons and refusals: ``desk_labels.py``).
"""
from flask_babel import lazy_gettext as _l

from .. import codes

SECURITY_QUESTION_LABELS = {
    "mother_birthplace": _l("Where was your mother born?"),
    "first_school": _l("What was the name of your primary school?"),
    "childhood_friend": _l("What is the name of your childhood best friend?"),
    "first_pet": _l("What was the name of your first pet?"),
    "favourite_teacher": _l("What is the surname of your favourite teacher?"),
    "first_city": _l("In which city did you first work?"),
}

OUTCOME_LABELS = {
    codes.SUCCESS: _l("success"),
    codes.DENIED: _l("denied"),
    codes.FAILED: _l("failed"),
}

CHANNEL_LABELS = {
    "console": _l("Console pages"),
    codes.COUNTER: _l("Counter"),
    codes.PHONE: _l("Phone"),
    "wallet": _l("Wallet"),
    "system": _l("System"),
    "risk": _l("Risk monitor"),
    "cli": _l("Command line"),
    "api": _l("Staff API"),
    codes.SELF_SERVICE: _l("Self-service (wallet app)"),
}


def security_question(code: str):
    """The question a customer was asked (its code, if it is no longer listed)."""
    return SECURITY_QUESTION_LABELS.get(code, code)


def choices(values, labels) -> list[tuple[str, str]]:
    """(code, words) pairs for a select list, in the codes' order."""
    return [(value, str(labels.get(value, value))) for value in values]


# --- the audit trail's codes, for every page that shows an event (issue #12 part 4) ---------------
# A code without words here reaches the page as it is, and tests/test_labels.py fails on it.

ACTION_LABELS = {
    "access.denied": _l("Access refused"),
    "rate_limited": _l("Too many requests"),
    "staff.signin": _l("Staff sign-in"),
    "staff.locked": _l("Staff account locked"),
    "staff.password_change": _l("Staff password changed"),
    "staff.totp_enrol": _l("Authenticator enrolled"),
    "staff.signout": _l("Staff signed out"),
    "staff.session_end": _l("Staff session ended"),
    "staff.create": _l("Staff account created"),
    "staff.update": _l("Staff account changed"),
    "staff.unlock": _l("Staff account unlocked"),
    "staff.password_reset": _l("Staff password reset"),
    "staff.totp_reset": _l("Staff authenticator reset"),
    "staff.passkey_enrol": _l("Security key enrolled"),
    "staff.passkey_rename": _l("Security key renamed"),
    "staff.passkey_revoke": _l("Security key revoked"),
    "staff.passkey_assert": _l("Security key presented"),
    "staff.directory_adopt": _l("Staff account moved to the bank's directory"),
    "staff.directory_sync": _l("Bank's directory synchronised"),
    "branch.create": _l("Branch created"),
    "branch.update": _l("Branch changed"),
    "customer.create": _l("Customer created"),
    "customer.search": _l("Customer searched"),
    "customer.view": _l("Customer viewed"),
    "customer.reveal": _l("Masked field revealed"),
    "customer.flagged_counter_only": _l("Customer limited to the counter"),
    "case.open": _l("Case opened"),
    "case.view": _l("Case viewed"),
    "case.note": _l("Note added"),
    "case.close": _l("Case closed"),
    "verification.counter": _l("ID document checked at the counter"),
    "verification.phone": _l("Phone verification"),
    "verification.code_sent": _l("Verification code sent by SMS"),
    "verification.adopt": _l("Earlier verification used in this case"),
    "approval.request": _l("Approval requested"),
    "approval.list": _l("Approval queue viewed"),
    "approval.view": _l("Approval request viewed"),
    "approval.decide": _l("Approval decided"),
    "approval.approve": _l("Request approved"),
    "approval.reject": _l("Request rejected"),
    "approval.execute": _l("Approved operation carried out"),
    "approval.expire": _l("Request expired"),
    "approval.counter_authorise": _l("Supervisor authorisation at the counter"),
    "alert.view": _l("Risk alert viewed"),
    "alert.acknowledge": _l("Risk alert acknowledged"),
    "receipt.issue": _l("Receipt issued"),
    "receipt.view": _l("Receipt viewed"),
    "receipt.print": _l("Receipt printed"),
    "receipt.reprint": _l("Receipt copy printed"),
    "wallet.open": _l("Wallet opened"),
    "wallet.password_change": _l("Wallet password changed by the customer"),
    "wallet.password_reset": _l("Temporary wallet password issued"),
    "wallet.security_questions_set": _l("Security questions set"),
    "wallet.locked": _l("Wallet locked after wrong passwords"),
    "wallet.lock_lapsed": _l("Wallet lock lapsed"),
    "wallet.attempt_abandoned": _l("Interrupted sign-in cleared"),
    "wallet.frozen": _l("Wallet frozen by the risk monitor"),
    "audit.search": _l("Audit trail searched"),
    "audit.view": _l("Audit event viewed"),
    "audit.export": _l("Audit trail exported"),
    "audit.verify": _l("Audit chain verified"),
    "audit.checkpoint": _l("Audit checkpoint signed"),
    "audit.bundle": _l("Audit bundle exported for an outside auditor"),
    "recovery.start": _l("Self-service recovery started"),
    "recovery.code": _l("Self-service recovery: SMS code entered"),
    "recovery.code_withheld": _l("Self-service recovery: SMS code withheld"),
    "recovery.factor": _l("Self-service recovery: second factor checked"),
    "recovery.complete": _l("Self-service recovery completed"),
    "recovery.sent_to_counter": _l("Self-service recovery sent to the counter"),
    "recovery.expired": _l("Self-service recovery not finished in time"),
    "recovery.superseded": _l("Self-service recovery given up for a new one"),
}

# The areas of the audit actions (the part before the dot), for the audit search's "every ... action".
ACTION_AREA_LABELS = {
    "access.": _l("Access refusals"),
    "staff.": _l("Staff sign-in and accounts"),
    "branch.": _l("Branches"),
    "customer.": _l("Customers"),
    "case.": _l("Cases"),
    "verification.": _l("Identity verifications"),
    "approval.": _l("Approvals"),
    "alert.": _l("Risk alerts"),
    "receipt.": _l("Receipts"),
    "wallet.": _l("Wallets"),
    "audit.": _l("Audit trail"),
    "recovery.": _l("Self-service recovery"),
}

# Why an audited action was refused or failed (``audit_event.reason_code``), beside the reasons staff
# choose for an operation (``desk_labels.REASON_LABELS``) and a recovery's (``RECOVERY_REASON_LABELS``).
AUDIT_REASON_LABELS = {
    codes.INPUT_ERROR: _l("staff input error, not counted against the customer"),
    "not_permitted": _l("not allowed for the role"),
    "not_found_or_other_branch": _l("not found, or another branch's"),
    "not_found_or_out_of_scope": _l("not found, or outside the reader's scope"),
    "malformed_reference": _l("malformed reference in the address"),
    "rate_limit": _l("too many requests"),
    "own_account": _l("own account"),
    "verification_missing_or_expired": _l("no valid verification"),
    "verification_too_weak": _l("verification not strong enough"),
    "not_applicable": _l("does not apply to the wallet's state"),
    "case_not_open_or_not_yours": _l("case closed, or a colleague's"),
    "case_closed": _l("case closed"),
    "wrong_case": _l("verification of another channel"),
    "customer_flagged_counter_only": _l("customer limited to the counter"),
    "no_security_questions": _l("no security questions"),
    "verification_not_pending": _l("no phone verification in progress"),
    "already_pending": _l("a request is already waiting"),
    "approval_pending": _l("a request is already waiting"),
    "self_approval": _l("own request"),
    "own_screen": _l("the account signed in on that screen"),
    "other_branch": _l("staff of another branch"),
    "key_required": _l("the role must use a security key"),
    "no_passkey": _l("no security key enrolled"),
    "already_decided": _l("already decided"),
    "expired": _l("expired"),
    "no_longer_applicable": _l("no longer applies to the wallet"),
    "not_case_owner": _l("not the case's owner"),
    "not_your_case": _l("a colleague's case"),
    "not_your_receipt": _l("a colleague's receipt"),
    "already_verified": _l("already verified"),
    "verification_not_adoptable": _l("verification not usable in this case"),
    "customer_sms_cap": _l("too many codes sent to the customer"),
    "alert_resolved": _l("alert already resolved"),
    # Verifications that failed (``codes.CUSTOMER_FAILURES`` and the rest).
    "document_mismatch": _l("document does not match the record"),
    "document_expired": _l("document expired"),
    "registry_mismatch": _l("registry has another name"),
    "registry_not_found": _l("number unknown to the registry"),
    "registry_revoked": _l("document invalid in the registry"),
    "registry_unavailable": _l("registry unreachable"),
    "photo_not_attested": _l("photo not confirmed"),
    "code_expired": _l("SMS code expired"),
    "code_wrong": _l("wrong SMS code"),
    "code_wrong_no_tries_left": _l("wrong SMS code, no tries left"),
    "security_answers_wrong": _l("wrong security answers"),
    # Staff sign-in and sessions.
    "bad_credentials": _l("wrong employee number or password"),
    "unknown_employee": _l("unknown employee number"),
    "account_locked": _l("account locked"),
    "account_disabled": _l("account disabled"),
    "branch_inactive": _l("branch deactivated"),
    "too_many_failures": _l("too many failed attempts"),
    "wrong_code": _l("wrong authenticator code"),
    "policy": _l("password rules not met"),
    "signout": _l("signed out"),
    "idle_timeout": _l("idle timeout"),
    "absolute_timeout": _l("session time limit reached"),
    "revoked": _l("ended by an administrator"),
    "password_reset": _l("password reset by an administrator"),
    "totp_reset": _l("authenticator reset by an administrator"),
    "pending_expired": _l("sign-in took too long"),
    "pending_address_changed": _l("sign-in continued from another address"),
    "pending_revoked": _l("sign-in cancelled"),
    # The bank's directory (console/services/directory.py).
    "directory": _l("changed in the bank's directory"),
    "directory_unavailable": _l("bank's directory unavailable"),
    "directory_bad_credentials": _l("password refused by the bank's directory"),
    "directory_entry_missing": _l("not found in the bank's directory"),
    "directory_disabled": _l("disabled in the bank's directory"),
    "directory_no_group": _l("in no mapped group of the bank's directory"),
    "directory_branch_unknown": _l("branch in the bank's directory not known here"),
    "directory_moved": _l("entry moved in the bank's directory"),
    "directory_role_or_branch": _l("role or branch changed in the bank's directory"),
    "directory_provisioned": _l("created at first sign-in from the bank's directory"),
    "directory_account": _l("password kept by the bank's directory"),
    # Security keys (console/services/passkeys.py).
    "keys_revoked": _l("security keys revoked by an administrator"),
    "passkey_unknown": _l("security key not enrolled"),
    "passkey_revoked": _l("security key revoked"),
    "passkey_other_staff": _l("another staff member's security key"),
    "challenge_invalid": _l("security key answer expired, used or meant for another step"),
    "assertion_invalid": _l("security key answer not valid"),
    "sign_count_regression": _l("security key counter went back (possible copy of the key)"),
    "registration_invalid": _l("security key registration not valid"),
    "already_enrolled": _l("security key already enrolled"),
    "too_many_keys": _l("too many security keys"),
    "last_required_key": _l("the last security key of a role that must use one"),
    # The lockout engine and the risk monitor.
    "failure_burst": _l("burst of failed sign-ins from several addresses"),
    "claim_expired": _l("sign-in interrupted"),
    "recovery_expired": _l("not finished in time"),
    "recovery_burst": _l("self-service recoveries from several addresses or devices"),
    "no_such_wallet": _l("no wallet has this number or mobile"),
    "self_service_recovery": _l("reset by the customer in the wallet app"),
    "repeated_failures": _l("repeated failed verifications"),
}

CASE_STATUS_LABELS = {
    "open": _l("Open"),
    "closed": _l("Closed"),
}

BRANCH_KIND_LABELS = {
    "branch": _l("Branch"),
    "call_centre": _l("Call centre"),
    "head_office": _l("Head office"),
}


def _words(labels: dict, code: str | None) -> str:
    return str(labels[code]) if code in labels else (code or "")


def action_label(action: str | None) -> str:
    """Words for an audit action; a wallet operation's is its registry label."""
    if action in ACTION_LABELS:
        return str(ACTION_LABELS[action])
    if action and action.startswith("wallet."):
        from ..services.operations import registry

        op = registry.by_action(action)
        if op is not None:
            return str(_l(op.label))
    if action in ACTION_AREA_LABELS:
        return str(ACTION_AREA_LABELS[action])
    return action or ""


def reason_label(code: str | None) -> str:
    """Words for an event's reason code: a refusal's or failure's, or the reason staff chose."""
    if not code:
        return ""
    if code in AUDIT_REASON_LABELS:
        return str(AUDIT_REASON_LABELS[code])
    from .desk_labels import REASON_LABELS  # desk_labels imports this module

    for labels in (REASON_LABELS, RECOVERY_REASON_LABELS):
        if code in labels:
            return str(labels[code])
    return code


def outcome_label(code: str | None) -> str:
    return _words(OUTCOME_LABELS, code)


def channel_label(code: str | None) -> str:
    return _words(CHANNEL_LABELS, code)


def role_label(code: str | None) -> str:
    from .roles import ROLE_LABELS

    return _words(ROLE_LABELS, code)


def actor_label(event) -> str:
    """Who acted in an audit event: the employee number, or what kind of actor it was."""
    if event.actor_employee_no:
        return event.actor_employee_no
    return _words(ACTOR_KIND_LABELS, event.actor_type)


def case_status_label(code: str | None) -> str:
    return _words(CASE_STATUS_LABELS, code)


def action_choices() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """The audit search's action list: per area, "every action of the area" (its prefix) and each action."""
    groups = []
    for prefix, area in ACTION_AREA_LABELS.items():
        actions = [a for a in (*codes.audit_actions(), "rate_limited") if a.startswith(prefix)]
        if not actions:
            continue
        options = [(prefix, str(_l("All: %(area)s", area=area)))] if len(actions) > 1 else []
        options += sorted(((a, action_label(a)) for a in actions), key=lambda pair: pair[0])
        groups.append((prefix, str(area), options))
    return groups


def role_choices() -> list[tuple[str, object]]:
    """(code, lazy words) for a role select list, e.g. Flask-Admin's ``form_choices`` (built before a request)."""
    from .roles import ROLE_LABELS

    return [(role, ROLE_LABELS[role]) for role in codes.ROLES]


def branch_kind_choices() -> list[tuple[str, object]]:
    """(code, lazy words) for a branch kind select list."""
    return list(BRANCH_KIND_LABELS.items())


# Jinja filters, registered by the blueprints that show events (desk, audit).
TEMPLATE_FILTERS = {
    "action_label": action_label, "reason_label": reason_label, "outcome_label": outcome_label,
    "channel_label": channel_label, "role_label": role_label, "actor_label": actor_label,
    "case_status_label": case_status_label,
}

# Self-service recovery (the wallet app's 忘记密码): where a recovery ended, and why.
RECOVERY_STATUS_LABELS = {
    "code_sent": _l("code sent, not yet entered"),
    "code_verified": _l("code right, second factor pending"),
    "verified": _l("verified, new password not yet set"),
    "completed": _l("password reset by the customer"),
    "failed": _l("failed"),
    "sent_to_counter": _l("sent to the counter"),
    "expired": _l("not finished in time"),
    "superseded": _l("given up for a new recovery"),
}
RECOVERY_REASON_LABELS = {
    "code_expired": _l("the SMS code expired"),
    "code_wrong_no_tries_left": _l("wrong SMS code, every try used"),
    "security_answers_wrong": _l("wrong security answers"),
    "authenticator_code_wrong": _l("wrong authenticator code"),
    "locked_until_staff_unlock": _l("locked until staff unlock it"),
    "risk_freeze": _l("frozen by the risk monitor"),
    "protective_hold": _l("protective hold"),
    "counter_only": _l("too many failed verifications: counter only"),
    "no_second_factor": _l("no security questions or authenticator to recover with"),
    "several_wallets": _l("several wallets on this mobile: the wallet number is needed"),
    "details_mismatch": _l("the ID number did not match this wallet"),
    "wallet_closed": _l("the wallet is closed"),
    "superseded": _l("a new recovery was started"),
}
RECOVERY_IDENTIFIED_BY_LABELS = {"wallet_no": _l("wallet number"), "mobile": _l("mobile")}

# Who acted (``audit_event.actor_type``), as a table cell reads it where no employee number says it
# (in a sentence: ``desk_labels.ACTOR_KIND_LABELS``).
ACTOR_KIND_LABELS = {
    "staff": _l("Staff member"),
    "operator": _l("Operator (command line)"),
    "system": _l("System"),
    "anonymous": _l("Not signed in"),
    "service": _l("Wallet back end"),
    "customer": _l("Customer (self-service)"),
}
