"""Audit exports: CSV and JSON Lines streamed row by row, PDF in volumes; each export audited
with its filter, row count and SHA-256."""
from __future__ import annotations

import csv
import hashlib
import io
import json

from sqlalchemy.orm import Session

from .. import policy
from ..pdf.report import build_report_pdf
from ..timeutil import format_local, utcnow
from . import audit, audit_query
from .actor import Actor

COLUMNS = ("seq", "occurred_at", "actor_type", "actor_id", "actor_employee_no", "actor_role", "actor_branch",
           "source_ip", "session_id", "channel", "action", "outcome", "reason_code", "customer_ref", "case_ref",
           "verification_id", "approval_id", "receipt_no", "before_state", "after_state", "details",
           "chain_version", "prev_hash", "hash")


# OWASP CSV injection: a cell a spreadsheet would read as a formula is prefixed with a single quote.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _value(event, column):
    value = getattr(event, column)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if column == "occurred_at" else value


def csv_cell(value):
    """A value as a CSV cell that no spreadsheet evaluates (text only: numbers are never formulas)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def lines(session: Session, actor: Actor, filters: audit_query.Filters, fmt: str, result: dict):
    """Yield the export line by line; ``result`` gets rows and sha256 when the stream ends."""
    digest, rows = hashlib.sha256(), 0
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)  # every field quoted (OWASP)
        writer.writerow(COLUMNS)
        head = buf.getvalue()
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


def pdf_volume(session: Session, actor: Actor, filters: audit_query.Filters, volume: int) -> tuple[bytes, int, bool]:
    """Volume ``volume`` (1-based) of the PDF report; says whether a further volume exists."""
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
                   event.actor_employee_no or event.actor_type, event.actor_role, event.actor_branch, event.channel,
                   event.action, event.outcome, event.reason_code, event.customer_ref, event.case_ref)

    filter_text = ", ".join(f"{k}={v}" for k, v in filters.as_dict().items()) or "全部 all"
    pdf = build_report_pdf(generate(), title="审计日志报告 Audit trail report", filter_text=filter_text,
                           generated_at=format_local(utcnow(), "%Y-%m-%d %H:%M:%S"),
                           volume=f"第 {volume} 册 Volume {volume}", font_path=review.pdf_font_path)
    return pdf, len(rows), bool(more)
