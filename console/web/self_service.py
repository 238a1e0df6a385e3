"""What staff see of a customer's self-service recoveries (the customer and case pages)."""
from __future__ import annotations

from flask import Flask

from .. import policy
from ..extensions import db
from ..services import recovery
from .labels import RECOVERY_IDENTIFIED_BY_LABELS, RECOVERY_REASON_LABELS, RECOVERY_STATUS_LABELS


def history(customer_id: int) -> dict:
    """The customer's recoveries of the policy's last days, worded for the page, newest first."""
    rows = []
    for row in recovery.recent(db.session, customer_id):
        rows.append({
            "started_at": row.started_at,
            "identified_by": RECOVERY_IDENTIFIED_BY_LABELS.get(row.identified_by, row.identified_by),
            "status": row.status,
            "status_label": RECOVERY_STATUS_LABELS.get(row.status, row.status),
            "reason_label": RECOVERY_REASON_LABELS.get(row.reason) if row.reason else None,
            "to_counter": row.status == "sent_to_counter" or (row.matched and row.status == "failed"),
            "source_ip": row.source_ip,
            "device_id": row.device_id,
            "matched": row.matched,
        })
    return {"rows": rows, "days": policy.current().recovery.history_days}


def init_app(app: Flask) -> None:
    app.jinja_env.globals["self_service_history"] = history
