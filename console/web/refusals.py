"""A refused service call, answered as a page: the one place that maps a DomainError to HTML.

The boundary (console/boundary.py) has already rolled the work back and recorded the refusal.
Here: a reference that does not exist (or is out of scope) is the 404 page; an actor who may not
use the page at all is the 403 page; anything else is a message in the user's language on the
page the staff member came from (``g.refusal_back``, set by the view), which is where they can
correct it.
"""
from __future__ import annotations

from flask import current_app, flash, g, redirect, url_for
from flask_babel import gettext as _
from werkzeug import exceptions as http

from ..identity import ID_ERRORS
from ..services.errors import DomainError, Forbidden, NotFound
from .desk_labels import INPUT_ERRORS, REFUSALS


def message(exc: DomainError) -> str:
    reason = (exc.audit or {}).get("reason_code") or exc.message
    return str(REFUSALS.get(reason) or INPUT_ERRORS.get(reason) or ID_ERRORS.get(reason)
               or _("The request could not be completed."))


def come_back_to(url: str) -> None:
    """Where a refusal of this request is shown (the page holding the form that was sent)."""
    g.refusal_back = url


def as_403() -> None:
    """This request has no page to come back to (a PDF, say): a refusal is the 403 page."""
    g.refusal_back = None
    g.refusal_status = 403


def answer(exc: DomainError):
    if isinstance(exc, NotFound):
        return current_app.handle_http_exception(http.NotFound())
    if isinstance(exc, Forbidden) or g.get("refusal_status") == 403:
        return current_app.handle_http_exception(http.Forbidden())
    flash(message(exc), "error")
    return redirect(g.get("refusal_back") or url_for("home.index"))


def init_app(app) -> None:
    """Pages everywhere; the JSON APIs register their own mapping (console/api/common.py), which
    Flask prefers for their blueprints."""
    app.register_error_handler(DomainError, answer)
