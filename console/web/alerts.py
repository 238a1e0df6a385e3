"""Risk alerts for the supervisors of the wallet's home branch: the list, one alert, and taking
it in hand (acknowledge with an owner and a note). Scope and rules: console/services/alerts.py."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import SelectField, TextAreaField
from wtforms.validators import DataRequired, Length

from .. import boundary
from ..extensions import db
from ..identity import mask_name
from ..permissions import APPROVAL_DECIDE
from ..services import alerts, overview
from ..services.errors import InvalidInput
from . import once, refusals
from .roles import ROLE_LABELS
from .security import current_actor, guard_blueprint

bp = Blueprint("alerts", __name__, url_prefix="/alerts")
guard_blueprint(bp, APPROVAL_DECIDE)

ONE_TIME_FORMS = frozenset({"alerts.alert"})


@bp.before_request
def _answer_once():
    return once.begin_form(ONE_TIME_FORMS)


bp.after_request(once.finish)


class AcknowledgeForm(FlaskForm):
    owner = SelectField(_l("Owner (follows the alert up)"), choices=[], validate_choice=False)
    note = TextAreaField(_l("Note (required): what you found and what happens next"),
                         validators=[DataRequired(), Length(max=alerts.NOTE_MAX)])


def _form(actor, alert) -> AcknowledgeForm:
    form = AcknowledgeForm()
    form.owner.choices = [(str(s.id), f"{s.name} · {s.employee_no} · {ROLE_LABELS.get(s.role, s.role)}")
                          for s in alerts.owner_candidates(db.session, actor)]
    if request.method == "GET":
        form.owner.data = str(alert.owner_id or actor.staff_id)
        form.note.data = ""
    return form


@bp.route("/", methods=["GET"])
def index():
    actor = current_actor()
    return render_template("alerts/index.html", alerts=overview.open_alerts(db.session, actor, limit=50),
                           mask_name=mask_name)


@bp.route("/<int:alert_id>", methods=["GET", "POST"])
def alert(alert_id):
    actor = current_actor()
    refusals.come_back_to(url_for("alerts.alert", alert_id=alert_id))
    row = boundary.perform(actor, alerts.get_alert, alert_id)
    form = _form(actor, row)
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            raw = form.owner.data or ""
            owner_id = int(raw) if raw.isdigit() and len(raw) <= 9 else None
            try:
                boundary.perform(actor, alerts.acknowledge, row, owner_id=owner_id, note=form.note.data)
            except InvalidInput as exc:
                target = form.owner if exc.details.get("field") == "owner" else form.note
                target.errors = [refusals.message(exc)]
                status = 422
            else:
                flash(_("Alert acknowledged. The owner follows it up."), "success")
                return redirect(url_for("alerts.alert", alert_id=alert_id))
        else:
            status = 422
    return render_template("alerts/alert.html", alert=overview.alert_view(row), row=row, form=form,
                           mask_name=mask_name, role_labels=ROLE_LABELS), status
