"""Audit pages: search with keyset pagination, event detail, exports, dashboard, chain state."""
from __future__ import annotations

import hashlib
import json
from collections import namedtuple

from flask import (Blueprint, Response, abort, flash, redirect, render_template, request, stream_with_context,
                   url_for)
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from markupsafe import Markup, escape

from .. import answers, boundary, codes, timeutil
from ..extensions import db
from ..permissions import AUDIT_EXPORT, AUDIT_READ_BRANCH, AUDIT_READ_OWN, AUDIT_VERIFY, can
from ..services import audit, audit_dashboard, audit_export, audit_query, checkpoints, overview
from . import export_words, inputs, once
from .labels import (CHANNEL_LABELS, OUTCOME_LABELS, TEMPLATE_FILTERS, action_choices, action_label, actor_label,
                     channel_label, choices, outcome_label, reason_label, role_label)
from .roles import ROLE_LABELS
from .security import current_actor, guard_blueprint, requires

bp = Blueprint("auditing", __name__, url_prefix="/audit")
guard_blueprint(bp)
bp.after_request(once.finish)  # a view that defers (the search) commits its audit event with its answer
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


# The search page's fixed words (form labels, column headings), by the msgids the template had.
FORM_WORDS = {
    "start": _l("From (date)"), "end": _l("To (date)"), "actor": _l("Employee number"), "branch": _l("Branch code"),
    "wallet": _l("Wallet number"), "customer": _l("Customer number"), "case": _l("Case number"),
    "receipt": _l("Receipt number"), "action": _l("Action"), "role": _l("Role"), "outcome": _l("Outcome"),
    "channel": _l("Channel"), "any": _l("any"), "search": _l("Search"),
}
EVENT_COLUMNS = (_l("Seq."), _l("Time"), _l("By"), _l("Branch"), _l("Channel"), _l("Action"), _l("Outcome"),
                 _l("Customer"), _l("Case"))
_Who = namedtuple("_Who", "actor_employee_no actor_type")
_CODE_WORDS = {"role": role_label, "channel": channel_label, "action": action_label, "reason": reason_label,
               "outcome": outcome_label, "actor": lambda kind: actor_label(_Who(None, kind))}
_PAGE_WORDS: dict = {}
_KNOWN_CODES_MAX = 2000  # codes whose words are kept per language (a bound, whatever the table holds)


def _page_words() -> dict:
    """What the search page says that is the same on every page (form labels and lists, column
    headings, the words of the codes its rows show), in the reader's language: built once per
    language (and set of actions: an operation registered later has its own entry), not looked
    up through Babel a hundred times a page."""
    key = (str(get_locale()), codes.audit_actions())
    words = _PAGE_WORDS.get(key)
    if words is None:
        actions = action_choices()
        words = _PAGE_WORDS[key] = {
            "form": {name: str(text) for name, text in FORM_WORDS.items()},
            "roles": choices(codes.ROLES, ROLE_LABELS), "outcomes": choices(codes.OUTCOMES, OUTCOME_LABELS),
            "channels": choices(codes.CHANNELS, CHANNEL_LABELS), "actions": actions,
            "listed": frozenset(value for _prefix, _area, options in actions for value, _text in options),
            "headings": [str(text) for text in EVENT_COLUMNS],
            "cells": tuple(f'<td data-label="{escape(str(text))}">' for text in EVENT_COLUMNS),
            "codes": {},  # (kind, code) -> escaped words, filled as rows show them
        }
    return words


def event_rows(rows, words: dict) -> Markup:
    """The result table's rows. Written here rather than in the template: a page is 50 rows of 9
    cells, the one part of the page that grows with it, and plain ``str`` work (each value escaped
    with ``markupsafe.escape``; headings and the codes' words escaped once per language) costs a
    fraction of Jinja's per-expression overhead. templates/auditing/events.html holds the table."""
    seq_td, time_td, by_td, branch_td, channel_td, action_td, outcome_td, customer_td, case_td = words["cells"]
    known = words["codes"]

    def said(kind: str, code: str) -> str:
        text = known.get((kind, code))
        if text is None:
            text = escape(_CODE_WORDS[kind](code))
            if len(known) < _KNOWN_CODES_MAX:
                known[(kind, code)] = text
        return text

    link = escape(url_for("auditing.events"))  # an event's page is this URL and its number
    zone = timeutil.zone()  # stored times are aware UTC (UTCDateTime)
    out = []
    for e in rows:
        by = escape(e.actor_employee_no) if e.actor_employee_no else said("actor", e.actor_type)
        if e.actor_role:
            by = f'{by} <span class="muted small">{said("role", e.actor_role)}</span>'
        what = said("action", e.action)
        if e.reason_code:
            what = f'{what} <span class="muted small">({said("reason", e.reason_code)})</span>'
        badge = "ok" if e.outcome == "success" else "bad"
        seq = int(e.seq)
        out.append(
            f'<tr>{seq_td}<a href="{link}/{seq}"><code>{seq}</code></a></td>'
            f'{time_td}{e.occurred_at.astimezone(zone):%Y-%m-%d %H:%M:%S}</td>{by_td}{by}</td>'
            f'{branch_td}{escape(e.actor_branch or "")}</td>{channel_td}{said("channel", e.channel)}</td>'
            f'{action_td}{what}</td>{outcome_td}<span class="badge {badge}">{said("outcome", e.outcome)}</span></td>'
            f'{customer_td}{escape(e.customer_ref or "")}</td>{case_td}{escape(e.case_ref or "")}</td></tr>')
    return Markup("\n".join(out))


@bp.route("/events", methods=["GET"])
@requires(AUDIT_READ_OWN)
def events():
    f, errors = _filters()
    rows, next_before = [], None
    before = inputs.int_arg("before", maximum=inputs.BIGINT_MAX)
    if errors:
        flash(_("Some filters are not valid; fix them and search again."), "error")
    else:
        # The search and its audit event are committed once, with the page (``once.finish``): the
        # page is never answered unless its event is committed, and rendering reads rows and a
        # signed-in user that no commit has expired.
        answers.defer()
        rows, next_before = boundary.perform(_actor(), audit_query.search, f, before=before)
    words = _page_words()
    return render_template("auditing/events.html", rows=event_rows(rows, words) if rows else None, words=words,
                           next_before=next_before, filters=f.as_dict(), args=request.args, errors=errors,
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
                           lag=state.lag_seconds, stream=state.stream)


@bp.route("/public-key.pem", methods=["GET"])
@requires(AUDIT_VERIFY)
def public_key():
    return Response(checkpoints.public_key_pem(), mimetype="application/x-pem-file",
                    headers={"Content-Disposition": 'attachment; filename="audit-checkpoint-key.pem"'})


# --- audit bundles: one file an outside auditor checks offline (docs/audit-bundles.md) ----------

from ..permissions import AUDIT_READ_ALL as _AUDIT_READ_ALL  # noqa: E402  (kept beside the view it guards)

_BUNDLE_SEQ_DIGITS = 18  # audit_event.seq is a BIGINT


def _bundle_seq(raw: str | None) -> int | None:
    raw = (raw or "").strip()
    if not raw or len(raw) > _BUNDLE_SEQ_DIGITS or not raw.isascii() or not raw.isdigit():
        return None
    return int(raw)


def _bundle_error(problem: str, head: int, limit: int) -> tuple[str, tuple[str, ...]]:
    """The message for a range that cannot be bundled, and the fields it is about."""
    if problem == "number":
        return _("Enter the sequence numbers as whole numbers, such as 1 or 25000."), ("first", "last")
    if problem == "empty":
        return _("The audit chain has no events yet: there is nothing to bundle."), ()
    if problem == "start":
        return _("Sequence numbers start at 1."), ("first",)
    if problem == "order":
        return _("The first sequence number is after the last one."), ("first", "last")
    if problem == "beyond":
        return _("The chain ends at sequence number %(head)s: choose a last number within it.", head=head), ("last",)
    return _("A bundle holds at most %(max)s events: choose a shorter range, or make several bundles.",
             max=limit), ("first", "last")


@bp.route("/bundle", methods=["GET", "POST"])
@requires(AUDIT_EXPORT)
@requires(_AUDIT_READ_ALL)  # a bundle is every event of its range, whoever's: the auditor's scope
def bundle():
    """GET: what a bundle is, and the range to put in it; POST: build it and send it (``audit.bundle``)."""
    import tempfile

    from flask import current_app, send_file

    from ..services import audit_bundle
    from ..services.errors import InvalidInput

    form = FlaskForm()
    head_seq, head_hash = audit_bundle.chain_head(db.session)
    limit = int(current_app.config.get("AUDIT_BUNDLE_MAX_EVENTS", audit_bundle.DEFAULT_MAX_EVENTS))
    values = {"first": str(max(1, head_seq - limit + 1)), "last": str(max(head_seq, 1))}
    error, invalid = None, ()
    if form.validate_on_submit():
        values = {"first": request.form.get("first", "")[:40], "last": request.form.get("last", "")[:40]}
        first, last = _bundle_seq(values["first"]), _bundle_seq(values["last"])
        problem = ("number" if first is None or last is None
                   else audit_bundle.range_problem(head_seq, first, last, limit))
        if problem is None:
            out = tempfile.TemporaryFile()
            try:
                info = boundary.perform(current_actor(), audit_bundle.build, out, first, last, max_events=limit)
            except InvalidInput as exc:
                out.close()
                problem = exc.message
            except BaseException:
                out.close()
                raise
            else:
                return send_file(out, mimetype="application/zip", as_attachment=True, download_name=info.filename,
                                 max_age=0)
        error, invalid = _bundle_error(problem, head_seq, limit)
    return render_template("auditing/bundle.html", form=form, values=values, error=error, invalid=invalid,
                           head_seq=head_seq, head_hash=head_hash, max_events=limit, key_id=checkpoints.key_id(),
                           can_verify=can(current_user, AUDIT_VERIFY))
