"""The signed-in staff member's home page: what this role can do."""
from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user

from ..permissions import ROLE_PERMISSIONS, permissions_for
from .roles import PERMISSION_LABELS, ROLE_LABELS, ROLE_SUMMARIES
from .security import guard_blueprint

bp = Blueprint("home", __name__)
guard_blueprint(bp)


@bp.route("/")
def index():
    granted = permissions_for(current_user.role)
    every = sorted(set().union(*ROLE_PERMISSIONS.values()), key=list(PERMISSION_LABELS).index)
    return render_template(
        "home.html",
        role_label=ROLE_LABELS[current_user.role],
        summary=ROLE_SUMMARIES[current_user.role],
        allowed=[PERMISSION_LABELS[p] for p in every if p in granted],
        not_allowed=[PERMISSION_LABELS[p] for p in every if p not in granted],
    )
