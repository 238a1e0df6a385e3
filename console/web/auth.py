"""Staff sign-in pages: employee number + password, then TOTP (enrolled at first sign-in)."""
from __future__ import annotations

import segno
from flask import (Blueprint, current_app, flash, g, redirect, render_template, request, session,
                   url_for)
from flask_babel import format_datetime
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Regexp

from .. import crypto
from ..extensions import db, login_manager
from ..models.staff import PendingSignin, Staff
from ..passwords import STAFF_PASSWORD_MESSAGES
from ..services import staff_auth
from .security import client_ip, current_actor, is_safe_next, requires

bp = Blueprint("auth", __name__, url_prefix="/auth")

TIMEOUT_MESSAGES = {
    "idle_timeout": _l("You were signed out after 15 minutes without activity. Please sign in again."),
    "absolute_timeout": _l("Your session reached its 12-hour limit. Please sign in again."),
    "revoked": _l("Your session was ended by an administrator. Please sign in again."),
    "password_reset": _l("Your password was reset by an administrator. Please sign in again."),
    "totp_reset": _l("Your authenticator was reset by an administrator. Please sign in again."),
    "branch_inactive": _l("Your branch was deactivated, which ended your session."),
}


class LoginForm(FlaskForm):
    employee_no = StringField(_l("Employee number"), validators=[DataRequired(), Length(max=16)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=256)])
    next = HiddenField()


class TotpForm(FlaskForm):
    code = StringField(_l("Authenticator code"), validators=[
        DataRequired(), Regexp(r"^\s*\d{3}\s?\d{3}\s*$", message=_l("Enter the 6 digits shown in your authenticator app."))])


class ChangePasswordForm(FlaskForm):
    new_password = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=256)])
    confirm = PasswordField(_l("Repeat the new password"), validators=[
        DataRequired(), EqualTo("new_password", message=STAFF_PASSWORD_MESSAGES["mismatch"])])


@login_manager.unauthorized_handler
def _unauthorized():
    reason = g.get("session_end_reason")
    if reason in TIMEOUT_MESSAGES:
        flash(TIMEOUT_MESSAGES[reason], "warning")
    else:
        flash(_("Please sign in first."), "info")
    target = request.full_path if request.method == "GET" else None
    return redirect(url_for("auth.login", next=target.rstrip("?") if target else None))


# --- pending sign-in state (server-side; the cookie holds only a random token) ------------
#
# session["pending"] = {"token": <random>, "staff": <id>}: only the token counts, looked up by
# its digest in pending_signin (bound to the address, expiring, replaced at every step). The
# staff id is a hint for the rate limiter's key (console/ratelimits.py) and is never trusted here.

LOCKED_MESSAGE = _l("Too many failed attempts. This account is locked; try again later or ask an administrator to unlock it.")


def _pending() -> tuple[PendingSignin, Staff] | tuple[None, None]:
    state = session.get("pending")
    token = state.get("token") if isinstance(state, dict) else None
    row, reason = staff_auth.resolve_pending_signin(db.session, token, source_ip=client_ip())
    if row is None:
        if state is not None:
            session.pop("pending", None)
        if reason:
            db.session.commit()  # the deletion and its audit event
        if reason == "expired":
            flash(_("The sign-in took too long. Please start again."), "warning")
        return None, None
    return row, row.staff


def _remember(token: str, staff: Staff) -> None:
    session["pending"] = {"token": token, "staff": staff.id}


def _next_step(row: PendingSignin, staff: Staff):
    if staff.totp_enrolled and row.step != staff_auth.PENDING_SECOND_FACTOR:
        return redirect(url_for("auth.totp"))
    if staff.must_change_password:
        return redirect(url_for("auth.change_password"))
    if not staff.totp_enrolled:
        return redirect(url_for("auth.enrol"))
    return _finish(row, staff)


def _finish(row: PendingSignin, staff: Staff):
    target = row.next_url
    lang = session.get("lang")
    session.clear()  # a brand-new session at every sign-in (no fixation)
    staff_auth.end_pending_signin(db.session, row)
    token, _row = staff_auth.start_session(db.session, staff, source_ip=client_ip())
    notice = staff_auth.take_lock_notice(staff)
    db.session.commit()
    session["sid"] = token
    session.permanent = True
    if lang:
        session["lang"] = lang
    if notice:
        flash(_("Your account was locked at %(time)s after %(n)s failed sign-in attempts. "
                "If that was not you, tell your administrator.",
                time=format_datetime(notice.locked_at, "yyyy-MM-dd HH:mm"), n=notice.failures), "warning")
    return redirect(target if is_safe_next(target) else url_for("home.index"))


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("home.index"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        result = staff_auth.check_password(db.session, form.employee_no.data, form.password.data,
                                           source_ip=client_ip())
        if result.status == "ok":
            lang = session.get("lang")
            session.clear()
            if lang:
                session["lang"] = lang
            token = staff_auth.begin_pending_signin(
                db.session, result.staff, source_ip=client_ip(),
                next_url=form.next.data if is_safe_next(form.next.data) else None)
            db.session.commit()
            _remember(token, result.staff)
            row, staff = _pending()
            return _next_step(row, staff)
        db.session.commit()
        # Unknown number, wrong password, locked or inactive account: one answer for all.
        flash(_("Employee number or password is incorrect."), "error")
    return render_template("auth/login.html", form=form)


@bp.route("/totp", methods=["GET", "POST"])
def totp():
    row, staff = _pending()
    if row is None:
        return redirect(url_for("auth.login"))
    if not staff.totp_enrolled or row.step == staff_auth.PENDING_SECOND_FACTOR:
        return _next_step(row, staff)
    form = TotpForm()
    if form.validate_on_submit():
        result = staff_auth.check_totp(db.session, staff, form.code.data, source_ip=client_ip())
        if result.status == "ok":
            token = staff_auth.advance_pending_signin(db.session, row, staff_auth.PENDING_SECOND_FACTOR)
            db.session.commit()
            _remember(token, staff)
            return _next_step(row, staff)
        if result.status != "invalid" or staff_auth.account_refused(staff):
            # Failed for good (locked now, or the account can no longer sign in).
            staff_auth.end_pending_signin(db.session, row)
            db.session.commit()
            session.pop("pending", None)
            if result.status == "locked":
                flash(LOCKED_MESSAGE, "error")
            return redirect(url_for("auth.login"))
        db.session.commit()
        flash(_("The authenticator code is incorrect or was already used."), "error")
    return render_template("auth/totp.html", form=form, staff=staff)


@bp.route("/change-password", methods=["GET", "POST"])
def change_password():
    row, staff = _pending()
    if row is None:
        return redirect(url_for("auth.login"))
    if staff.totp_enrolled and row.step != staff_auth.PENDING_SECOND_FACTOR:
        return redirect(url_for("auth.totp"))
    if not staff.must_change_password:
        return _next_step(row, staff)
    form = ChangePasswordForm()
    if form.validate_on_submit():
        problems = staff_auth.change_own_password(db.session, staff, form.new_password.data,
                                                  source_ip=client_ip())
        if not problems:
            token = staff_auth.advance_pending_signin(db.session, row)
            db.session.commit()
            _remember(token, staff)
            flash(_("Your password was changed."), "success")
            return _next_step(row, staff)
        db.session.commit()
        for code in problems:
            form.new_password.errors.append(
                STAFF_PASSWORD_MESSAGES[code] % {"n": current_app.config["STAFF_PASSWORD_MIN_LENGTH"]})
    return render_template("auth/change_password.html", form=form, staff=staff,
                           min_length=current_app.config["STAFF_PASSWORD_MIN_LENGTH"])


@bp.route("/enrol", methods=["GET", "POST"])
def enrol():
    row, staff = _pending()
    if row is None:
        return redirect(url_for("auth.login"))
    if staff.totp_enrolled or staff.must_change_password:
        return _next_step(row, staff)
    context = f"enrol:{staff.id}:{row.id}"
    if row.enrol_secret_enc is None:
        row.enrol_secret_enc = crypto.encrypt(staff_auth.new_totp_secret(), context=context)
        db.session.commit()
    secret = crypto.decrypt(row.enrol_secret_enc, context=context)
    form = TotpForm()
    if form.validate_on_submit():
        ok = staff_auth.enroll_totp(db.session, staff, secret, form.code.data, source_ip=client_ip())
        if ok:
            row.enrol_secret_enc = None
            token = staff_auth.advance_pending_signin(db.session, row, staff_auth.PENDING_SECOND_FACTOR)
            db.session.commit()
            _remember(token, staff)
            return _next_step(row, staff)
        db.session.commit()
        flash(_("The code does not match. Check the time on your phone and try the current code."), "error")
    uri = staff_auth.totp_uri(staff, secret)
    qr = segno.make(uri, error="m").svg_data_uri(scale=5, border=2)
    grouped = " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))
    return render_template("auth/enrol.html", form=form, staff=staff, qr=qr, secret=grouped)


@bp.route("/logout", methods=["POST"])
@requires()
def logout():
    row = g.get("staff_session")
    if current_user.is_authenticated and row is not None:
        staff_auth.end_session(db.session, row, "signout", actor=current_actor())
        db.session.commit()
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    flash(_("You have signed out."), "success")
    return redirect(url_for("auth.login"))


@bp.route("/language", methods=["POST"])
def set_language():
    lang = request.form.get("lang", "")
    if lang in current_app.config["LANGUAGES"]:
        session["lang"] = lang
    target = request.form.get("next")
    return redirect(target if is_safe_next(target) else url_for("home.index"))
