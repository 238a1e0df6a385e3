"""The signed-in staff member's home page: what this role can do."""
from __future__ import annotations

import json

from flask import Blueprint, render_template
from flask_login import current_user

from sqlalchemy import select

from ..extensions import db
from ..identity import mask_name
from ..models.customer import RiskAlert
from ..permissions import APPROVAL_DECIDE, can, permissions_for
from .roles import PERMISSION_LABELS, ROLE_LABELS, ROLE_SUMMARIES
from .security import guard_blueprint

bp = Blueprint("home", __name__)
guard_blueprint(bp)


@bp.route("/")
def index():
    granted = permissions_for(current_user.role)
    every = list(PERMISSION_LABELS)  # every permission, in the order the page shows them
    alerts = []
    if can(current_user, APPROVAL_DECIDE):
        alerts = db.session.scalars(
            select(RiskAlert).where(RiskAlert.status == "open").order_by(RiskAlert.id.desc()).limit(20)).all()
    return render_template(
        "home.html",
        alerts=[_alert_view(a) for a in alerts],
        role_label=ROLE_LABELS[current_user.role],
        summary=ROLE_SUMMARIES[current_user.role],
        allowed=[PERMISSION_LABELS[p] for p in every if p in granted],
        not_allowed=[PERMISSION_LABELS[p] for p in every if p not in granted],
    )


def _alert_view(alert: RiskAlert) -> dict:
    details = json.loads(alert.details or "{}")
    return {"raised_at": alert.raised_at, "wallet_no": alert.wallet.wallet_no,
            "customer": mask_name(alert.wallet.customer.name), "failures": details.get("failures"),
            "sources": details.get("sources"), "minutes": details.get("window_minutes")}
