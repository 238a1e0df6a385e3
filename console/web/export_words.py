"""The reader's words for the codes in the audit report (the PDF export) and the audit browser:
roles, channels, actions, outcomes and reasons, from the labels the pages use (``labels.py``). A
code without a label stays as it is, so nothing is hidden; the CSV and JSON Lines exports keep
the codes (they are data) and word only their headers."""
from __future__ import annotations

from flask_babel import gettext

from . import labels

_BY_KIND = {
    "action": labels.action_label,
    "reason": labels.reason_label,
    "outcome": labels.outcome_label,
    "channel": labels.channel_label,
    "role": labels.role_label,
    "actor_type": lambda code: str(labels.ACTOR_KIND_LABELS.get(code, code)),
}


def words(kind: str, code: str | None) -> str | None:
    """``audit_export.pdf_volume``'s ``words``: (kind, code) -> what the reader reads."""
    if not code:
        return code
    return _BY_KIND[kind](code) or code


def translate(msgid: str) -> str:
    """The export headers' msgids (``audit_export.COLUMN_LABELS``) in the reader's language."""
    return gettext(msgid)
