"""Words for roles and permissions, shown on pages."""
from flask_babel import lazy_gettext as _l

from .. import permissions as P
from ..codes import Role

ROLE_LABELS = {
    Role.teller.value: _l("Teller"),
    Role.agent.value: _l("Call-centre agent"),
    Role.supervisor.value: _l("Supervisor"),
    Role.auditor.value: _l("Auditor"),
    Role.admin.value: _l("System administrator"),
}

ROLE_SUMMARIES = {
    Role.teller.value: _l("Serve walk-in customers at the counter: check their ID document, then unlock the wallet or reset what they forgot."),
    Role.agent.value: _l("Help customers on the hotline: verify them with a code sent to the registered mobile plus security answers, then unlock or reset."),
    Role.supervisor.value: _l("Approve sensitive operations of your branch, release holds and risk freezes, and serve customers yourself."),
    Role.auditor.value: _l("Review every staff action in the tamper-evident audit trail, verify the chain and export it."),
    Role.admin.value: _l("Manage staff accounts and branches. Administrators never touch customer wallets."),
}

PERMISSION_LABELS = {
    P.CUSTOMER_VIEW: _l("Search for and view customers (personal data masked)"),
    P.VERIFY_COUNTER: _l("Verify a customer in person with an ID document"),
    P.VERIFY_PHONE: _l("Verify a customer by phone (SMS code and security answers)"),
    P.WALLET_UNLOCK: _l("Unlock a wallet locked after wrong passwords"),
    P.CREDENTIALS_RESET: _l("Reset the wallet password or security questions"),
    P.TWOFA_RESET: _l("Reset the two-factor device binding"),
    P.TWOFA_RESET_REQUEST: _l("Request a two-factor reset (needs a supervisor's approval)"),
    P.HOLD_PLACE: _l("Place a protective hold on a wallet"),
    P.HOLD_RELEASE_REQUEST: _l("Request the release of a hold or risk freeze"),
    P.APPROVAL_DECIDE: _l("Approve or reject requests of your branch (never your own)"),
    P.PII_REVEAL: _l("Reveal a masked field, with a reason"),
    P.AUDIT_READ_OWN: _l("Read the audit events of your own work"),
    P.AUDIT_READ_BRANCH: _l("Read the audit trail of your branch"),
    P.AUDIT_READ_ALL: _l("Read the audit trail of every branch"),
    P.AUDIT_EXPORT: _l("Export the audit trail"),
    P.AUDIT_VERIFY: _l("Verify the integrity of the audit chain"),
    P.ADMIN_MANAGE: _l("Manage staff, branches and policy settings"),
}
