"""Audit pages: search with keyset pagination, event detail, exports, dashboard, chain state."""
from __future__ import annotations

import hashlib
import json

from flask import (Blueprint, Response, abort, flash, redirect, render_template, request, stream_with_context,
                   url_for)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from markupsafe import Markup

from .. import boundary, codes
from ..extensions import db
from ..permissions import AUDIT_EXPORT, AUDIT_READ_BRANCH, AUDIT_READ_OWN, AUDIT_VERIFY, can
from ..services import audit, audit_dashboard, audit_export, audit_query, checkpoints, overview
from . import export_words, inputs
from .labels import CHANNEL_LABELS, OUTCOME_LABELS, TEMPLATE_FILTERS, action_choices, action_label, choices
from .roles import ROLE_LABELS
from .security import current_actor, guard_blueprint, requires

bp = Blueprint("auditing", __name__, url_prefix="/audit")
guard_blueprint(bp)
for _name, _filter in TEMPLATE_FILTERS.items():  # words for the events' codes
    bp.add_app_template_filter(_filter, _name)

FILTER_ERRORS = {
    "date": _l("Enter dates as YYYY-MM-DD."),
    "range": _l("The end date is before the start date."),
    "format": _l("Letters, digits, '.', '_' and '-' only (wallet numbers: digits only)."),
    "choice": _l("Choose a value from the list."),
}


def _actor():
    return current_actor()


def _filters():
    f = audit_query.parse_filters(request.args)
    return f, {key: str(FILTER_ERRORS[code]) for key, code in f.errors.items()}


@bp.route("/events", methods=["GET"])
@requires(AUDIT_READ_OWN)
def events():
    f, errors = _filters()
    rows, next_before = [], None
    before = inputs.int_arg("before", maximum=inputs.BIGINT_MAX)
    if errors:
        flash(_("Some filters are not valid; fix them and search again."), "error")
    else:
        rows, next_before = boundary.perform(_actor(), audit_query.search, f, before=before)
    return render_template("auditing/events.html", rows=rows, next_before=next_before, filters=f.as_dict(),
                           args=request.args, errors=errors, roles=choices(codes.ROLES, ROLE_LABELS),
                           outcomes=choices(codes.OUTCOMES, OUTCOME_LABELS),
                           channels=choices(codes.CHANNELS, CHANNEL_LABELS), actions=action_choices(),
                           can_export=can(current_user, AUDIT_EXPORT))


@bp.route("/events/<seq:seq>", methods=["GET"])
@requires(AUDIT_READ_OWN)
def event(seq):
    row = boundary.perform(_actor(), audit_query.view, seq)

    def pretty(value):
        return json.dumps(json.loads(value), ensure_ascii=False, indent=2, sort_keys=True) if value else ""

    recomputed = audit.event_hash({k: getattr(row, k) for k in audit.CHAINED_FIELDS})
    return render_template("auditing/event.html", e=row, before=pretty(row.before_state), after=pretty(row.after_state),
                           details=pretty(row.details), hash_ok=recomputed == row.hash)


@bp.route("/export.<fmt>", methods=["GET"])
@requires(AUDIT_EXPORT)
def export(fmt):
    if fmt not in ("csv", "jsonl", "pdf"):
        abort(404)
    f, errors = _filters()
    if errors:
        flash(_("Some filters are not valid; fix them and search again."), "error")
        return redirect(url_for("auditing.events", **request.args))
    actor = _actor()
    if fmt == "pdf":
        volume = max(1, min(request.args.get("volume", 1, type=int) or 1, 10_000))
        pdf, rows, more = audit_export.pdf_volume(db.session, actor, f, volume, words=export_words.words)
        boundary.perform(actor, audit_export.record_export, f, "pdf", {
            "rows": rows, "complete": True, "volume": volume, "sha256": hashlib.sha256(pdf).hexdigest()})
        headers = {"Content-Disposition": f'attachment; filename="audit-report-v{volume}.pdf"',
                   "X-More-Volumes": "yes" if more else "no"}
        return Response(pdf, mimetype="application/pdf", headers=headers)

    result: dict = {}

    def generate():
        try:
            yield from audit_export.lines(db.session, actor, f, fmt, result, translate=export_words.translate)
        finally:
            boundary.rollback()  # the export read; its record is a transaction of its own
            boundary.perform(actor, audit_export.record_export, f, fmt, result)

    mimetype = "text/csv" if fmt == "csv" else "application/x-ndjson"
    return Response(stream_with_context(generate()), mimetype=f"{mimetype}; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="audit-export.{fmt}"'})


@bp.route("/dashboard", methods=["GET"])
@requires(AUDIT_READ_BRANCH)
def dashboard():
    days = max(1, min(request.args.get("days", 14, type=int) or 14, 90))
    data = audit_dashboard.build(db.session, _actor(), days=days)
    # Every action by its words (a wallet operation's: its registry label).
    per_action = [(action_label(action), n) for action, n in data["per_action"]]
    outcome_words = {code: str(words) for code, words in OUTCOME_LABELS.items()}
    charts = {"by_day": Markup(audit_dashboard.bar_chart_svg(data["by_day"], outcome_words=outcome_words,
                                                             title=_("Events per day"), day_word=_("Day"))),
              "per_action": Markup(audit_dashboard.hbar_svg(per_action, title=_("By action"),
                                                            headers=(_("Action"), _("Events")))),
              "per_branch": Markup(audit_dashboard.hbar_svg(data["per_branch"], title=_("By branch"),
                                                            headers=(_("Branch"), _("Events"))))}
    return render_template("auditing/dashboard.html", data=data, days=days, charts=charts)


@bp.route("/chain", methods=["GET", "POST"])
@requires(AUDIT_VERIFY)
def chain():
    form = FlaskForm()
    report = None
    if form.validate_on_submit():
        report = boundary.perform(current_actor(), audit.verify_and_record)
        if report.intact:
            flash(_("The audit chain is intact: %(n)s events verified.", n=report.count), "success")
        else:
            flash(_("The audit chain is broken at sequence number %(seq)s.", seq=report.first_bad_seq), "error")
    state = overview.chain_state(db.session)
    return render_template("auditing/chain.html", form=form, head=state.head, report=report,
                           checkpoints=state.checkpoints, key_id=state.key_id, pending=state.pending,
                           lag=state.lag_seconds)


@bp.route("/public-key.pem", methods=["GET"])
@requires(AUDIT_VERIFY)
def public_key():
    return Response(checkpoints.public_key_pem(), mimetype="application/x-pem-file",
                    headers={"Content-Disposition": 'attachment; filename="audit-checkpoint-key.pem"'})

