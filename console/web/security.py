"""Security baseline for every response (DESIGN.md section 9) and the session loader."""
from __future__ import annotations

import secrets
from datetime import timedelta
from functools import wraps
from urllib.parse import urlsplit

from flask import abort, current_app, g, request, session
from flask_login import current_user

from .. import boundary
from ..extensions import db, login_manager
from ..permissions import can
from ..services import staff_auth
from ..services.actor import Actor
from ..timeutil import utcnow

# Endpoints reachable without signing in. Everything else is guarded; a test walks the URL map.
PUBLIC_ENDPOINTS = frozenset({
    "static", "auth.login", "auth.totp", "auth.enrol", "auth.change_password", "auth.set_language",
    "wallet_api.openapi", "staff_api.openapi", "staff_api.issue_token", "receipt_check.check",
    "ops.healthz", "ops.readyz",
})
# Blueprints whose every view is behind a guard: the wallet API's is its service key, the
# staff API's its bearer token (both in their own before_request).
GUARDED_BLUEPRINTS: set[str] = {"wallet_api", "staff_api"}
TOUCH_EVERY = timedelta(seconds=30)


def client_ip() -> str | None:
    return request.remote_addr


def current_actor(channel: str = "console") -> Actor:
    if current_user and current_user.is_authenticated:
        row = g.get("staff_session")
        return Actor.for_staff(current_user, source_ip=client_ip(),
                               session_id=row.public_id if row else None, channel=channel)
    return Actor.anonymous(source_ip=client_ip(), channel=channel)


def deny(permission: str | None = None, *, reason: str = "not_permitted"):
    """Refuse the request: an audit event of its own, then a 403 page."""
    boundary.refuse(current_actor(), "access.denied", reason_code=reason,
                    details={"endpoint": request.endpoint, "method": request.method,
                             "path": request.path, "permission": permission})
    abort(403)


def guard_blueprint(bp, permission: str | None = None) -> None:
    """Require a signed-in staff member (holding ``permission``) for every view of ``bp``."""
    GUARDED_BLUEPRINTS.add(bp.name)

    @bp.before_request
    def _guard():
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        if permission and not can(current_user, permission):
            deny(permission)


def requires(permission: str | None = None):
    """View decorator: a signed-in staff member, holding ``permission`` when one is named."""
    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if permission and not can(current_user, permission):
                deny(permission)
            return view(*args, **kwargs)
        wrapper.guarded = True
        return wrapper
    return decorator


def is_safe_next(target: str | None) -> bool:
    """Only same-site relative paths may be redirected to after sign-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return False
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return False  # CR/LF would split the Location header
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


def _load_staff_from_session(_request):
    token = session.get("sid")
    if not token:
        return None
    row, reason = staff_auth.resolve_session(db.session, token)
    if row is None:
        session.pop("sid", None)
        if reason:
            g.session_end_reason = reason
            boundary.commit_now()  # the timeout's audit event
        return None
    if utcnow() - row.last_seen_at >= TOUCH_EVERY:
        staff_auth.touch_session(row)
        boundary.commit_now()
    g.staff_session = row
    g.staff_id = row.staff_id
    return row.staff


def _security_headers(response):
    nonce = g.get("csp_nonce", "")
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; "
        f"script-src 'self' 'nonce-{nonce}'; "
        f"style-src 'self' 'nonce-{nonce}'; "
        "img-src 'self' data:; font-src 'self'; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if current_app.config.get("HSTS"):
        response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    if request.endpoint != "static" and not (request.endpoint or "").endswith(".static"):
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    return response


def init_app(app) -> None:
    login_manager.request_loader(_load_staff_from_session)
    login_manager.user_loader(lambda _id: None)  # identity comes from the server-side session only
    login_manager.login_view = "auth.login"
    login_manager.session_protection = None  # sessions are server-side rows, renewed at sign-in

    @app.before_request
    def _nonce():
        g.csp_nonce = secrets.token_urlsafe(16)

    app.after_request(_security_headers)

    @app.context_processor
    def _ctx():
        return {"csp_nonce": g.get("csp_nonce", ""), "can": can}
