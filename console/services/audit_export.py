"""Audit exports: CSV and JSON Lines streamed row by row, PDF in volumes; each export audited
with its filter, row count and SHA-256.

The CSV opens as it should in a spreadsheet: a UTF-8 byte order mark first (Excel reads Chinese
then), headers in the reader's language with the column's code beside them, and the local time
(the policy's zone, Beijing) beside the UTC time the trail stores."""
from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable

from sqlalchemy.orm import Session

from .. import policy
from ..i18n_marker import N_
from ..pdf.report import build_report_pdf
from ..timeutil import format_local, utcnow
from . import audit, audit_query
from .actor import Actor

COLUMNS = ("seq", "occurred_at", "occurred_at_local", "actor_type", "actor_id", "actor_employee_no", "actor_role", "actor_branch",
           "source_ip", "session_id", "channel", "action", "outcome", "reason_code", "customer_ref", "case_ref",
           "verification_id", "approval_id", "receipt_no", "before_state", "after_state", "details",
           "chain_version", "prev_hash", "hash")
LOCAL = "occurred_at_local"  # computed: the stored UTC time in the bank's zone

# Column headers (English msgids; the edge passes its ``gettext``): "<words> [<code>]", the code
# kept so a script finds its column whatever the reader's language.
COLUMN_LABELS = {
    "seq": N_("Sequence number"), "occurred_at": N_("Time (UTC)"), LOCAL: N_("Time (Beijing)"),
    "actor_type": N_("Actor type"), "actor_id": N_("Staff ID"), "actor_employee_no": N_("Employee number"),
    "actor_role": N_("Role"), "actor_branch": N_("Branch"), "source_ip": N_("Source address"),
    "session_id": N_("Session"), "channel": N_("Channel"), "action": N_("Action"), "outcome": N_("Outcome"),
    "reason_code": N_("Reason"), "customer_ref": N_("Customer number"), "case_ref": N_("Case number"),
    "verification_id": N_("Verification"), "approval_id": N_("Approval"), "receipt_no": N_("Receipt number"),
    "before_state": N_("Before"), "after_state": N_("After"), "details": N_("Details"),
    "chain_version": N_("Chain version"), "prev_hash": N_("Previous hash"), "hash": N_("Hash"),
}
BOM = "\ufeff"


def csv_header(translate: Callable[[str], str] = str) -> list[str]:
    return [f"{translate(COLUMN_LABELS[column])} [{column}]" for column in COLUMNS]


# OWASP CSV injection: a cell a spreadsheet would read as a formula is prefixed with a single quote.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _value(event, column):
    if column == LOCAL:
        return format_local(event.occurred_at, "%Y-%m-%d %H:%M:%S")
    value = getattr(event, column)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if column == "occurred_at" else value


def csv_cell(value):
    """A value as a CSV cell that no spreadsheet evaluates (text only: numbers are never formulas)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def lines(session: Session, actor: Actor, filters: audit_query.Filters, fmt: str, result: dict, *,
          translate: Callable[[str], str] = str):
    """Yield the export line by line; ``result`` gets rows and sha256 (of the whole file, the byte
    order mark included) when the stream ends. ``translate`` words the CSV's headers."""
    digest, rows = hashlib.sha256(), 0
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)  # every field quoted (OWASP)
        writer.writerow(csv_header(translate))
        head = BOM + buf.getvalue()
        digest.update(head.encode())
        yield head
    for event in audit_query.stream(session, actor, filters):
        if fmt == "csv":
            buf.seek(0)
            buf.truncate()
            writer.writerow([csv_cell(_value(event, c)) for c in COLUMNS])
            line = buf.getvalue()
        else:
            line = json.dumps({c: _value(event, c) for c in COLUMNS}, ensure_ascii=False, sort_keys=True) + "\n"
        digest.update(line.encode())
        rows += 1
        yield line
    result.update(rows=rows, sha256=digest.hexdigest(), complete=True)


def record_export(session: Session, actor: Actor, filters: audit_query.Filters, fmt: str, result: dict) -> None:
    audit.record(session, actor, "audit.export", outcome="success" if result.get("complete") else "failed",
                 details={"format": fmt, "filter": filters.as_dict(), "rows": result.get("rows", 0),
                          "sha256": result.get("sha256"), "volume": result.get("volume")})


def _as_is(kind: str, code: str | None) -> str | None:
    return code


def pdf_volume(session: Session, actor: Actor, filters: audit_query.Filters, volume: int, *,
               words: Callable[[str, str | None], str | None] = _as_is) -> tuple[bytes, int, bool]:
    """Volume ``volume`` (1-based) of the PDF report; says whether a further volume exists.
    ``words(kind, code)`` gives the reader's words for a role, channel, action, outcome or reason
    (the edge's labels; the codes themselves by default)."""
    review = policy.current().review
    per = review.pdf_rows_per_volume
    skip, rows, more = (volume - 1) * per, [], []

    def generate():
        for index, event in enumerate(audit_query.stream(session, actor, filters)):
            if index < skip:
                continue
            if len(rows) >= per:
                more.append(True)
                return
            rows.append(1)
            yield (event.seq, format_local(event.occurred_at, "%Y-%m-%d %H:%M:%S"),
                   event.actor_employee_no or words("actor_type", event.actor_type), words("role", event.actor_role),
                   event.actor_branch, words("channel", event.channel), words("action", event.action),
                   words("outcome", event.outcome), words("reason", event.reason_code), event.customer_ref,
                   event.case_ref)

    filter_text = ", ".join(f"{k}={v}" for k, v in filters.as_dict().items()) or "全部 all"
    pdf = build_report_pdf(generate(), title="审计日志报告 Audit trail report", filter_text=filter_text,
                           generated_at=format_local(utcnow(), "%Y-%m-%d %H:%M:%S"),
                           volume=f"第 {volume} 册 Volume {volume}", font_path=review.pdf_font_path)
    return pdf, len(rows), bool(more)
