"""The signed-in staff member's home page: the work in front of them, by what their role does.

Tellers and agents: their open cases and today's, and the approval requests they filed with the
decisions. Supervisors: the requests waiting for them and the open risk alerts of their branch (and
their own cases). Auditors: the chain's state and where the exceptions are. Administrators: staff and
branch administration and its latest actions. What the role may do is folded away below.

Also here, for every page: the pending-approval count beside the navigation's Approvals link, and
the approval notices of a case (``approval_notices``, the case page's partial).
"""
from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db
from ..identity import mask_name
from ..permissions import ADMIN_MANAGE, APPROVAL_DECIDE, AUDIT_VERIFY, CUSTOMER_VIEW, can, permissions_for
from ..services import overview
from .desk_labels import APPROVAL_WORDS, OPERATION_LABELS
from .roles import PERMISSION_LABELS, ROLE_LABELS, ROLE_SUMMARIES
from .security import current_actor, guard_blueprint

bp = Blueprint("home", __name__)
guard_blueprint(bp)


@bp.app_context_processor
def _work_counts():
    """``pending_approval_count()`` for the navigation: computed only when a page asks for it."""
    def pending_approval_count() -> int:
        if not (current_user and current_user.is_authenticated and can(current_user, APPROVAL_DECIDE)):
            return 0
        try:
            return overview.pending_approval_count(db.session, current_actor())
        except SQLAlchemyError:
            # An error page drawn after a failed transaction: the badge is left out, the page is not lost.
            return 0
    return {"pending_approval_count": pending_approval_count}


bp.add_app_template_global(APPROVAL_WORDS, "approval_words")


@bp.app_template_global("approval_notices")
def approval_notices(case):
    """The case's approval requests, and the customer's still pending from other cases (the case
    page has already checked that the staff member may see the case)."""
    return overview.case_approvals(db.session, case)


@bp.route("/")
def index():
    actor = current_actor()
    granted = permissions_for(current_user.role)
    every = list(PERMISSION_LABELS)  # every permission, in the order the page shows them
    work = {}
    if can(actor, CUSTOMER_VIEW):
        work["cases"] = overview.staff_cases(db.session, actor)
        work["filed"] = overview.filed_approvals(db.session, actor)
    if can(actor, APPROVAL_DECIDE):
        work["pending_count"] = overview.pending_approval_count(db.session, actor)
        work["alerts"] = overview.open_alerts(db.session, actor)
    if can(actor, AUDIT_VERIFY):
        work["chain"] = overview.chain_state(db.session, last=1)
    if can(actor, ADMIN_MANAGE):
        work["admin_actions"] = overview.recent_admin_actions(db.session, actor)
    return render_template(
        "home.html", work=work, alerts=work.get("alerts", []), mask_name=mask_name, labels=OPERATION_LABELS,
        role_label=ROLE_LABELS[current_user.role],
        summary=ROLE_SUMMARIES[current_user.role],
        allowed=[PERMISSION_LABELS[p] for p in every if p in granted],
        not_allowed=[PERMISSION_LABELS[p] for p in every if p not in granted],
    )
