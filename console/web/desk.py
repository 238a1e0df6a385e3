"""The service desk for tellers, agents and supervisors: find the customer -> verify ->
choose the operation -> confirm -> close the case. Supervisors also decide approvals here, from
the queue or standing at the maker's screen (主管现场授权, docs/counter-authorisation.md).

Every state-changing form carries a one-time ``form_token`` (console/web/once.py): submitted
twice, it is done once, and the second submit lands where the first one did. A request's
commits are deferred to its answer, which is built first (console/answers.py).
"""
from __future__ import annotations

import json

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for
from flask_babel import format_datetime
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, HiddenField, PasswordField, RadioField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from .. import boundary, codes, policy
from ..adapters.registry import registry_from_config
from ..extensions import db
from ..identity import ID_TYPES, mask_name
from ..models.customer import Wallet
from ..models.service import Approval, Case
from ..permissions import APPROVAL_DECIDE, CUSTOMER_VIEW, WALLET_UNLOCK
from ..services import cases, overview, operations, passkeys, receipts, verification, wallet_signin
from ..services.actor import Actor
from ..services.operations import counter_authorisation
from ..services.errors import InvalidInput
from . import once, refusals
from .desk_labels import (CLOSE_WITHOUT_ACTION, COUNTER_REFUSALS, INPUT_ERRORS, OPERATION_HELP, OPERATION_LABELS,
                          REASON_LABELS, REFUSALS, VERIFICATION_FAILURES, VERIFICATION_SLIPS)
from .labels import TEMPLATE_FILTERS, security_question
from .roles import ROLE_LABELS
from .security import client_ip, guard_blueprint, requires

bp = Blueprint("desk", __name__, url_prefix="/desk")
guard_blueprint(bp, CUSTOMER_VIEW)

# The forms that change something and carry a one-time token (templates: ``form_token()``).
# Not here: search and reveal (they answer with a page of customer data, which is not kept) and
# printing a receipt (a PDF; a second print is a copy, as it says).
ONE_TIME_FORMS = frozenset({
    "desk.open_case", "desk.verify_counter", "desk.verify_phone_start", "desk.verify_phone_resend",
    "desk.verify_phone_check", "desk.adopt_verification", "desk.operate", "desk.add_note", "desk.close_case",
    "desk.approval", "desk.clear_interrupted_sign_ins",
})


@bp.before_request
def _answer_once():
    return once.begin_form(ONE_TIME_FORMS)


bp.after_request(once.finish)
bp.add_app_template_global(once.form_token, "form_token")
for _name, _filter in TEMPLATE_FILTERS.items():  # words for the codes of the case log
    bp.add_app_template_filter(_filter, _name)


def desk_actor() -> Actor:
    row = g.get("staff_session")
    return Actor.for_staff(current_user, source_ip=client_ip(), session_id=row.public_id if row else None,
                           channel=Actor.service_channel(current_user))


def perform(fn, *args, **kwargs):
    """A service call by the signed-in staff member, through the boundary (console/boundary.py):
    committed with the answer, or refused (rolled back, the refusal recorded, and answered by
    console/web/refusals.py)."""
    return boundary.perform(desk_actor(), fn, *args, **kwargs)


def _case(case_no: str) -> Case:
    refusals.come_back_to(url_for("desk.case", case_no=case_no))
    return perform(cases.get_case, case_no)


def _customer(customer_no: str, **kwargs):
    refusals.come_back_to(url_for("desk.customer", customer_no=customer_no))
    return perform(cases.get_customer, customer_no, **kwargs)


# --- forms -------------------------------------------------------------------------------------


class SearchForm(FlaskForm):
    kind = SelectField(_l("Search by"), choices=[])
    id_type = SelectField(_l("Document type"), choices=[])
    value = StringField(_l("Number"), validators=[DataRequired(), Length(max=40)])


class CounterForm(FlaskForm):
    id_type = SelectField(_l("Document type"), choices=[])
    id_number = StringField(_l("Document number as shown on the card"), validators=[DataRequired(), Length(max=40)])
    photo_matches = BooleanField(_l("I have compared the photo on the document with the person in front of me"))


class OperationForm(FlaskForm):
    reason_code = SelectField(_l("Reason"), choices=[], validators=[DataRequired(message=_l("Choose a reason."))])
    note = TextAreaField(_l("Note (optional)"), validators=[Optional(), Length(max=1000)])
    confirm = BooleanField(_l("I have checked the details with the customer"), validators=[DataRequired()])


class CloseForm(FlaskForm):
    """Closing a case: a reason when nothing was done, an acknowledgement when a request still waits."""

    no_action_reason = SelectField(_l("Why nothing was done for the customer"), choices=[], validators=[Optional()])
    note = TextAreaField(_l("Note (optional)"), validators=[Optional(), Length(max=1000)])
    pending_told = BooleanField(_l("I have told the customer that a supervisor still has to decide the request"))


class NoteForm(FlaskForm):
    text = TextAreaField(_l("Note"), validators=[DataRequired(), Length(max=2000)])


class DecisionForm(FlaskForm):
    decision = RadioField(_l("Decision"), choices=[], validators=[DataRequired()])
    note = TextAreaField(_l("Note (required)"), validators=[DataRequired(), Length(max=1000)])


class CounterAuthorisationForm(FlaskForm):
    """主管现场授权: the supervisor's decision and note, and who they are. Their password and code
    are checked once and never kept, nor written back into the page."""

    decision = RadioField(_l("Decision"), choices=[], validators=[DataRequired()])
    note = TextAreaField(_l("Note (required)"), validators=[DataRequired(), Length(max=1000)])
    employee_no = StringField(_l("Supervisor's employee number"), validators=[
        DataRequired(message=_l("The supervisor enters their employee number.")),
        Length(max=counter_authorisation.EMPLOYEE_NO_MAX)])
    password = PasswordField(_l("Supervisor's password"), validators=[Optional(), Length(max=256)])
    code = StringField(_l("Supervisor's authenticator code"), validators=[Optional(), Length(max=12)])


class CounterKeyForm(FlaskForm):
    """The security key's step: what the supervisor decided (shown, not editable here) and the
    browser's answer, put in by passkeys.js."""

    decision = HiddenField(validators=[DataRequired()])
    note = HiddenField(validators=[DataRequired(), Length(max=1000)])
    employee_no = HiddenField(validators=[DataRequired(), Length(max=counter_authorisation.EMPLOYEE_NO_MAX)])
    credential = HiddenField(validators=[DataRequired(), Length(max=passkeys.MAX_ANSWER_CHARS)])


class RevealForm(FlaskForm):
    field = SelectField(_l("Field"), choices=[])
    reason = StringField(_l("Reason"), validators=[DataRequired(), Length(min=4, max=200)])


def _search_form() -> SearchForm:
    form = SearchForm()
    form.kind.choices = [("wallet_no", _("Wallet number")), ("mobile", _("Registered mobile")),
                         ("id_number", _("ID document number"))]
    form.id_type.choices = [(k, str(v)) for k, v in ID_TYPES.items()]
    return form


# --- find the customer -----------------------------------------------------------------------


@bp.route("/", methods=["GET"])
def index():
    actor = desk_actor()
    recent = db.session.scalars(select(Case).where(Case.staff_id == current_user.id)
                                .order_by(Case.id.desc()).limit(10)).all()
    form = _search_form()
    if actor.channel == codes.PHONE:
        form.kind.data = "mobile"  # callers give the mobile they call from, rarely a wallet number
    return render_template("desk/search.html", form=form, results=None, recent=recent, channel=actor.channel)


@bp.route("/search", methods=["POST"])
def search():
    """A POST, so an ID or mobile number never lands in a URL, a log or a Referer."""
    form = _search_form()
    results = None
    if form.validate_on_submit():
        try:
            results = perform(cases.search, form.kind.data, form.value.data, form.id_type.data)
        except InvalidInput as exc:
            form.value.errors = [refusals.message(exc)]
        form.value.data = ""  # never echo the full number back into the page
        if results and len(results) == 1:
            # One customer: open it at once (a GET of the customer page; the number stays out of the URL).
            return redirect(url_for("desk.customer", customer_no=results[0].customer_no), code=303)
    return render_template("desk/search.html", form=form, results=results or [], searched=True,
                           recent=[], channel=desk_actor().channel, mask_name=mask_name)


def _customer_view(customer) -> dict:
    return vars(overview.customer_overview(db.session, desk_actor(), customer))


@bp.route("/customers/<customer_no:customer_no>", methods=["GET"])
def customer(customer_no):
    refusals.come_back_to(url_for("desk.index"))
    found = perform(cases.get_customer, customer_no)
    reveal_form = RevealForm()
    reveal_form.field.choices = [("mobile", _("Registered mobile")), ("id_number", _("ID document number"))]
    return render_template("desk/customer.html", **_customer_view(found), reveal_form=reveal_form,
                           revealed=None, id_types=ID_TYPES, mask_name=mask_name)


@bp.route("/customers/<customer_no:customer_no>/reveal", methods=["POST"])
@requires("pii.reveal")
def reveal(customer_no):
    found = _customer(customer_no, record_view=False)
    form = RevealForm()
    form.field.choices = [("mobile", _("Registered mobile")), ("id_number", _("ID document number"))]
    revealed = None
    if form.validate_on_submit():
        value = perform(cases.reveal, found, form.field.data, form.reason.data)
        if value:
            revealed = (dict(form.field.choices)[form.field.data], value)
    return render_template("desk/customer.html", **_customer_view(found), reveal_form=form, revealed=revealed,
                           id_types=ID_TYPES, mask_name=mask_name)


@bp.route("/customers/<customer_no:customer_no>/wallets/<int:wallet_id>/clear-interrupted-sign-ins", methods=["POST"])
@requires(WALLET_UNLOCK)
def clear_interrupted_sign_ins(customer_no, wallet_id):
    """Settle the sign-ins whose server stopped before answering, instead of waiting for the
    customer's next attempt to do it (each is audited with this staff member as actor)."""
    form = FlaskForm()
    if not form.validate_on_submit():
        abort(400)
    found = _customer(customer_no, record_view=False)
    wallet = next((w for w in found.wallets if w.id == wallet_id), None)
    if wallet is None:
        abort(404)
    cleared = perform(wallet_signin.clear_interrupted, wallet)
    if cleared:
        flash(_("%(n)s interrupted sign-in(s) cleared. The customer can sign in again.", n=cleared), "success")
    else:
        flash(_("Nothing to clear: no sign-in of this wallet has been interrupted."), "info")
    return redirect(url_for("desk.customer", customer_no=customer_no))


@bp.route("/customers/<customer_no:customer_no>/cases", methods=["POST"])
def open_case(customer_no):
    form = FlaskForm()
    if not form.validate_on_submit():
        abort(400)
    found = _customer(customer_no, record_view=False)
    case = perform(cases.open_case, found)
    return redirect(url_for("desk.case", case_no=case.case_no))


# --- the case: verify, operate, close ------------------------------------------------------------


def _reason_choices(operation: str) -> list[tuple[str, str]]:
    """The reasons staff choose from; nothing is chosen for them unless the operation declares the
    reason that brings a customer for it (``Operation.default_reason``)."""
    reasons = [(c, str(REASON_LABELS.get(c, c))) for c in policy.current().reason_codes]
    if _default_reason(operation) is None:
        return [("", _("Choose a reason…"))] + reasons
    return reasons


def _default_reason(operation: str) -> str | None:
    default = operations.registry.get(operation).default_reason
    return default if default in policy.current().reason_codes else None


def _operation_form(wallet_id: int, operation: str) -> OperationForm:
    """A fresh operation form (never filled from another form's POST), its default reason chosen."""
    form = OperationForm(formdata=None, prefix=f"w{wallet_id}-{operation}")
    form.reason_code.choices = _reason_choices(operation)
    form.reason_code.data = _default_reason(operation) or ""
    return form


def _operation_rows(rows, submitted=None):
    """The case's operations (console.services.operations.availability), with their words and forms;
    ``submitted`` (wallet id, operation, form) keeps a form sent back with its errors."""
    shown = []
    for row in rows:
        form = _operation_form(row.wallet.id, row.operation) if submitted is None or \
            submitted[:2] != (row.wallet.id, row.operation) else submitted[2]
        shown.append({"wallet": row.wallet, "op": row.operation, "label": OPERATION_LABELS[row.operation],
                      "help": OPERATION_HELP[row.operation], "state": row.state,
                      "why": REFUSALS[row.reason] if row.reason else None, "form": form,
                      "approval": row.needs_approval, "sent_back": submitted is not None and form is submitted[2]})
    return shown


def _done(events) -> list:
    """What was done for the customer in a case: wallet operations carried out and requests filed."""
    return [e for e in events if e.outcome == codes.SUCCESS
            and (e.action == "approval.request" or operations.registry.by_action(e.action) is not None)]


def _next_step(case, view, rows) -> str:
    """Where the case page puts the focus: the first thing still to do."""
    if case.status != "open":
        return "receipt"
    if view.proof is None:
        return "verify"
    if not _done(view.events) and any(r["state"] == "available" for r in rows):
        return "operate"
    return "close"


def _render_case(case, *, counter_form=None, phone_entry=None, operation_form=None, status=200):
    """The case page. After a slip, ``counter_form`` (the submitted form, its fields' errors set),
    ``phone_entry`` (what was typed, and the errors by input name) or ``operation_form`` (wallet id,
    operation, the submitted form) keep what was typed. The focus lands on the next thing to do."""
    view = overview.case_overview(db.session, desk_actor(), case)
    rows = _operation_rows(view.operations, operation_form)
    step = "operate" if operation_form is not None else (
        "verify" if counter_form is not None or phone_entry is not None else _next_step(case, view, rows))
    counter_form = counter_form or CounterForm()
    counter_form.id_type.choices = [(k, str(v)) for k, v in ID_TYPES.items()]
    questions = [(code, security_question(code)) for code in view.question_codes]
    return render_template(
        "desk/case.html", case=case, proof=view.proof, pending=view.pending, questions=questions,
        wallet=case.customer.wallets[0] if case.customer.wallets else None,
        counter_form=counter_form, note_form=NoteForm(), rows=rows, step=step, done=_done(view.events),
        last=view.last, failures=VERIFICATION_FAILURES, flagged=view.flagged, events=view.events,
        receipt=view.receipt, mask_name=mask_name, operation_labels=OPERATION_LABELS,
        role_labels=ROLE_LABELS, adoptable=view.adoptable, adopted=_adopted(view.proof),
        phone_entry=phone_entry or {"typed": {}, "errors": {}, "focus": "code"},
        log_notes=_log_notes(view.events)), status


def _adopted(proof) -> dict | None:
    """Where the case's verification came from, when it was adopted from an earlier case."""
    return verification.adoption_source(proof) if proof is not None else None


def _log_notes(events) -> dict:
    """A few words beside some events of the case log: the case an adopted verification came
    from, and what a staff member's input error was."""
    notes = {}
    for event in events:
        if event.action == "verification.adopt":
            details = json.loads(event.details or "{}")
            notes[event.seq] = _("from case %(case)s, verification %(id)s",
                                 case=details.get("source_case", ""), id=details.get("source_verification_id", ""))
        elif event.reason_code == codes.INPUT_ERROR:
            code = json.loads(event.details or "{}").get("code", "")
            notes[event.seq] = _("input error, not counted against the customer: %(what)s",
                                 what=VERIFICATION_SLIPS.get(code, code))
    return notes


def _slip_messages(exc: InvalidInput) -> dict[str, str]:
    """A verification slip's messages by the service's field names (``codes.VERIFICATION_SLIPS``)."""
    problems = exc.details.get("problems") or {exc.details.get("field", ""): exc.message}
    return {field: VERIFICATION_SLIPS.get(code) or str(INPUT_ERRORS.get(code, code))
            for field, code in problems.items()}


@bp.route("/cases/<case_no:case_no>", methods=["GET"])
def case(case_no):
    return _render_case(_case(case_no))


@bp.route("/cases/<case_no:case_no>/verify/counter", methods=["POST"])
def verify_counter(case_no):
    found = _case(case_no)
    form = CounterForm()
    form.id_type.choices = [(k, str(v)) for k, v in ID_TYPES.items()]
    if form.validate_on_submit():
        registry = registry_from_config(current_app.config, db.session)
        try:
            row = perform(verification.verify_at_counter, found, id_type=form.id_type.data,
                          id_number=form.id_number.data, photo_matches=form.photo_matches.data, registry=registry)
        except InvalidInput as exc:
            # The teller's slip (recorded as an input error; nothing counts against the customer):
            # on its field, with what was typed kept.
            for name, message in _slip_messages(exc).items():
                if name in form._fields:
                    form[name].errors = [message]
            return _render_case(found, counter_form=form, status=422)
        if row.status == "passed":
            flash(_("Identity verified with the ID document. Valid for %(n)s minutes.",
                    n=policy.current().verification.valid_minutes), "success")
        else:
            flash(str(VERIFICATION_FAILURES.get(row.failure_reason, row.failure_reason)), "error")
        return _back_to_case(found)
    return _render_case(found, counter_form=form, status=400 if request.method == "POST" else 200)


@bp.route("/cases/<case_no:case_no>/verify/adopt", methods=["POST"])
def adopt_verification(case_no):
    """Use, visibly, the staff member's still-valid verification of this customer from an earlier case."""
    found = _case(case_no)
    if FlaskForm().validate_on_submit():
        raw = request.form.get("verification_id", "")
        source = int(raw) if raw.isdigit() and len(raw) <= 9 else None
        row = perform(verification.adopt_verification, found, source)
        flash(_("The verification of case %(case)s is used in this case, valid until %(t)s.",
                case=verification.adoption_source(row)["case_no"], t=format_datetime(row.expires_at, "HH:mm")),
              "success")
    return _back_to_case(found)


def _wallet_of(case) -> Wallet:
    if not case.customer.wallets:
        abort(404)
    return case.customer.wallets[0]


@bp.route("/cases/<case_no:case_no>/verify/phone", methods=["POST"])
def verify_phone_start(case_no):
    found = _case(case_no)
    perform(verification.require_phone_verifier, found)
    if FlaskForm().validate_on_submit():
        perform(verification.start_phone_verification, found, _wallet_of(found))
        flash(_("A 6-digit code was sent by SMS to the registered mobile. Ask the customer to read it out."), "info")
    return _back_to_case(found)


@bp.route("/cases/<case_no:case_no>/verify/phone/resend", methods=["POST"])
def verify_phone_resend(case_no):
    found = _case(case_no)
    perform(verification.require_phone_verifier, found)
    if FlaskForm().validate_on_submit():
        pending = verification.pending_phone_verification(db.session, desk_actor(), found)
        if pending is None:
            flash(str(REFUSALS["verification_not_pending"]), "error")
        else:
            perform(verification.resend_code, found, pending)
            flash(_("A new code was sent. Tries already used still count."), "info")
    return _back_to_case(found)


@bp.route("/cases/<case_no:case_no>/verify/phone/check", methods=["POST"])
def verify_phone_check(case_no):
    found = _case(case_no)
    perform(verification.require_phone_verifier, found)
    if FlaskForm().validate_on_submit():
        actor = desk_actor()
        pending = verification.pending_phone_verification(db.session, actor, found)
        if pending is None:
            flash(str(REFUSALS["verification_not_pending"]), "error")
            return redirect(url_for("desk.case", case_no=case_no))
        answers = {code: request.form.get(f"answer_{code}", "")[:200] for code in pending.question_codes.split(",")}
        typed = request.form.get("code", "")[:12]
        try:
            row = perform(verification.check_phone_verification, found, pending, _wallet_of(found),
                          code=typed, answers=answers)
        except InvalidInput as exc:
            # The agent's slip (recorded as an input error; the try does not count): on its
            # field, with what was typed kept.
            errors = {("answer_" + name.split(".", 1)[1] if name.startswith("answers.") else name): message
                      for name, message in _slip_messages(exc).items()}
            typed_values = {"code": typed, **{f"answer_{code}": value for code, value in answers.items()}}
            focus = next((name for name in typed_values if name in errors), "code")
            return _render_case(found, phone_entry={"typed": typed_values, "errors": errors, "focus": focus},
                                status=422)
        if row.status == "passed":
            flash(_("Identity verified by phone. Valid for %(n)s minutes.",
                    n=policy.current().verification.valid_minutes), "success")
        elif row.status == "failed":
            flash(str(VERIFICATION_FAILURES.get(row.failure_reason, row.failure_reason)), "error")
        else:
            flash(_("The code is wrong. %(n)s tries left.", n=policy.current().verification.code_tries - row.code_tries), "error")
    return _back_to_case(found)


@bp.route("/cases/<case_no:case_no>/wallets/<int:wallet_id>/<operation>", methods=["POST"])
def operate(case_no, wallet_id, operation):
    found = _case(case_no)
    if operation not in operations.registry.codes():
        abort(404)
    wallet = db.session.get(Wallet, wallet_id)
    if wallet is None or wallet.customer_id != found.customer_id:
        abort(404)
    form = OperationForm(prefix=f"w{wallet.id}-{operation}")
    form.reason_code.choices = _reason_choices(operation)
    if not form.validate_on_submit():
        if not form.confirm.data:
            form.confirm.errors = [_("Tick this box once you have checked the details with the customer.")]
        # Sent back on its form, with what was typed kept (the note, the reason).
        return _render_case(found, operation_form=(wallet.id, operation, form), status=422)
    result = perform(operations.perform, found, wallet, operation,
                     reason_code=form.reason_code.data, note=form.note.data or None)
    if result.status == "pending_approval":
        flash(_("Request filed: a supervisor of your branch must approve it within %(n)s minutes, from the "
                "approvals queue or in person at this screen.", n=policy.current().approvals.expiry_minutes), "info")
    else:
        flash(_("Done: %(op)s. The customer has been notified by SMS.", op=OPERATION_LABELS[operation]), "success")
    return _back_to_case(found, step="close")


@bp.route("/cases/<case_no:case_no>/notes", methods=["POST"])
def add_note(case_no):
    found = _case(case_no)
    form = NoteForm()
    if form.validate_on_submit():
        perform(cases.add_note, found, form.text.data)
    return _back_to_case(found)


def _back_to_case(case: Case, step: str | None = None):
    """After a step (POST, redirect, GET): the case page, scrolled to where its focus lands. An
    operation names its next step itself: its audit event is chained only at commit, after this."""
    if step is None:
        view = overview.case_overview(db.session, desk_actor(), case)
        step = _next_step(case, view, _operation_rows(view.operations))
    return redirect(url_for("desk.case", case_no=case.case_no, _anchor=step))


def _close_form() -> CloseForm:
    form = CloseForm()
    form.no_action_reason.choices = [("", _("Choose why…"))] + [(code, str(words))
                                                                 for code, words in CLOSE_WITHOUT_ACTION.items()]
    return form


def _close_summary(case) -> dict:
    """What closing says before it is done: the verification, what was done, what still waits."""
    view = overview.case_overview(db.session, desk_actor(), case)
    waiting = db.session.scalars(select(Approval).where(Approval.case_id == case.id,
                                                        Approval.status == "pending")).all()
    verified = [e for e in view.events if e.action.startswith("verification.") and e.action != "verification.code_sent"
                and e.outcome == codes.SUCCESS]
    return {"done": _done(view.events), "waiting": waiting, "verified": verified, "notes": len(case.notes)}


@bp.route("/cases/<case_no:case_no>/close", methods=["GET", "POST"])
def close_case(case_no):
    """Closing asks first, with what was done: a case where nothing was done is closed only with a
    reason, and one with a request still waiting for a supervisor only once the customer is told."""
    found = _case(case_no)
    if found.status != "open":
        return redirect(url_for("desk.case", case_no=case_no, _anchor="receipt"))
    form = _close_form()
    summary = _close_summary(found)
    if request.method == "POST" and form.validate_on_submit():
        if not summary["done"] and not form.no_action_reason.data:
            form.no_action_reason.errors = [_("Nothing was done in this case: say why before closing it.")]
        if summary["waiting"] and not form.pending_told.data:
            form.pending_told.errors = [_("A request is still waiting for a supervisor: tell the customer, then tick this box.")]
        if not form.errors:
            if not summary["done"]:
                text = _("Closed without action: %(why)s.", why=CLOSE_WITHOUT_ACTION[form.no_action_reason.data])
                perform(cases.add_note, found, f"{text} {form.note.data or ''}".strip())
            elif form.note.data:
                perform(cases.add_note, found, form.note.data)
            receipt = perform(receipts.close_and_issue, found)
            flash(_("Case closed. Receipt %(no)s issued.", no=receipt.receipt_no), "success")
            return redirect(url_for("desk.case", case_no=case_no, _anchor="receipt"))
    status = 422 if request.method == "POST" else 200
    return render_template("desk/close.html", case=found, form=form, mask_name=mask_name,
                           operation_labels=OPERATION_LABELS, **summary), status


@bp.route("/receipts/<receipt_no:receipt_no>.pdf", methods=["POST"])
def receipt_pdf(receipt_no):
    """Printing changes state (the first print is the original, later ones copies): a POST."""
    if not FlaskForm().validate_on_submit():
        abort(400)
    refusals.as_403()
    receipt = perform(receipts.get_receipt, receipt_no)
    pdf, copy = perform(receipts.print_receipt, receipt)
    name = f"{receipt.receipt_no}{'-copy' if copy else ''}.pdf"
    return current_app.response_class(pdf, mimetype="application/pdf", headers={
        "Content-Disposition": f'inline; filename="{name}"', "Cache-Control": "no-store"})


# --- approvals (supervisors) -----------------------------------------------------------------------


@bp.route("/approvals", methods=["GET"])
@requires(APPROVAL_DECIDE)
def approvals():
    actor = desk_actor()
    rows = perform(overview.pending_approvals)
    reviews = [overview.approval_review(db.session, actor, row) for row in rows]
    return render_template("desk/approvals.html", reviews=reviews, labels=OPERATION_LABELS, reasons=REASON_LABELS,
                           mask_name=mask_name, role_labels=ROLE_LABELS)


def _decision_form():
    form = DecisionForm()
    form.decision.choices = [("approve", _("Approve and execute")), ("reject", _("Reject"))]
    return form


@bp.route("/approvals/<int:approval_id>", methods=["GET", "POST"])
@requires(APPROVAL_DECIDE)
def approval(approval_id):
    refusals.come_back_to(url_for("desk.approval", approval_id=approval_id))
    row = perform(operations.get_approval, approval_id)
    form = _decision_form()
    if request.method == "POST" and form.validate_on_submit():
        decided = perform(operations.decide, row, approve=form.decision.data == "approve", note=form.note.data)
        flash(_("Approved and executed: %(op)s for %(name)s. The maker sees the decision on the case.",
                op=OPERATION_LABELS[decided.operation], name=mask_name(decided.customer.name))
              if decided.status == "executed" else
              _("Rejected: %(op)s for %(name)s. The maker sees the decision on the case.",
                op=OPERATION_LABELS[decided.operation], name=mask_name(decided.customer.name)), "success")
        return redirect(url_for("desk.approvals"))
    status = 422 if request.method == "POST" else 200
    return render_template("desk/approval.html", review=overview.approval_review(db.session, desk_actor(), row),
                           row=row, form=form, labels=OPERATION_LABELS, reasons=REASON_LABELS, mask_name=mask_name,
                           own=row.maker_id == current_user.id, role_labels=ROLE_LABELS), status


# --- 主管现场授权: a supervisor decides a request at the maker's screen ---------------------------------


def _counter_request(case_no: str, approval_id: int):
    """The case on this screen and its waiting request (refusals come back to the case page)."""
    found = _case(case_no)
    return found, perform(counter_authorisation.counter_request, found, approval_id)


def _counter_form(data: dict | None = None) -> CounterAuthorisationForm:
    form = CounterAuthorisationForm(**({"formdata": None, "data": data} if data is not None else {}))
    form.decision.choices = [("approve", _("Approve and execute")), ("reject", _("Reject"))]
    return form


def _key_address() -> tuple[bool, str]:
    """Whether this page's address is one the security keys are valid for, and the one they are."""
    rp = policy.current().staff_signin.relying_party
    return request.host_url.rstrip("/") in rp.origins, rp.origins[0] if rp.origins else ""


def _render_counter(case, row, form, *, key_form=None, key_options=None, refusal=None, status=200):
    """The page: the request as the approvals page shows it, then the supervisor's decision and
    proof (``refusal``: why the last proof was refused, in ``COUNTER_REFUSALS``' words, shown beside
    it); with ``key_options``, the step where the supervisor touches their key. What the supervisor
    typed to prove who they are is never written back into the page."""
    form.password.data = form.code.data = form.employee_no.data = None
    origin_ok, key_address = _key_address()
    return render_template(
        "desk/counter_authorisation.html", case=case, row=row, form=form, key_form=key_form,
        key_options=key_options, refusal=COUNTER_REFUSALS[refusal] if refusal else None,
        review=overview.approval_review(db.session, desk_actor(), row),
        labels=OPERATION_LABELS, reasons=REASON_LABELS, mask_name=mask_name, role_labels=ROLE_LABELS,
        eyebrow=_("Supervisor authorises here"), password_allowed=counter_authorisation.password_allowed(),
        origin_ok=origin_ok, key_address=key_address), status


def _decide_at_counter(case, row, proof, *, approve: bool, note: str):
    """Step 2: the proven supervisor's decision, as the approval's, exactly once; a refusal (decided
    from the queue meanwhile, expired) is recorded with the supervisor as actor."""
    decided = boundary.perform(proof.actor, operations.decide, row, approve=approve, note=note, screen=desk_actor())
    words = {"name": proof.name, "employee_no": proof.actor.employee_no, "op": OPERATION_LABELS[decided.operation]}
    if decided.status == "executed":
        flash(_("Authorised here by %(name)s (%(employee_no)s): %(op)s is done. The customer has been notified by SMS.",
                **words), "success")
    else:
        flash(_("Rejected here by %(name)s (%(employee_no)s): %(op)s was not done. Tell the customer.", **words),
              "info")
    return redirect(url_for("desk.case", case_no=case.case_no, _anchor="case-approvals-title"))


@bp.route("/cases/<case_no:case_no>/approvals/<int:approval_id>/authorise", methods=["GET", "POST"])
def counter_authorise(case_no, approval_id):
    """The supervisor reads the request, writes the note, decides, and proves who they are: with
    password and authenticator code here, or with a security key (the next step)."""
    found, row = _counter_request(case_no, approval_id)
    form, refusal = _counter_form(), None
    if request.method == "POST" and form.validate_on_submit():
        approve, note, factor = form.decision.data == "approve", form.note.data, request.form.get("factor")
        if factor == "passkey":
            challenge = perform(counter_authorisation.begin_key, row, form.employee_no.data, approve=approve, note=note)
            if challenge.options:
                key_form = CounterKeyForm(formdata=None, data={"decision": form.decision.data, "note": note,
                                                               "employee_no": form.employee_no.data.strip()})
                return _render_counter(found, row, form, key_form=key_form, key_options=challenge.options)
            refusal = "no_key" if challenge.refusal == counter_authorisation.CREDENTIALS else challenge.refusal
        elif factor == "totp" and counter_authorisation.password_allowed():
            if not form.password.data:
                form.password.errors = [_("The supervisor enters their password.")]
            if not form.code.data:
                form.code.errors = [_("The supervisor enters the 6-digit code from their authenticator.")]
            if not form.errors:
                proof = boundary.step(counter_authorisation.prove_supervisor, desk_actor(), row, form.employee_no.data,
                                      factor="totp", approve=approve, note=note, password=form.password.data,
                                      code=form.code.data)
                if proof.ok:
                    return _decide_at_counter(found, row, proof, approve=approve, note=note)
                refusal = proof.refusal
        else:
            abort(400)
    return _render_counter(found, row, form, refusal=refusal, status=422 if request.method == "POST" else 200)


@bp.route("/cases/<case_no:case_no>/approvals/<int:approval_id>/authorise/key", methods=["POST"])
def counter_authorise_key(case_no, approval_id):
    """The browser's answer from the supervisor's security key, for the decision it was asked for."""
    found, row = _counter_request(case_no, approval_id)
    form = CounterKeyForm()
    if not form.validate_on_submit() or form.decision.data not in ("approve", "reject"):
        abort(400)
    approve, note = form.decision.data == "approve", form.note.data
    proof = boundary.step(counter_authorisation.prove_supervisor, desk_actor(), row, form.employee_no.data,
                          factor="passkey", approve=approve, note=note, credential=form.credential.data)
    if proof.ok:
        return _decide_at_counter(found, row, proof, approve=approve, note=note)
    refusal = "key_refused" if proof.refusal == counter_authorisation.CREDENTIALS else proof.refusal
    return _render_counter(found, row, _counter_form({"decision": form.decision.data, "note": note}), refusal=refusal,
                           status=422)
