"""The service desk for tellers, agents and supervisors: find the customer -> verify ->
choose the operation -> confirm -> close the case. Supervisors also decide approvals here.

Every state-changing form carries a one-time ``form_token`` (console/web/once.py): submitted
twice, it is done once, and the second submit lands where the first one did. A request's
commits are deferred to its answer, which is built first (console/answers.py).
"""
from __future__ import annotations

import json
from datetime import timedelta

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, or_, select
from wtforms import BooleanField, RadioField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from .. import answers
from ..adapters.registry import registry_from_config
from ..extensions import db
from ..identity import ID_ERRORS, ID_TYPES, mask_name
from ..models.customer import RiskAlert, Wallet
from ..models.service import Case, Receipt
from ..permissions import APPROVAL_DECIDE, CUSTOMER_VIEW, WALLET_UNLOCK
from ..services import audit, cases, operations, receipts, verification, wallet_signin
from ..services.actor import Actor
from ..services.errors import DomainError, InvalidInput, NotFound
from ..services.wallet_credentials import SECURITY_QUESTIONS
from ..timeutil import utcnow
from . import once
from .desk_labels import (INPUT_ERRORS, OPERATION_HELP, OPERATION_LABELS, REASON_LABELS, REFUSALS,
                          VERIFICATION_FAILURES)
from .roles import ROLE_LABELS
from .security import client_ip, guard_blueprint, requires

bp = Blueprint("desk", __name__, url_prefix="/desk")
guard_blueprint(bp, CUSTOMER_VIEW)

# The forms that change something and carry a one-time token (templates: ``form_token()``).
# Not here: search and reveal (they answer with a page of customer data, which is not kept) and
# printing a receipt (a PDF; a second print is a copy, as it says).
ONE_TIME_FORMS = frozenset({
    "desk.open_case", "desk.verify_counter", "desk.verify_phone_start", "desk.verify_phone_resend",
    "desk.verify_phone_check", "desk.operate", "desk.add_note", "desk.close_case", "desk.approval",
    "desk.clear_interrupted_sign_ins",
})


@bp.before_request
def _answer_once():
    return once.begin_form(ONE_TIME_FORMS)


bp.after_request(once.finish)
bp.add_app_template_global(once.form_token, "form_token")


def desk_actor() -> Actor:
    row = g.get("staff_session")
    return Actor.for_staff(current_user, source_ip=client_ip(), session_id=row.public_id if row else None,
                           channel=Actor.service_channel(current_user))


def _message(exc: DomainError) -> str:
    reason = (exc.audit or {}).get("reason_code") or exc.message
    return str(REFUSALS.get(reason) or INPUT_ERRORS.get(reason) or ID_ERRORS.get(reason)
               or _("The request could not be completed."))


def run(fn, *args, **kwargs):
    """Call a service, keeping its change with its audit event, or roll back and record the refusal.

    Both are committed with the request's answer (``once.finish``), after the view has built it.
    """
    try:
        result = fn(*args, **kwargs)
    except DomainError as exc:
        db.session.rollback()
        if exc.audit:
            audit.record_refusal(db.session, desk_actor(), exc.audit)
            answers.commit()
        if isinstance(exc, NotFound):
            abort(404)
        flash(_message(exc), "error")
        return None, exc
    answers.commit()
    return result, None


def _refuse_with_403(fn, *args, **kwargs) -> None:
    """Call a service's check: a refusal is recorded (after rollback) and answered with the 403 page."""
    try:
        fn(*args, **kwargs)
    except DomainError as exc:
        db.session.rollback()
        if exc.audit:
            audit.record_refusal(db.session, desk_actor(), exc.audit)
            answers.commit()
        abort(404 if isinstance(exc, NotFound) else 403)


def _case(case_no: str) -> Case:
    found, _exc = run(cases.get_case, db.session, desk_actor(), case_no)
    return found


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
    reason_code = SelectField(_l("Reason"), choices=[])
    note = TextAreaField(_l("Note (optional)"), validators=[Optional(), Length(max=1000)])
    confirm = BooleanField(_l("I have checked the details with the customer"), validators=[DataRequired()])


class NoteForm(FlaskForm):
    text = TextAreaField(_l("Note"), validators=[DataRequired(), Length(max=2000)])


class DecisionForm(FlaskForm):
    decision = RadioField(_l("Decision"), choices=[], validators=[DataRequired()])
    note = TextAreaField(_l("Note (required)"), validators=[DataRequired(), Length(max=1000)])


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
    return render_template("desk/search.html", form=_search_form(), results=None, recent=recent,
                           channel=actor.channel)


@bp.route("/search", methods=["POST"])
def search():
    """A POST, so an ID or mobile number never lands in a URL, a log or a Referer."""
    form = _search_form()
    results = None
    if form.validate_on_submit():
        results, exc = run(cases.search, db.session, desk_actor(), form.kind.data, form.value.data, form.id_type.data)
        if exc is not None and isinstance(exc, InvalidInput):
            form.value.errors = [_message(exc)]
        form.value.data = ""  # never echo the full number back into the page
    return render_template("desk/search.html", form=form, results=results or [], searched=True,
                           recent=[], channel=desk_actor().channel, mask_name=mask_name)


def _customer_view(customer):
    since = utcnow() - timedelta(hours=24)
    wallets = []
    for wallet in customer.wallets:
        failures = wallet_signin.recent_failures(db.session, wallet, since=since)
        sources = {}
        for attempt in failures:
            sources[attempt.source_ip or "-"] = sources.get(attempt.source_ip or "-", 0) + 1
        alerts = db.session.scalars(select(RiskAlert).where(RiskAlert.wallet_id == wallet.id,
                                                            RiskAlert.status == "open")).all()
        wallets.append({"wallet": wallet, "failures": failures, "sources": sources, "alerts": alerts,
                        "reason": wallet_signin.lock_reason(wallet),
                        "sign_in": wallet_signin.sign_in_state(db.session, wallet)})
    # Only the cases of the actor's own branch (the call centre is a branch too); the others are
    # counted, never named.
    branch_id = desk_actor().branch_id
    past = db.session.scalars(select(Case).where(Case.customer_id == customer.id, Case.branch_id == branch_id)
                              .order_by(Case.id.desc()).limit(10)).all()
    elsewhere = db.session.scalar(select(func.count(Case.id)).where(
        Case.customer_id == customer.id, or_(Case.branch_id != branch_id, Case.branch_id.is_(None)))) or 0
    return {"customer": customer, "wallets": wallets, "past_cases": past, "cases_elsewhere": elsewhere,
            "flagged": verification.is_flagged(db.session, customer.id),
            "failed_verifications": verification.failed_recently(db.session, customer.id)}


@bp.route("/customers/<customer_no:customer_no>", methods=["GET"])
def customer(customer_no):
    found, exc = run(cases.get_customer, db.session, desk_actor(), customer_no)
    if found is None:
        abort(404)
    reveal_form = RevealForm()
    reveal_form.field.choices = [("mobile", _("Registered mobile")), ("id_number", _("ID document number"))]
    return render_template("desk/customer.html", **_customer_view(found), reveal_form=reveal_form,
                           revealed=None, id_types=ID_TYPES, mask_name=mask_name)


@bp.route("/customers/<customer_no:customer_no>/reveal", methods=["POST"])
@requires("pii.reveal")
def reveal(customer_no):
    actor = desk_actor()
    found, _exc = run(cases.get_customer, db.session, actor, customer_no, record_view=False)
    form = RevealForm()
    form.field.choices = [("mobile", _("Registered mobile")), ("id_number", _("ID document number"))]
    revealed = None
    if form.validate_on_submit():
        value, _exc = run(cases.reveal, db.session, actor, found, form.field.data, form.reason.data)
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
    actor = desk_actor()
    found, _exc = run(cases.get_customer, db.session, actor, customer_no, record_view=False)
    wallet = next((w for w in found.wallets if w.id == wallet_id), None)
    if wallet is None:
        abort(404)
    cleared, exc = run(wallet_signin.clear_interrupted, db.session, actor, wallet)
    if exc is None:
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
    actor = desk_actor()
    found, _exc = run(cases.get_customer, db.session, actor, customer_no, record_view=False)
    case, _exc = run(cases.open_case, db.session, actor, found)
    if case is None:
        return redirect(url_for("desk.customer", customer_no=customer_no))
    return redirect(url_for("desk.case", case_no=case.case_no))


# --- the case: verify, operate, close ------------------------------------------------------------


def _operation_rows(actor, case, proof):
    rows = []
    for wallet in case.customer.wallets:
        for op in operations.RULES:
            state, why = "available", None
            if not operations.may_start(actor, case, op):
                state, why = "not_allowed", REFUSALS["not_permitted"]
            elif not operations.applicable(wallet, op):
                state, why = "not_applicable", None
            elif operations.RULES[op].needs_verification and proof is None:
                state, why = "needs_verification", REFUSALS["verification_missing_or_expired"]
            elif (operations.RULES[op].needs_verification and proof is not None
                  and proof.strength not in operations._required_strength(case, op)):
                state, why = "needs_verification", REFUSALS["verification_too_weak"]
            if state == "not_applicable":
                continue
            form = OperationForm(prefix=f"w{wallet.id}-{op}")
            form.reason_code.choices = [(c, str(REASON_LABELS.get(c, c))) for c in current_app.config["REASON_CODES"]]
            rows.append({"wallet": wallet, "op": op, "label": OPERATION_LABELS[op], "help": OPERATION_HELP[op],
                         "state": state, "why": why, "form": form,
                         "approval": operations.needs_approval(actor, case, op)})
    return rows


def _render_case(case, *, counter_form=None, status=200):
    actor = desk_actor()
    proof = verification.valid_verification(db.session, actor, case)
    pending = verification.pending_phone_verification(db.session, actor, case)
    counter_form = counter_form or CounterForm()
    counter_form.id_type.choices = [(k, str(v)) for k, v in ID_TYPES.items()]
    wallet = case.customer.wallets[0] if case.customer.wallets else None
    questions = []
    if pending and pending.question_codes:
        questions = [(code, SECURITY_QUESTIONS.get(code, code)) for code in pending.question_codes.split(",")]
    last = case.verifications[-1] if case.verifications else None
    receipt = db.session.scalar(select(Receipt).where(Receipt.case_id == case.id))
    return render_template(
        "desk/case.html", case=case, proof=proof, pending=pending, questions=questions, wallet=wallet,
        counter_form=counter_form, note_form=NoteForm(), rows=_operation_rows(actor, case, proof) if case.status == "open" else [],
        last=last, failures=VERIFICATION_FAILURES, flagged=verification.is_flagged(db.session, case.customer_id),
        events=cases.case_events(db.session, case), receipt=receipt, mask_name=mask_name,
        operation_labels=OPERATION_LABELS, role_labels=ROLE_LABELS), status


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
        row, _exc = run(verification.verify_at_counter, db.session, desk_actor(), found, id_type=form.id_type.data,
                        id_number=form.id_number.data, photo_matches=form.photo_matches.data, registry=registry)
        if row is not None:
            if row.status == "passed":
                flash(_("Identity verified with the ID document. Valid for 15 minutes."), "success")
            else:
                flash(str(VERIFICATION_FAILURES.get(row.failure_reason, row.failure_reason)), "error")
        return redirect(url_for("desk.case", case_no=case_no))
    return _render_case(found, counter_form=form, status=400 if request.method == "POST" else 200)


def _wallet_of(case) -> Wallet:
    if not case.customer.wallets:
        abort(404)
    return case.customer.wallets[0]


@bp.route("/cases/<case_no:case_no>/verify/phone", methods=["POST"])
def verify_phone_start(case_no):
    found = _case(case_no)
    _refuse_with_403(verification.require_phone_verifier, db.session, desk_actor(), found)
    if FlaskForm().validate_on_submit():
        row, _exc = run(verification.start_phone_verification, db.session, desk_actor(), found, _wallet_of(found))
        if row is not None:
            flash(_("A 6-digit code was sent by SMS to the registered mobile. Ask the customer to read it out."), "info")
    return redirect(url_for("desk.case", case_no=case_no))


@bp.route("/cases/<case_no:case_no>/verify/phone/resend", methods=["POST"])
def verify_phone_resend(case_no):
    found = _case(case_no)
    _refuse_with_403(verification.require_phone_verifier, db.session, desk_actor(), found)
    if FlaskForm().validate_on_submit():
        pending = verification.pending_phone_verification(db.session, desk_actor(), found)
        if pending is None:
            flash(str(REFUSALS["verification_not_pending"]), "error")
        else:
            _row, exc = run(verification.resend_code, db.session, desk_actor(), found, pending)
            if exc is None:
                flash(_("A new code was sent. Tries already used still count."), "info")
    return redirect(url_for("desk.case", case_no=case_no))


@bp.route("/cases/<case_no:case_no>/verify/phone/check", methods=["POST"])
def verify_phone_check(case_no):
    found = _case(case_no)
    _refuse_with_403(verification.require_phone_verifier, db.session, desk_actor(), found)
    if FlaskForm().validate_on_submit():
        actor = desk_actor()
        pending = verification.pending_phone_verification(db.session, actor, found)
        if pending is None:
            flash(str(REFUSALS["verification_not_pending"]), "error")
            return redirect(url_for("desk.case", case_no=case_no))
        answers = {code: request.form.get(f"answer_{code}", "")[:200] for code in pending.question_codes.split(",")}
        row, exc = run(verification.check_phone_verification, db.session, actor, found, pending, _wallet_of(found),
                       code=request.form.get("code", ""), answers=answers)
        if row is not None:
            if row.status == "passed":
                flash(_("Identity verified by phone. Valid for 15 minutes."), "success")
            elif row.status == "failed":
                flash(str(VERIFICATION_FAILURES.get(row.failure_reason, row.failure_reason)), "error")
            else:
                flash(_("The code is wrong. %(n)s tries left.", n=current_app.config["PHONE_CODE_TRIES"] - row.code_tries), "error")
    return redirect(url_for("desk.case", case_no=case_no))


@bp.route("/cases/<case_no:case_no>/wallets/<int:wallet_id>/<operation>", methods=["POST"])
def operate(case_no, wallet_id, operation):
    found = _case(case_no)
    if operation not in operations.RULES:
        abort(404)
    wallet = db.session.get(Wallet, wallet_id)
    if wallet is None or wallet.customer_id != found.customer_id:
        abort(404)
    form = OperationForm(prefix=f"w{wallet.id}-{operation}")
    form.reason_code.choices = [(c, str(REASON_LABELS.get(c, c))) for c in current_app.config["REASON_CODES"]]
    if not form.validate_on_submit():
        flash(_("Choose a reason and tick the confirmation box."), "error")
        return redirect(url_for("desk.case", case_no=case_no))
    result, _exc = run(operations.perform, db.session, desk_actor(), found, wallet, operation,
                       reason_code=form.reason_code.data, note=form.note.data or None)
    if result is not None:
        if result.status == "pending_approval":
            flash(_("Request filed: a supervisor of your branch must approve it within 30 minutes."), "info")
        else:
            flash(_("Done: %(op)s. The customer has been notified by SMS.", op=OPERATION_LABELS[operation]), "success")
    return redirect(url_for("desk.case", case_no=case_no))


@bp.route("/cases/<case_no:case_no>/notes", methods=["POST"])
def add_note(case_no):
    found = _case(case_no)
    form = NoteForm()
    if form.validate_on_submit():
        run(cases.add_note, db.session, desk_actor(), found, form.text.data)
    return redirect(url_for("desk.case", case_no=case_no))


@bp.route("/cases/<case_no:case_no>/close", methods=["POST"])
def close_case(case_no):
    found = _case(case_no)
    if FlaskForm().validate_on_submit():
        receipt, _exc = run(receipts.close_and_issue, db.session, desk_actor(), found)
        if receipt is not None:
            flash(_("Case closed. Receipt %(no)s issued.", no=receipt.receipt_no), "success")
    return redirect(url_for("desk.case", case_no=case_no))


@bp.route("/receipts/<receipt_no:receipt_no>.pdf", methods=["POST"])
def receipt_pdf(receipt_no):
    """Printing changes state (the first print is the original, later ones copies): a POST."""
    if not FlaskForm().validate_on_submit():
        abort(400)
    actor = desk_actor()
    receipt, _exc = run(receipts.get_receipt, db.session, actor, receipt_no)
    result, exc = run(receipts.print_receipt, db.session, actor, receipt)
    if exc is not None:
        abort(403)
    pdf, copy = result
    name = f"{receipt.receipt_no}{'-copy' if copy else ''}.pdf"
    return current_app.response_class(pdf, mimetype="application/pdf", headers={
        "Content-Disposition": f'inline; filename="{name}"', "Cache-Control": "no-store"})


# --- approvals (supervisors) -----------------------------------------------------------------------


@bp.route("/approvals", methods=["GET"])
@requires(APPROVAL_DECIDE)
def approvals():
    actor = desk_actor()
    operations.expire_stale(db.session)
    db.session.commit()
    rows = operations.pending_for_branch(db.session, actor)
    return render_template("desk/approvals.html", rows=rows, labels=OPERATION_LABELS, reasons=REASON_LABELS,
                           mask_name=mask_name)


def _decision_form():
    form = DecisionForm()
    form.decision.choices = [("approve", _("Approve and execute")), ("reject", _("Reject"))]
    return form


@bp.route("/approvals/<int:approval_id>", methods=["GET", "POST"])
@requires(APPROVAL_DECIDE)
def approval(approval_id):
    actor = desk_actor()
    row, _exc = run(operations.get_approval, db.session, actor, approval_id)
    form = _decision_form()
    if request.method == "POST" and form.validate_on_submit():
        decided, _exc = run(operations.decide, db.session, actor, row, approve=form.decision.data == "approve",
                            note=form.note.data)
        if decided is not None:
            flash(_("Approved and executed.") if decided.status == "executed" else _("Rejected."), "success")
            return redirect(url_for("desk.approvals"))
        db.session.refresh(row)
    return render_template("desk/approval.html", row=row, form=form, evidence=json.loads(row.evidence or "{}"),
                           labels=OPERATION_LABELS, reasons=REASON_LABELS, mask_name=mask_name,
                           own=row.maker_id == current_user.id)
