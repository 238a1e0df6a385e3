"""The signed-in staff member's home page: what this role can do."""
from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user

from ..extensions import db
from ..identity import mask_name
from ..permissions import permissions_for
from ..services import overview
from .roles import PERMISSION_LABELS, ROLE_LABELS, ROLE_SUMMARIES
from .security import current_actor, guard_blueprint

bp = Blueprint("home", __name__)
guard_blueprint(bp)


@bp.route("/")
def index():
    granted = permissions_for(current_user.role)
    every = list(PERMISSION_LABELS)  # every permission, in the order the page shows them
    alerts = overview.open_alerts(db.session, current_actor())
    return render_template(
        "home.html",
        alerts=alerts, mask_name=mask_name,
        role_label=ROLE_LABELS[current_user.role],
        summary=ROLE_SUMMARIES[current_user.role],
        allowed=[PERMISSION_LABELS[p] for p in every if p in granted],
        not_allowed=[PERMISSION_LABELS[p] for p in every if p not in granted],
    )

