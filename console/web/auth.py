"""Staff sign-in pages: employee number + password, then TOTP (enrolled at first sign-in)."""
from __future__ import annotations

from urllib.parse import urlsplit

import segno
from flask import (Blueprint, current_app, flash, g, jsonify, redirect, render_template, request, session,
                   url_for)
from flask_babel import format_datetime
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Regexp

from .. import boundary, policy
from ..extensions import db, login_manager
from ..models.staff import PendingSignin, Staff
from ..passwords import STAFF_PASSWORD_MESSAGES
from ..services import passkeys, staff_auth
from .security import client_ip, current_actor, is_safe_next, requires

bp = Blueprint("auth", __name__, url_prefix="/auth")

TIMEOUT_MESSAGES = {
    "idle_timeout": _l("You were signed out after %(n)s minutes without activity. Please sign in again."),
    "absolute_timeout": _l("Your session reached its %(n)s-hour limit. Please sign in again."),
    "revoked": _l("Your session was ended by an administrator. Please sign in again."),
    "password_reset": _l("Your password was reset by an administrator. Please sign in again."),
    "totp_reset": _l("Your authenticator was reset by an administrator. Please sign in again."),
    "directory": _l("Your account was changed in the bank's directory, which ended your session. Please sign in again."),
    "keys_revoked": _l("Your security keys were revoked by an administrator. Please sign in again."),
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


def _timeout_message(reason: str) -> str:
    """Why the session ended, with the policy's numbers (messages without one ignore them)."""
    rules = policy.current().staff_signin
    numbers = {"idle_timeout": rules.idle_timeout_minutes, "absolute_timeout": rules.absolute_timeout_hours}
    return str(TIMEOUT_MESSAGES[reason]) % {"n": numbers.get(reason)}


def _return_to(target: str | None) -> str | None:
    """Where signing in may lead back to: a same-origin relative path (``is_safe_next``), never a
    sign-in page itself."""
    if not target or not is_safe_next(target):
        return None
    return None if urlsplit(target).path.startswith("/auth/") else target


def _came_from() -> str | None:
    """The page a form was sent from (the Referer, same origin only): a POST is not repeated after
    signing in, the page it came from is shown again."""
    referrer = urlsplit(request.referrer or "")
    if referrer.scheme not in ("http", "https") or referrer.netloc != request.host:
        return None
    return _return_to(referrer.path + (f"?{referrer.query}" if referrer.query else ""))


@login_manager.unauthorized_handler
def _unauthorized():
    reason = g.get("session_end_reason")
    if request.endpoint == "auth.keep_alive":  # the idle warning's script: it goes to sign-in itself
        return jsonify({"signed_in": False}), 401
    if reason in TIMEOUT_MESSAGES:
        flash(_timeout_message(reason), "warning")
    else:
        flash(_("Please sign in first."), "info")
    target = _return_to(request.full_path.rstrip("?")) if request.method == "GET" else _came_from()
    return redirect(url_for("auth.login", next=target))


# --- pending sign-in state (server-side; the cookie holds only a random token) ------------
#
# session["pending"] = {"token": <random>, "staff": <id>}: only the token counts, looked up by
# its digest in pending_signin (bound to the address, expiring, replaced at every step). The
# staff id is a hint for the rate limiter's key (console/ratelimits.py) and is never trusted here.

LOCKED_MESSAGE = _l("Too many failed attempts. This account is locked; try again later or ask an administrator to unlock it.")


def _pending() -> tuple[PendingSignin, Staff] | tuple[None, None]:
    state = session.get("pending")
    token = state.get("token") if isinstance(state, dict) else None
    row, reason = boundary.step(staff_auth.resolve_pending_signin, token, source_ip=client_ip())
    if row is None:
        if state is not None:
            session.pop("pending", None)
        if reason == "expired":
            flash(_("The sign-in took too long. Please start again."), "warning")
        return None, None
    return row, row.staff


def _remember(token: str, staff: Staff) -> None:
    session["pending"] = {"token": token, "staff": staff.id}


def _next_step(row: PendingSignin, staff: Staff):
    if staff.totp_enrolled and row.step != staff_auth.PENDING_SECOND_FACTOR:
        # A security key first, for whoever has one (console/web/passkeys.py); else the code.
        if passkeys.has_passkey(db.session, staff):
            return redirect(url_for("signin_key.present"))
        return redirect(url_for("auth.totp"))
    if staff.must_change_password:
        return redirect(url_for("auth.change_password"))
    if not staff.totp_enrolled:
        return redirect(url_for("auth.enrol"))
    if passkeys.key_required(staff) and not passkeys.has_passkey(db.session, staff):
        return redirect(url_for("signin_key.enrol_at_signin"))  # the policy's key, before anything else
    return _finish(row, staff)


def _finish(row: PendingSignin, staff: Staff):
    target = row.next_url
    lang = session.get("lang")
    session.clear()  # a brand-new session at every sign-in (no fixation)
    token, notice = boundary.step(staff_auth.finish_pending_signin, row, staff, source_ip=client_ip())
    session["sid"] = token
    session.permanent = True
    if lang:
        session["lang"] = lang
    if notice:
        flash(_("Your account was locked at %(time)s after %(n)s failed sign-in attempts. "
                "If that was not you, tell your administrator.",
                time=format_datetime(notice.locked_at, "yyyy-MM-dd HH:mm"), n=notice.failures), "warning")
    return redirect(_return_to(target) or url_for("home.index"))


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("home.index"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = _return_to(request.args.get("next", "")) or ""
    if form.validate_on_submit():
        result = boundary.step(staff_auth.check_password, form.employee_no.data, form.password.data,
                               source_ip=client_ip())
        if result.status == "ok":
            lang = session.get("lang")
            session.clear()
            if lang:
                session["lang"] = lang
            token = boundary.step(staff_auth.begin_pending_signin, result.staff, source_ip=client_ip(),
                                  next_url=_return_to(form.next.data))
            _remember(token, result.staff)
            row, staff = _pending()
            return _next_step(row, staff)
        if result.status == "unavailable":
            flash(_("The bank's directory is unavailable; try again shortly or ask the service desk."), "error")
        else:
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
    has_key = passkeys.has_passkey(db.session, staff)
    if has_key and passkeys.key_required(staff):
        return redirect(url_for("signin_key.present"))  # this role never signs in with the code alone
    form = TotpForm()
    if form.validate_on_submit():
        result = boundary.step(staff_auth.check_totp, staff, form.code.data, source_ip=client_ip())
        if result.status == "ok":
            token = boundary.step(staff_auth.advance_pending_signin, row, staff_auth.PENDING_SECOND_FACTOR)
            _remember(token, staff)
            return _next_step(row, staff)
        if result.status != "invalid" or staff_auth.account_refused(staff):
            # Failed for good (locked now, or the account can no longer sign in).
            boundary.step(staff_auth.end_pending_signin, row)
            session.pop("pending", None)
            if result.status == "locked":
                flash(LOCKED_MESSAGE, "error")
            return redirect(url_for("auth.login"))
        flash(_("The authenticator code is incorrect or was already used."), "error")
    return render_template("auth/totp.html", form=form, staff=staff, has_key=has_key)


@bp.route("/change-password", methods=["GET", "POST"])
def change_password():
    row, staff = _pending()
    if row is None:
        return redirect(url_for("auth.login"))
    if staff.totp_enrolled and row.step != staff_auth.PENDING_SECOND_FACTOR:
        return redirect(url_for("auth.totp"))
    if not staff.must_change_password:
        return _next_step(row, staff)
    min_length = policy.current().staff_signin.password_min_length
    form = ChangePasswordForm()
    if form.validate_on_submit():
        problems = boundary.step(staff_auth.change_own_password, staff, form.new_password.data,
                                 source_ip=client_ip())
        if not problems:
            token = boundary.step(staff_auth.advance_pending_signin, row)
            _remember(token, staff)
            flash(_("Your password was changed."), "success")
            return _next_step(row, staff)
        for code in problems:
            form.new_password.errors.append(STAFF_PASSWORD_MESSAGES[code] % {"n": min_length})
    return render_template("auth/change_password.html", form=form, staff=staff, min_length=min_length)


@bp.route("/enrol", methods=["GET", "POST"])
def enrol():
    row, staff = _pending()
    if row is None:
        return redirect(url_for("auth.login"))
    if staff.totp_enrolled or staff.must_change_password:
        return _next_step(row, staff)
    secret = boundary.step(staff_auth.enrolment_secret, row)
    form = TotpForm()
    if form.validate_on_submit():
        ok = boundary.step(staff_auth.enroll_totp, staff, secret, form.code.data, source_ip=client_ip())
        if ok:
            token = boundary.step(staff_auth.finish_enrolment, row)
            _remember(token, staff)
            return _next_step(row, staff)
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
        boundary.perform(current_actor(), staff_auth.sign_out, row)
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    flash(_("You have signed out."), "success")
    return redirect(url_for("auth.login"))


@bp.route("/keep-alive", methods=["POST"])
@requires()
def keep_alive():
    """The idle-timeout warning's "stay signed in" (console/static/console.js): a signed-in POST with
    its CSRF token is activity, as a page load is (the session loader records it); the answer says
    how long the session now has before the idle timeout."""
    return jsonify({"signed_in": True,
                    "idle_seconds": policy.current().staff_signin.idle_timeout_minutes * 60})


@bp.route("/language", methods=["POST"])
def set_language():
    lang = request.form.get("lang", "")
    if lang in current_app.config["LANGUAGES"]:
        session["lang"] = lang
    target = request.form.get("next")
    return redirect(target if is_safe_next(target) else url_for("home.index"))
