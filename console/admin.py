"""Flask-Admin for the admin role (staff and branches) and the auditor's read-only audit browser,
in the console's own look (``templates/admin/console_master.html``). Built inside create_app.

Staff actions are offered per row, each through a page that names the account and says what will
happen, and in bulk with a confirmation that names every selected account. A new or reset
password is shown once, on a printable hand-over slip, and never logged.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import abort, flash, g, redirect, request, url_for
from flask_admin import Admin, AdminIndexView, expose
from flask_admin.actions import action
from flask_admin.contrib.sqla import ModelView
from flask_admin.helpers import get_redirect_target
from flask_admin.model.template import TemplateLinkRowAction
from flask_admin.theme import Bootstrap4Theme
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session
from wtforms.validators import DataRequired, Length, Regexp

from . import boundary, policy
from .extensions import db, login_manager
from .models.audit import AuditEvent
from .models.staff import Branch, Role, Staff
from .permissions import ADMIN_MANAGE, AUDIT_READ_ALL, can
from .services import passkeys, staff_admin
from .services.actor import Actor
from .services.errors import DomainError, NotAllowed
from .timeutil import format_local, utcnow
from .web import export_words
from .web.labels import BRANCH_KIND_LABELS, branch_kind_choices, role_choices
from .web.roles import ROLE_LABELS
from .web.security import current_actor, deny

ADMIN_ENDPOINT = "sysadmin"
TIME = "%Y-%m-%d %H:%M:%S"


def remember_one_time_secret(employee_no: str, password: str) -> None:
    """Keep an initial password for exactly one page view of this admin session (server-side)."""
    row = g.get("staff_session")
    if row is None:
        return
    boundary.step(staff_admin.keep_one_time_secret, row.id, employee_no, password)


def pop_one_time_secrets() -> list[tuple[str, str]]:
    row = g.get("staff_session")
    if row is None:
        return []
    return boundary.step(staff_admin.take_one_time_secrets, row.id)


def account_label(staff: Staff) -> str:
    """How pages and confirmations name an account: 王柜员（T1001）."""
    return _("%(name)s (%(employee_no)s)", name=staff.name, employee_no=staff.employee_no)


def handover_slips(waiting: list[tuple[str, str]]) -> list[dict]:
    """The printable hand-over slips for one-time passwords just issued: everything the new user
    needs (nothing masked), shown on this one page view only."""
    by_number = {row.employee_no: row for row in db.session.scalars(
        select(Staff).where(Staff.employee_no.in_([employee_no for employee_no, _pw in waiting])))}
    slips = []
    for employee_no, password in waiting:
        staff = by_number.get(employee_no)
        slips.append({
            "employee_no": employee_no, "password": password,
            "groups": [password[i:i + 4] for i in range(0, len(password), 4)],  # read out in fours
            "name": staff.name if staff else "", "role": ROLE_LABELS.get(staff.role, staff.role) if staff else "",
            "branch": staff.branch.name if staff and staff.branch else "",
        })
    return slips


class _Guarded:
    """Only holders of ``permission``; anyone else gets a 403 page and an audit event."""

    permission = ADMIN_MANAGE

    def is_accessible(self):
        return current_user.is_authenticated and can(current_user, self.permission)

    def inaccessible_callback(self, name, **kwargs):
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        deny(self.permission)


class GuardedIndexView(_Guarded, AdminIndexView):
    @expose("/")
    def index(self):
        return self.render("admin/console_index.html",
                           staff_count=db.session.scalar(select(db.func.count(Staff.id))),
                           branch_count=db.session.scalar(select(db.func.count(Branch.id))))


class AdminForm(FlaskForm):
    """CSRF-protected admin form that, like Flask-Admin's BaseForm, remembers the edited object.

    Flask-Admin's Unique validator needs ``_obj`` to tell "this record" from "another one".
    """

    def __init__(self, formdata=None, obj=None, prefix="", **kwargs):
        self._obj = obj
        super().__init__(formdata=formdata, obj=obj, prefix=prefix, **kwargs)


def _yes_no(value: bool, yes, no, *, good: bool = True) -> Markup:
    """A state in words (Flask-Admin draws booleans as bare icons)."""
    tone = ("ok" if value else "bad") if good else ("bad" if value else "muted")
    return Markup('<span class="state {}">{}</span>').format(tone, yes if value else no)


class AuditedModelView(_Guarded, ModelView):
    form_base_class = AdminForm
    list_template = "admin/console_list.html"
    details_template = "admin/console_details.html"
    can_delete = False  # staff and branches are referenced by the audit trail: disable, never delete
    can_export = False
    fast_mass_delete = False
    page_size = 50

    # Flask-Admin commits a create or an edit itself, after ``on_model_change`` (which queues the
    # audit event in the same transaction). A refusal raised there is rolled back by Flask-Admin;
    # ``handle_view_exception`` keeps it and the boundary records it on its own afterwards.

    def create_model(self, form):
        return self._then_record_refusal(super().create_model(form))

    def update_model(self, form, model):
        g.audit_before = self.snapshot(model)
        return self._then_record_refusal(super().update_model(form, model))

    def handle_view_exception(self, exc):
        if isinstance(exc, DomainError):
            g.admin_refusal = exc
            if isinstance(exc, NotAllowed):
                flash(refusal_message(exc), "error")
                return True
        return super().handle_view_exception(exc)

    @staticmethod
    def _then_record_refusal(result):
        refusal = g.pop("admin_refusal", None)
        if refusal is not None:
            boundary.refused(current_actor(), refusal)
        return result

    def row_label(self, row) -> str:
        """How a row's checkbox names the record to a screen reader."""
        return str(row)


def refusal_message(exc: DomainError) -> str:
    reason = (exc.audit or {}).get("reason_code")
    if reason == "own_account":
        return _("You cannot disable your own account or change your own role.")
    if reason == "not_permitted":
        return _("Your role does not allow this. The attempt has been recorded.")
    return _("Nothing was changed: the action was refused.")


# --- staff actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaffAction:
    """One thing an administrator does to a staff account, per row or in bulk."""

    name: str
    label: str  # lazy: the link, the button
    consequence: str  # lazy: what happens, said before it does
    done: str  # lazy, with %(accounts)s: said after it did
    run: Callable[[Session, Actor, Staff], str | None]  # returns a one-time password, if it issues one
    applies: Callable[[Staff, int | None], bool]  # (account, the acting admin's staff id)
    danger: bool = False


def _locked(staff: Staff) -> bool:
    return bool(staff.failed_signins) or (staff.locked_until is not None and staff.locked_until > utcnow())


def _has_passkey(staff: Staff) -> bool:
    """Whether the account has an active security key: one query per request for every row."""
    if "staff_with_passkeys" not in g:
        g.staff_with_passkeys = passkeys.staff_with_passkeys(db.session)
    return staff.id in g.staff_with_passkeys


STAFF_ACTIONS: dict[str, StaffAction] = {a.name: a for a in (
    StaffAction("reset_password", _l("Reset password"),
                _l("A new one-time password is issued and shown to you once, on a hand-over slip to print. Every "
                   "session of the account ends at once; the new password must be changed at the first sign-in."),
                _l("Password reset for %(accounts)s. Hand over the slip below in person."),
                staff_admin.reset_staff_password,
                lambda s, me: bool(s.active) and not s.from_directory),
    StaffAction("reset_totp", _l("Reset authenticator"),
                _l("The authenticator app is unbound, every security key is revoked and every session ends. At the "
                   "next sign-in the staff member scans a new QR code."),
                _l("Authenticator reset for %(accounts)s."),
                staff_admin.reset_staff_totp, lambda s, me: bool(s.active) and s.totp_enrolled),
    StaffAction("revoke_keys", _l("Revoke security keys"),
                _l("Every security key of the account is revoked (a lost or stolen key) and every session ends. The "
                   "authenticator app stays; a role that must use a key enrols a new one at the next sign-in."),
                _l("Security keys revoked for %(accounts)s."),
                staff_admin.revoke_staff_passkeys, lambda s, me: bool(s.active) and _has_passkey(s)),
    StaffAction("unlock", _l("Unlock"),
                _l("The sign-in lock after wrong passwords ends and the failure count starts again from zero."),
                _l("Unlocked: %(accounts)s."),
                staff_admin.unlock_staff, lambda s, me: _locked(s)),
    StaffAction("enable", _l("Enable"),
                _l("The account can sign in again with its present password and authenticator."),
                _l("Enabled: %(accounts)s."),
                lambda session, actor, s: staff_admin.set_staff_active(session, actor, s, True),
                lambda s, me: not s.active),
    StaffAction("disable", _l("Disable"),
                _l("The account cannot sign in any more, and every session of it ends at once. Nothing is deleted: "
                   "its audit trail stays, and it can be enabled again."),
                _l("Disabled, every session ended: %(accounts)s."),
                lambda session, actor, s: staff_admin.set_staff_active(session, actor, s, False),
                lambda s, me: bool(s.active) and s.id != me, danger=True),
)}
BULK_ORDER = ("reset_password", "reset_totp", "unlock", "disable")  # the harmless first, disabling last


class ActionForm(FlaskForm):
    """The confirmation page's form: its CSRF token is all it carries."""


class StaffAdmin(AuditedModelView):
    column_list = ("employee_no", "name", "role", "branch", "active", "must_change_password",
                   "totp_secret_enc", "locked_until", "last_signin_at")
    # The account's source on its details page: one more list column crowded the sortable headers
    # under the bulk-actions menu below a 24 px touch target (tests/test_accessibility.py).
    column_details_list = (*column_list, "auth_source")
    column_labels = {
        "employee_no": _l("Employee number"), "name": _l("Name"), "role": _l("Role"),
        "branch": _l("Branch"), "active": _l("Status"), "must_change_password": _l("Must change password"),
        "totp_secret_enc": _l("Authenticator enrolled"), "locked_until": _l("Locked until (Beijing time)"),
        "last_signin_at": _l("Last sign-in (Beijing time)"), "auth_source": _l("Account source"),
    }
    column_formatters = {
        "auth_source": lambda v, c, m, p: _("Bank directory") if m.from_directory else _("Local account"),
        "role": lambda v, c, m, p: ROLE_LABELS.get(m.role, m.role),
        "branch": lambda v, c, m, p: m.branch.name if m.branch else "",
        "active": lambda v, c, m, p: _yes_no(m.active, _("Active"), _("Disabled")),
        "must_change_password": lambda v, c, m, p: _yes_no(m.must_change_password, _("yes"), _("no"), good=False),
        "locked_until": lambda v, c, m, p: (_("Locked until %(time)s", time=format_local(m.locked_until))
                                            if m.locked_until and m.locked_until > utcnow() else "—"),
        "last_signin_at": lambda v, c, m, p: format_local(m.last_signin_at) or "—",
        # Never the secret itself: only whether one is enrolled.
        "totp_secret_enc": lambda v, c, m, p: _("yes") if m.totp_enrolled else _("no"),
    }
    column_sortable_list = ("employee_no", "name", "role", "active", "last_signin_at")
    column_searchable_list = ("employee_no", "name")
    column_extra_row_actions = [TemplateLinkRowAction("row_actions.staff_actions", _l("Account actions"))]
    form_columns = ("employee_no", "name", "role", "branch", "active")
    form_choices = {"role": role_choices()}  # the words, not the codes
    form_args = {
        "employee_no": {"label": _l("Employee number"), "validators": [
            DataRequired(), Length(max=16), Regexp(r"^[A-Za-z0-9]+$", message=_l("Letters and digits only."))]},
        "name": {"label": _l("Name"), "validators": [DataRequired(), Length(max=80)]},
        "role": {"label": _l("Role")},
        "branch": {"label": _l("Branch"), "validators": [DataRequired()]},
        "active": {"label": _l("Active")},
    }

    snapshot = staticmethod(staff_admin.staff_snapshot)

    def row_label(self, row) -> str:
        return account_label(row)

    def row_actions_for(self, row) -> list[StaffAction]:
        """The per-row actions that make sense for this account now (its own can't be disabled)."""
        me = current_user.id if current_user.is_authenticated else None
        if row.id == me:
            return []  # one's own account: the sign-in pages change its password, nobody disables it here
        return [a for a in STAFF_ACTIONS.values() if a.applies(row, me)]

    def on_model_change(self, form, model, is_created):
        actor = current_actor()
        if is_created:
            staff_admin.validate_staff_fields(model.employee_no, model.name, model.role)
            g.one_time_password = staff_admin.prepare_new_staff(model)
            db.session.flush()
            staff_admin.record_staff_change(db.session, actor, model, None)
        else:
            before = g.pop("audit_before", None)
            if model.id == actor.staff_id and (not model.active or model.role != Role.admin.value):
                raise NotAllowed(_("You cannot disable your own account or change your own role."),
                                 audit={"action": "staff.update", "outcome": "denied", "reason_code": "own_account",
                                        "details": {"employee_no": model.employee_no}})
            staff_admin.record_staff_change(db.session, actor, model, before)

    def after_model_change(self, form, model, is_created):
        # Runs after the commit: only now is the password real. Shown once, never logged.
        if is_created and g.get("one_time_password"):
            remember_one_time_secret(model.employee_no, g.pop("one_time_password"))

    # --- one account at a time -----------------------------------------------------------------

    @expose("/account/<action_name>/", methods=("GET", "POST"))
    def account_action_view(self, action_name):
        """Confirm, then do, one action on one account: the page names the account and says what
        will happen; the POST (CSRF-checked) does it and goes back to the list."""
        chosen = STAFF_ACTIONS.get(action_name)
        staff_id = request.args.get("id", type=int)
        staff = db.session.get(Staff, staff_id) if staff_id and 0 < staff_id < 2**31 else None
        if chosen is None or staff is None:
            abort(404)
        back = get_redirect_target() or self.get_url(".index_view")
        if chosen not in self.row_actions_for(staff):
            flash(_("%(action)s does not apply to %(account)s as it is now.", action=chosen.label,
                    account=account_label(staff)), "warning")
            return redirect(back)
        form = ActionForm()
        if form.validate_on_submit():
            self._run(chosen, [staff])
            return redirect(back)
        return self.render("admin/staff_confirm.html", form=form, action=chosen, staff=staff,
                           account=account_label(staff), return_url=back,
                           role=ROLE_LABELS.get(staff.role, staff.role))

    def _run(self, chosen: StaffAction, rows: list[Staff]) -> None:
        def each(session, actor):
            return [(row, chosen.run(session, actor, row)) for row in rows]

        try:
            results = boundary.perform(current_actor(), each)
        except DomainError as exc:
            flash(refusal_message(exc), "error")
            return
        for row, secret in results:
            if secret:
                remember_one_time_secret(row.employee_no, secret)
        flash(chosen.done % {"accounts": _(", ").join(account_label(row) for row in rows)}, "success")

    # --- in bulk ------------------------------------------------------------------------------

    def get_actions_list(self):
        actions, confirmations = super().get_actions_list()
        return sorted(actions, key=lambda a: BULK_ORDER.index(a[0]) if a[0] in BULK_ORDER else 99), confirmations

    def _bulk(self, ids, name):
        numbers = [int(i) for i in ids if str(i).isdigit() and int(i) < 2**31]
        rows = db.session.scalars(select(Staff).where(Staff.id.in_(numbers)).order_by(Staff.employee_no)).all()
        chosen = STAFF_ACTIONS[name]
        # As per row: never one's own account, and only where the action applies now.
        skipped = [row for row in rows if chosen not in self.row_actions_for(row)]
        rows = [row for row in rows if row not in skipped]
        if skipped:
            flash(_("%(action)s does not apply to %(accounts)s as they are now; left out.", action=chosen.label,
                    accounts=_(", ").join(account_label(row) for row in skipped)), "warning")
        if rows:
            self._run(chosen, rows)

    # The confirmations name the selected accounts: admin-actions.js puts them in for {accounts}.
    @action("reset_password", _l("Reset password"),
            _l("Reset the passwords of {accounts}? Each gets a one-time password on a hand-over slip, and every "
               "session of theirs ends."))
    def action_reset_password(self, ids):
        self._bulk(ids, "reset_password")

    @action("reset_totp", _l("Reset authenticator"),
            _l("Unbind the authenticators of {accounts}? They set up a new one at the next sign-in."))
    def action_reset_totp(self, ids):
        self._bulk(ids, "reset_totp")

    @action("unlock", _l("Unlock"), _l("Unlock {accounts}?"))
    def action_unlock(self, ids):
        self._bulk(ids, "unlock")

    @action("disable", _l("Disable and end sessions"),
            _l("Disable {accounts}? They cannot sign in any more and every session of theirs ends at once."))
    def action_disable(self, ids):
        self._bulk(ids, "disable")


class BranchAdmin(AuditedModelView):
    column_list = ("code", "name", "kind", "active")
    column_labels = {"code": _l("Branch code"), "name": _l("Branch name"), "kind": _l("Kind"), "active": _l("Status")}
    column_formatters = {
        "kind": lambda v, c, m, p: BRANCH_KIND_LABELS.get(m.kind, m.kind),
        "active": lambda v, c, m, p: _yes_no(m.active, _("Active"), _("Inactive")),
    }
    column_searchable_list = ("code", "name")
    form_columns = ("code", "name", "kind", "active")
    form_choices = {"kind": branch_kind_choices()}
    form_args = {
        "code": {"label": _l("Branch code"), "validators": [
            DataRequired(), Length(max=16), Regexp(r"^[A-Za-z0-9-]+$", message=_l("Letters, digits and '-' only."))]},
        "name": {"label": _l("Branch name"), "validators": [DataRequired(), Length(max=120)]},
        "kind": {"label": _l("Kind")},
        "active": {"label": _l("Active")},
    }

    snapshot = staticmethod(staff_admin.branch_snapshot)

    def row_label(self, row) -> str:
        return f"{row.code} {row.name}"

    def on_model_change(self, form, model, is_created):
        db.session.flush()
        before = None if is_created else g.pop("audit_before", None)
        staff_admin.record_branch_change(db.session, current_actor(), model, before)


class AuditBrowserIndex(_Guarded, AdminIndexView):
    permission = AUDIT_READ_ALL

    def is_visible(self):
        return False  # it only leads to the events: the navigation lists them instead

    @expose("/")
    def index(self):
        return redirect(url_for("audit_browser_events.index_view"))


def _words(kind: str):
    return lambda v, c, m, p: export_words.words(kind, getattr(m, p)) or "—"


class AuditEventBrowser(_Guarded, ModelView):
    """Flask-Admin's read-only list over the audit table (the workbench search is faster), in the
    reader's words and Beijing time; the codes stay in the detail view and the exports."""

    permission = AUDIT_READ_ALL
    form_base_class = AdminForm
    list_template = "admin/console_list.html"
    details_template = "admin/console_details.html"
    can_create = can_edit = can_delete = False
    can_export = False
    can_view_details = True
    column_default_sort = ("seq", True)
    column_list = ("seq", "occurred_at", "actor_employee_no", "actor_role", "actor_branch", "channel", "action",
                   "outcome", "reason_code", "customer_ref", "case_ref")
    column_details_list = column_list + ("source_ip", "session_id", "before_state", "after_state", "details",
                                         "prev_hash", "hash")
    column_labels = {
        "seq": _l("Sequence number"), "occurred_at": _l("Time (Beijing)"), "actor_employee_no": _l("Actor"),
        "actor_role": _l("Role"), "actor_branch": _l("Branch"), "channel": _l("Channel"), "action": _l("Action"),
        "outcome": _l("Outcome"), "reason_code": _l("Reason"), "customer_ref": _l("Customer number"),
        "case_ref": _l("Case number"), "source_ip": _l("Source address"), "session_id": _l("Session"),
        "before_state": _l("Before"), "after_state": _l("After"), "details": _l("Details"),
        "prev_hash": _l("Previous hash"), "hash": _l("Hash"),
    }
    column_formatters = {
        "occurred_at": lambda v, c, m, p: format_local(m.occurred_at, TIME),
        "actor_employee_no": lambda v, c, m, p: m.actor_employee_no or export_words.words("actor_type", m.actor_type),
        "actor_role": _words("role"), "channel": _words("channel"), "outcome": _words("outcome"),
        "action": lambda v, c, m, p: Markup("{}<br><code class=\"code\">{}</code>").format(
            export_words.words("action", m.action), m.action),
        "reason_code": _words("reason"),
    }
    column_formatters_detail = {
        "occurred_at": lambda v, c, m, p: Markup("{} <span class=\"muted\">({} UTC)</span>").format(
            format_local(m.occurred_at, TIME), m.occurred_at.strftime(TIME)),
        "actor_role": _words("role"), "channel": _words("channel"), "outcome": _words("outcome"),
        "action": lambda v, c, m, p: Markup("{} <code>{}</code>").format(export_words.words("action", m.action),
                                                                         m.action),
        "reason_code": lambda v, c, m, p: Markup("{} <code>{}</code>").format(
            export_words.words("reason", m.reason_code), m.reason_code) if m.reason_code else "—",
    }
    column_searchable_list = ("action", "actor_employee_no", "customer_ref", "case_ref")
    page_size = 50

    def row_label(self, row) -> str:
        return _("Event %(seq)s", seq=row.seq)


def _theme() -> Bootstrap4Theme:
    return Bootstrap4Theme(base_template="admin/console_master.html")


def build_audit_browser(app) -> Admin:
    browser = Admin(
        app, name=_l("Audit browser"), url="/audit/browse", endpoint="audit_browser", theme=_theme(),
        index_view=AuditBrowserIndex(name=_l("Overview"), url="/audit/browse", endpoint="audit_browser"),
        csp_nonce_generator=lambda: g.get("csp_nonce", ""),
    )
    browser.add_view(AuditEventBrowser(AuditEvent, db, name=_l("Audit events"), endpoint="audit_browser_events"))
    return browser


def build_admin(app) -> Admin:
    admin = Admin(
        app,
        name=_l("Branch Console administration"),
        url="/admin",
        endpoint=ADMIN_ENDPOINT,
        theme=_theme(),
        index_view=GuardedIndexView(name=_l("Overview"), url="/admin", endpoint=ADMIN_ENDPOINT),
        csp_nonce_generator=lambda: g.get("csp_nonce", ""),
    )
    admin.add_view(StaffAdmin(Staff, db, name=_l("Staff"), endpoint="staff_admin"))
    admin.add_view(BranchAdmin(Branch, db, name=_l("Branches"), endpoint="branch_admin"))

    @app.context_processor
    def _one_time():
        if request.blueprint and request.blueprint.startswith(("staff_admin", ADMIN_ENDPOINT)):
            waiting = pop_one_time_secrets()
            if waiting:
                return {"handover_slips": handover_slips(waiting), "handover_issued_at": format_local(utcnow()),
                        "handover_min_length": policy.current().staff_signin.password_min_length}
        return {}
    return admin

