"""Security keys (passkeys) on the console: the staff member's own keys page, and the sign-in steps
that present a key in place of the authenticator code (or enrol one when the policy requires it).

The ceremonies' options are rendered into the page (``data-options``) with a challenge kept
server-side; console/static/passkeys.js runs the browser's ceremony and sends its answer back
in an ordinary form, with its CSRF token. Pages work as forms; there is no JSON endpoint.
"""
from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from .. import boundary, policy
from ..extensions import db
from ..services import passkeys, staff_auth
from ..services.actor import Actor
from ..services.errors import Conflict, InvalidInput
from .auth import LOCKED_MESSAGE, _next_step, _pending, _remember
from .security import GUARDED_BLUEPRINTS, client_ip, current_actor, requires

# The staff member's own keys (signed in).
bp = Blueprint("keys", __name__, url_prefix="/profile/keys")
# Sign-in steps: every view needs a live pending sign-in (the password step passed, same address,
# not expired), checked in before_request like a guarded blueprint's session.
signin_bp = Blueprint("signin_key", __name__, url_prefix="/auth/key")
GUARDED_BLUEPRINTS.add(signin_bp.name)

REFUSALS = {
    "challenge_invalid": _l("The request to your security key expired or was already answered. Please try again."),
    "passkey_unknown": _l("This security key is not enrolled for your account. Use one listed on your keys page."),
    "passkey_other_staff": _l("This security key is not enrolled for your account. Use one listed on your keys page."),
    "passkey_revoked": _l("This security key was revoked. Use another key or ask your administrator."),
    "assertion_invalid": _l("The security key's answer could not be verified (a PIN or fingerprint is required). "
                            "Please try again."),
    "sign_count_regression": _l("This security key's counter went backwards, which can mean the key was copied. "
                                "It was refused; tell your administrator."),
    "registration_invalid": _l("The new security key's answer could not be verified (a PIN or fingerprint is "
                               "required). Please try again."),
    "already_enrolled": _l("This security key is already enrolled."),
    "too_many_keys": _l("You have %(n)s security keys, the most allowed. Revoke one first."),
}
NAME_MESSAGE = _l("Give the key a name of at most %(n)s characters, such as \"YubiKey, desk drawer\".")


def _refusal(reason: str) -> str:
    return str(REFUSALS.get(reason, REFUSALS["assertion_invalid"])) % {"n": passkeys.MAX_KEYS}


class KeyAnswerForm(FlaskForm):
    """The browser's answer (JSON, base64url fields), put in by passkeys.js."""

    credential = HiddenField(validators=[DataRequired(), Length(max=passkeys.MAX_ANSWER_CHARS)])


class NewKeyForm(KeyAnswerForm):
    """A key enrolled at sign-in, right after the password and the authenticator code."""
    name = StringField(_l("Name of the key"), validators=[
        DataRequired(message=NAME_MESSAGE), Length(max=passkeys.NAME_MAX, message=NAME_MESSAGE)])


class EnrolKeyForm(NewKeyForm):
    """A key added from the profile, in a session that may have been left open."""
    # A key added to an account can later authorise as it (at the counter, too): whoever adds one
    # proves it is the account's owner now, not only someone at its signed-in screen.
    password = PasswordField(_l("Your password"), validators=[
        DataRequired(message=_l("Enter your password to add a key.")), Length(max=256)])


class RenameKeyForm(FlaskForm):
    name = StringField(_l("New name"), validators=[
        DataRequired(message=NAME_MESSAGE), Length(max=passkeys.NAME_MAX, message=NAME_MESSAGE)])


class RevokeKeyForm(FlaskForm):
    """Its CSRF token is all it carries."""


def _served_from_an_origin() -> bool:
    """Whether this page's address is one the keys are valid for (browsers refuse anywhere else,
    e.g. at http://127.0.0.1:5000 when the relying party is localhost)."""
    return request.host_url.rstrip("/") in policy.current().staff_signin.relying_party.origins


def _page_context() -> dict:
    rp = policy.current().staff_signin.relying_party
    return {"origin_ok": _served_from_an_origin(), "key_address": rp.origins[0] if rp.origins else "",
            "name_max": passkeys.NAME_MAX}


def _name_errors(form) -> None:
    form.name.errors = [str(NAME_MESSAGE) % {"n": passkeys.NAME_MAX}]


# --- the staff member's own keys -----------------------------------------------------------------


def _session_context() -> str:
    row = g.get("staff_session")
    return f"session:{row.public_id}" if row else "session:"


@bp.route("/", methods=["GET"])
@requires()
def index():
    return _keys_page(EnrolKeyForm(formdata=None))


def _keys_page(form: EnrolKeyForm, status: int = 200):
    staff = current_user
    options = boundary.step(passkeys.begin_registration, staff, context=_session_context())
    keys = passkeys.passkeys_of(db.session, staff)
    return render_template("auth/keys.html", form=form, keys=keys, options=options,
                           required=passkeys.key_required(staff), max_keys=passkeys.MAX_KEYS,
                           rename_form=RenameKeyForm(formdata=None), revoke_form=RevokeKeyForm(formdata=None),
                           **_page_context()), status


@bp.route("/", methods=["POST"])
@requires()
def enrol():
    form = EnrolKeyForm()
    if not form.validate_on_submit():
        if form.name.errors:
            _name_errors(form)
        elif form.errors:
            flash(_refusal("registration_invalid"), "error")
        return _keys_page(form, 400)
    confirmed = boundary.step(staff_auth.confirm_password, current_user, form.password.data, actor=current_actor())
    if confirmed.status != "ok":
        form.password.errors = [_("The password is not right. Each failed try counts towards your account's lock.")]
        return _keys_page(form, 400)
    try:
        result = boundary.perform(current_actor(), passkeys.finish_registration, current_user, form.credential.data,
                                  name=form.name.data, context=_session_context())
    except InvalidInput:
        _name_errors(form)
        return _keys_page(form, 400)
    if result.refusal:
        flash(_refusal(result.refusal), "error")
        return _keys_page(form, 400)
    flash(_("Security key \"%(name)s\" enrolled. You can sign in with it in place of the authenticator code.",
            name=result.passkey.name), "success")
    return redirect(url_for("keys.index"))


@bp.route("/<int:key_id>/name", methods=["POST"])
@requires()
def rename(key_id: int):
    form = RenameKeyForm()
    if not form.validate_on_submit():
        flash(str(NAME_MESSAGE) % {"n": passkeys.NAME_MAX}, "error")
        return redirect(url_for("keys.index"))
    try:
        key = boundary.perform(current_actor(), passkeys.rename, key_id, form.name.data)
    except (InvalidInput, Conflict) as exc:
        flash(str(NAME_MESSAGE) % {"n": passkeys.NAME_MAX} if isinstance(exc, InvalidInput)
              else _refusal("passkey_revoked"), "error")
        return redirect(url_for("keys.index"))
    flash(_("The key is now called \"%(name)s\".", name=key.name), "success")
    return redirect(url_for("keys.index"))


@bp.route("/<int:key_id>/revoke", methods=["POST"])
@requires()
def revoke(key_id: int):
    if not RevokeKeyForm().validate_on_submit():
        flash(_("The form expired. Please try again."), "error")
        return redirect(url_for("keys.index"))
    try:
        key = boundary.perform(current_actor(), passkeys.revoke, key_id)
    except Conflict as exc:
        if exc.message == "last_required_key":
            flash(_("Your role signs in with a security key: enrol another key before you revoke this one, or ask "
                    "your administrator."), "error")
        else:
            flash(_refusal("passkey_revoked"), "error")
        return redirect(url_for("keys.index"))
    flash(_("Security key \"%(name)s\" revoked: it can no longer sign in.", name=key.name), "success")
    return redirect(url_for("keys.index"))


# --- sign-in: a key in place of the authenticator code --------------------------------------------


@signin_bp.before_request
def _needs_pending_signin():
    if current_user.is_authenticated:
        return redirect(url_for("home.index"))
    row, staff = _pending()
    if row is None:
        return redirect(url_for("auth.login"))
    g.pending_signin = (row, staff)
    return None


def _signin_context(row) -> str:
    """The pending sign-in the challenge belongs to (its id, and its start: ids may be reused)."""
    return f"pending:{row.id}:{int(row.created_at.timestamp())}"


def _actor(staff) -> Actor:
    return Actor.for_staff(staff, source_ip=client_ip())


@signin_bp.route("", methods=["GET", "POST"])
def present():
    row, staff = g.pending_signin
    if row.step == staff_auth.PENDING_SECOND_FACTOR or not staff.totp_enrolled:
        return _next_step(row, staff)
    form = KeyAnswerForm()
    if form.validate_on_submit():
        result = boundary.step(passkeys.verify_assertion, staff, passkeys.SIGNIN, _signin_context(row),
                               form.credential.data, actor=_actor(staff))
        if result.ok:
            token = boundary.step(staff_auth.advance_pending_signin, row, staff_auth.PENDING_SECOND_FACTOR)
            _remember(token, staff)
            return _next_step(row, staff)
        if result.locked or staff_auth.account_refused(staff):
            boundary.step(staff_auth.end_pending_signin, row)
            session.pop("pending", None)
            if result.locked:
                flash(LOCKED_MESSAGE, "error")
            return redirect(url_for("auth.login"))
        flash(_refusal(result.refusal), "error")
    elif form.is_submitted():
        flash(_("The form expired. Please try again."), "error")
    options = boundary.step(passkeys.begin_assertion, staff, passkeys.SIGNIN, _signin_context(row))
    if options is None:  # no active key (revoked meanwhile): the authenticator code it is
        return redirect(url_for("auth.totp"))
    return render_template("auth/key.html", form=form, staff=staff, options=options,
                           totp_allowed=not passkeys.key_required(staff), **_page_context())


@signin_bp.route("/enrol", methods=["GET", "POST"])
def enrol_at_signin():
    """The policy requires a key of this role and there is none yet: after the authenticator code
    (this one time), the staff member enrols a key before the session starts."""
    row, staff = g.pending_signin
    if (row.step != staff_auth.PENDING_SECOND_FACTOR or not passkeys.key_required(staff)
            or passkeys.has_passkey(db.session, staff)):
        return _next_step(row, staff)
    form = NewKeyForm()
    if form.validate_on_submit():
        try:
            result = boundary.step(passkeys.finish_registration, _actor(staff), staff, form.credential.data,
                                   name=form.name.data, context=_signin_context(row))
        except InvalidInput:
            _name_errors(form)
        else:
            if result.refusal is None:
                flash(_("Security key \"%(name)s\" enrolled. Sign in with it from now on.", name=result.passkey.name),
                      "success")
                return _next_step(row, staff)
            flash(_refusal(result.refusal), "error")
    elif form.name.errors:
        _name_errors(form)
    options = boundary.step(passkeys.begin_registration, staff, context=_signin_context(row))
    return render_template("auth/key_enrol.html", form=form, staff=staff, options=options, **_page_context())


def init_app(app) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(signin_bp)
