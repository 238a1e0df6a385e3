"""Flask-Admin for the admin role: staff and branches. Built inside create_app."""
from __future__ import annotations

from flask import flash, g, redirect, request, url_for
from flask_admin import Admin, AdminIndexView, expose
from flask_admin.actions import action
from flask_admin.contrib.sqla import ModelView
from flask_admin.theme import Bootstrap4Theme
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms.validators import DataRequired, Length, Regexp

from . import boundary
from .extensions import db, login_manager
from .models.audit import AuditEvent
from .models.staff import Branch, BranchKind, Role, Staff
from .permissions import ADMIN_MANAGE, AUDIT_READ_ALL, can
from .services import staff_admin
from .services.errors import DomainError, NotAllowed
from .timeutil import format_local
from .web.roles import ROLE_LABELS
from .web.security import current_actor, deny

ADMIN_ENDPOINT = "sysadmin"


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


class AuditedModelView(_Guarded, ModelView):
    form_base_class = AdminForm
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
                flash(exc.message, "error")
                return True
        return super().handle_view_exception(exc)

    @staticmethod
    def _then_record_refusal(result):
        refusal = g.pop("admin_refusal", None)
        if refusal is not None:
            boundary.refused(current_actor(), refusal)
        return result


class StaffAdmin(AuditedModelView):
    column_list = ("employee_no", "name", "role", "branch", "active", "must_change_password",
                   "totp_secret_enc", "locked_until", "last_signin_at")
    column_details_list = column_list
    column_labels = {
        "employee_no": _l("Employee number"), "name": _l("Name"), "role": _l("Role"),
        "branch": _l("Branch"), "active": _l("Active"), "must_change_password": _l("Must change password"),
        "totp_secret_enc": _l("Authenticator enrolled"), "locked_until": _l("Locked until"),
        "last_signin_at": _l("Last sign-in"),
    }
    column_formatters = {
        "role": lambda v, c, m, p: ROLE_LABELS.get(m.role, m.role),
        "locked_until": lambda v, c, m, p: format_local(m.locked_until),
        "last_signin_at": lambda v, c, m, p: format_local(m.last_signin_at),
        # Never the secret itself: only whether one is enrolled.
        "totp_secret_enc": lambda v, c, m, p: _("yes") if m.totp_enrolled else _("no"),
    }
    column_sortable_list = ("employee_no", "name", "role", "active", "last_signin_at")
    column_searchable_list = ("employee_no", "name")
    form_columns = ("employee_no", "name", "role", "branch", "active")
    form_choices = {"role": [(r.value, r.value) for r in Role]}
    form_args = {
        "employee_no": {"label": _l("Employee number"), "validators": [
            DataRequired(), Length(max=16), Regexp(r"^[A-Za-z0-9]+$", message=_l("Letters and digits only."))]},
        "name": {"label": _l("Name"), "validators": [DataRequired(), Length(max=80)]},
        "role": {"label": _l("Role")},
        "branch": {"label": _l("Branch"), "validators": [DataRequired()]},
        "active": {"label": _l("Active")},
    }

    snapshot = staticmethod(staff_admin.staff_snapshot)

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

    def _bulk(self, ids, operation, done_message):
        rows = db.session.scalars(select(Staff).where(Staff.id.in_([int(i) for i in ids]))).all()

        def each(session, actor):
            return [(row, operation(session, actor, row)) for row in rows]

        try:
            results = boundary.perform(current_actor(), each)
        except DomainError as exc:
            flash(exc.message, "error")
            return
        for row, secret in results:
            if secret:
                remember_one_time_secret(row.employee_no, secret)
        flash(done_message % {"n": len(rows)}, "success")

    @action("reset_password", _l("Reset password"),
            _l("Issue new one-time passwords and end their sessions?"))
    def action_reset_password(self, ids):
        self._bulk(ids, staff_admin.reset_staff_password, _("Password reset for %(n)s staff."))

    @action("reset_totp", _l("Reset authenticator"),
            _l("Unbind their authenticators? They enrol again at next sign-in."))
    def action_reset_totp(self, ids):
        self._bulk(ids, staff_admin.reset_staff_totp, _("Authenticator reset for %(n)s staff."))

    @action("unlock", _l("Unlock"), _l("Unlock the selected accounts?"))
    def action_unlock(self, ids):
        self._bulk(ids, staff_admin.unlock_staff, _("%(n)s accounts unlocked."))

    @action("disable", _l("Disable and end sessions"),
            _l("Disable the selected accounts? Every session of theirs ends at once."))
    def action_disable(self, ids):
        self._bulk(ids, lambda s, a, row: staff_admin.set_staff_active(s, a, row, False),
                   _("%(n)s accounts disabled."))


class BranchAdmin(AuditedModelView):
    column_list = ("code", "name", "kind", "active")
    column_labels = {"code": _l("Branch code"), "name": _l("Name"), "kind": _l("Kind"), "active": _l("Active")}
    column_searchable_list = ("code", "name")
    form_columns = ("code", "name", "kind", "active")
    form_choices = {"kind": [(k.value, k.value) for k in BranchKind]}
    form_args = {
        "code": {"label": _l("Branch code"), "validators": [
            DataRequired(), Length(max=16), Regexp(r"^[A-Za-z0-9-]+$", message=_l("Letters, digits and '-' only."))]},
        "name": {"label": _l("Name"), "validators": [DataRequired(), Length(max=120)]},
        "kind": {"label": _l("Kind")},
        "active": {"label": _l("Active")},
    }

    snapshot = staticmethod(staff_admin.branch_snapshot)

    def on_model_change(self, form, model, is_created):
        db.session.flush()
        before = None if is_created else g.pop("audit_before", None)
        staff_admin.record_branch_change(db.session, current_actor(), model, before)


class AuditBrowserIndex(_Guarded, AdminIndexView):
    permission = AUDIT_READ_ALL

    @expose("/")
    def index(self):
        return redirect(url_for("audit_browser_events.index_view"))


class AuditEventBrowser(_Guarded, ModelView):
    """Flask-Admin's stock, read-only list over the audit table (the workbench search is faster)."""

    permission = AUDIT_READ_ALL
    form_base_class = AdminForm
    can_create = can_edit = can_delete = False
    can_export = False
    can_view_details = True
    column_default_sort = ("seq", True)
    column_list = ("seq", "occurred_at", "actor_employee_no", "actor_role", "actor_branch", "channel", "action",
                   "outcome", "reason_code", "customer_ref", "case_ref")
    column_details_list = column_list + ("source_ip", "session_id", "before_state", "after_state", "details",
                                         "prev_hash", "hash")
    column_searchable_list = ("action", "actor_employee_no", "customer_ref", "case_ref")
    page_size = 50


def build_audit_browser(app) -> Admin:
    browser = Admin(
        app, name=_l("Audit browser"), url="/audit/browse", endpoint="audit_browser",
        theme=Bootstrap4Theme(base_template="admin/console_master.html"),
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
        theme=Bootstrap4Theme(base_template="admin/console_master.html"),
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
                return {"one_time_secrets": waiting}
        return {}
    return admin
