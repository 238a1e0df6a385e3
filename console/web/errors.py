"""Error pages in the user's language; never a stack trace."""
from __future__ import annotations

from flask import current_app, render_template, request
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from .. import answers, ratelimits
from ..extensions import db

MESSAGES = {
    400: _l("The request could not be understood. Please go back and try again."),
    403: _l("Your role does not allow this. The attempt has been recorded."),
    404: _l("This page does not exist, or you may not see it."),
    405: _l("This action is not available here."),
    409: _l("This form was already sent and is still being processed. Wait a moment, then reload the page."),
    413: _l("The request is too large."),
    429: _l("Too many requests. Please wait a moment and try again."),
    500: _l("Something went wrong on our side. The error has been logged; please try again."),
}


API_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
             405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
             429: "rate_limited", 500: "internal_error"}


def _page(code: int, message=None):
    if request.path.startswith("/api/"):
        from ..api.common import error_response

        return error_response(code, API_CODES.get(code, "error"), str(message or MESSAGES.get(code, MESSAGES[400])))
    try:
        return render_template("error.html", code=code, message=message or MESSAGES.get(code, MESSAGES[400])), code
    except answers.DATABASE_ERRORS as exc:
        # Rendering the layout loads the signed-in user; with the database gone, say so plainly.
        return answers.database_error_answer(exc)


def init_app(app) -> None:
    from . import refusals

    refusals.init_app(app)

    @app.errorhandler(CSRFError)
    def _csrf(exc):
        return _page(400, _l("The form expired or was not sent from this console. Please reload the page and try again."))

    @app.errorhandler(HTTPException)
    def _http(exc):
        if exc.code == 429:
            _record_rate_limit()
            answer = current_app.make_response(_page(429))
            if answer.status_code == 429:  # not a 503 (the database went away) with its own Retry-After
                answer.headers["Retry-After"] = str(ratelimits.retry_after())
            return answer
        answer = _page(exc.code or 500)
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            # RFC 9110: a 405 names the methods the resource supports, on pages and JSON alike.
            answer = current_app.make_response(answer)
            answer.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return answer

    def _database_down(exc):
        # The database is unreachable (or went away mid-request): fail fast and cleanly, without
        # touching the database again to render the page (a 503, or the committed answer if the
        # work was committed before the failure: see console/answers.py). The pool reconnects by itself.
        return answers.database_error_answer(exc)

    for database_error in answers.DATABASE_ERRORS:
        app.register_error_handler(database_error, _database_down)

    @app.errorhandler(Exception)
    def _unexpected(exc):
        if answers.is_database_error(exc):  # e.g. raised while handling a database error
            return answers.database_error_answer(exc)
        try:
            db.session.rollback()
        except Exception:
            answers.reset_session()
        current_app.logger.exception("unhandled error: %s", type(exc).__name__)
        return _page(500)


def _record_rate_limit() -> None:
    """A staff member (or someone signing in as one) hit a rate limit: that is an audit event."""
    import re

    from flask import g

    from .. import boundary
    from .security import current_actor

    typed = request.form.get("employee_no", "") if request.mimetype == "application/x-www-form-urlencoded" else ""
    details = {"endpoint": request.endpoint, "path": request.path}
    if re.fullmatch(r"[A-Za-z0-9]{1,16}", typed or ""):
        details["employee_no"] = typed
    actor = current_actor(channel="api" if request.path.startswith("/api/v1") else "console")
    if request.path.startswith("/api/wallet"):
        return  # the wallet back end's customers are not staff; the limiter's own log line suffices
    boundary.refuse(actor, "rate_limited", reason_code="rate_limit", details=details)
    g.rate_limited = True
