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
}


def security_question(code: str):
    """The question a customer was asked (its code, if it is no longer listed)."""
    return SECURITY_QUESTION_LABELS.get(code, code)


def choices(values, labels) -> list[tuple[str, str]]:
    """(code, words) pairs for a select list, in the codes' order."""
    return [(value, str(labels.get(value, value))) for value in values]
