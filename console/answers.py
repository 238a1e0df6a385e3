"""Answers that tell the truth: what a request answers when the database fails.

The rule:

- **A 503 means "nothing was committed; try again".** A database error at any point of a
  request (a ``before_request`` hook such as the session or token loader, the view, an
  ``after_request`` hook, an error handler, or the teardown that rolls back and returns the
  connection) is answered 503, with a ``Retry-After``, the ``X-Request-ID`` and, under
  ``/api/``, the one JSON error shape (``{"error": {"code": "unavailable", "message", "request_id"}}``);
  never a 500. An unexpected exception that is not a database error is still a 500.
- **Once the work is committed, the answer is the committed answer.** A state-changing view
  builds its answer *before* the commit that carries its work, and stages it (:func:`stage`);
  the commit is the last database action of the request. If that COMMIT succeeds, the staged
  answer becomes the request's *committed answer*, and any failure after it (a connection
  dropped at teardown, a later query) answers with it instead of a 503, so a client is never
  told to retry work that was done. (A COMMIT whose connection drops before the server's reply
  is in doubt: it is answered 503, and only an Idempotency-Key makes the retry safe.)

To make the second half hold, the desk and the JSON APIs defer their commits (:func:`defer`,
``console.boundary.commit``): services flush, the view returns its answer, and ``console.web.once.finish``
stages the answer (with its idempotency record) and commits once. The wallet sign-in stages
its answer inside the lockout engine's final transaction instead.

To make the first half hold, :class:`ConsoleFlask` settles the request's database session
(runs the teardown) *before* the answer is handed to the WSGI server; Flask would run it after,
when a failure can only become the server's own 500.
"""
from __future__ import annotations

import logging
import re
import sqlite3
import sys
import time
import uuid
from itertools import chain

from flask import Flask, current_app, g, has_app_context, has_request_context, request
from flask.signals import appcontext_tearing_down, request_tearing_down
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")
ENV_REQUEST_ID = "console.request_id"
ENV_STARTED = "console.request_started"
_SKIP_REQUEST_TEARDOWN = "console.request_torn_down"
_STAGED = "console.staged_answer"
_UNSET = object()


def _database_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [sa_exc.DBAPIError, sa_exc.PendingRollbackError, sa_exc.TimeoutError,
                                        sa_exc.DisconnectionError, sqlite3.Error]
    try:
        import psycopg

        types.append(psycopg.Error)
    except ImportError:  # pragma: no cover - psycopg is in requirements.txt
        pass
    return tuple(types)


DATABASE_ERRORS = _database_error_types()


def is_database_error(exc: BaseException | None) -> bool:
    """A database error, or an error raised while handling one (its cause or context)."""
    for _depth in range(5):
        if exc is None:
            return False
        if isinstance(exc, DATABASE_ERRORS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def request_id() -> str:
    if not has_request_context():
        return ""
    return g.get("request_id") or request.environ.get(ENV_REQUEST_ID, "")


# --- deferred commits and the committed answer ---------------------------------------------------


def defer() -> None:
    """From now on this request's work is committed once, with its answer (``console.web.once.finish``)."""
    g.defer_commit = True


def stage(response) -> None:
    """``response`` answers the work of the current transaction: it is the committed answer once
    (and only if) that transaction commits."""
    from .extensions import db

    db.session.info[_STAGED] = response


def committed_answer():
    """The answer whose work this request has committed, if any."""
    if not has_app_context():
        return None
    return g.get("committed_answer")


def _after_commit(session: Session) -> None:
    response = session.info.pop(_STAGED, None)
    if response is not None and has_app_context():
        g.committed_answer = response


def _after_rollback(session: Session, *args) -> None:
    session.info.pop(_STAGED, None)


def install_hooks() -> None:
    if not event.contains(Session, "after_commit", _after_commit):
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_soft_rollback", _after_rollback)


# --- the 503 -----------------------------------------------------------------------------------------


def reset_session() -> None:
    """Give the request's session back without trusting the connection under it."""
    from .extensions import db

    try:
        db.session.rollback()
    except Exception:  # the connection is gone
        pass
    try:
        db.session.remove()
    except Exception:  # the pool invalidates the connection; nothing more to do
        pass


def unavailable_response():
    """The 503: JSON under /api/, else the static page (no context processors: they query)."""
    rid = request_id()
    if request.path.startswith("/api/"):
        from .api.common import error_response

        response = error_response(503, "unavailable", "The service is temporarily unavailable; nothing was changed. "
                                                      "Try again.")
    else:
        page = current_app.jinja_env.get_template("unavailable.html").render(request_id=rid)
        response = current_app.response_class(page, status=503, mimetype="text/html")
    response.headers["Retry-After"] = str(current_app.config.get("UNAVAILABLE_RETRY_AFTER_SECONDS", 5))
    response.headers["X-Request-ID"] = rid
    response.headers["Cache-Control"] = "no-store"
    return response


def database_error_answer(exc: BaseException):
    """What a request answers when ``exc`` (a database error) reached it: its committed answer
    if its work was committed before the failure, else a 503."""
    reset_session()
    orig = getattr(exc, "orig", None)
    answer = committed_answer()
    if answer is not None:
        log.warning("database error after the work was committed (%s): answering with the committed answer",
                    type(orig or exc).__name__)
        return answer
    log.error("database unavailable: %s", type(orig or exc).__name__)
    return unavailable_response()


# --- the application class -------------------------------------------------------------------------


def new_request_id(incoming: str) -> str:
    return incoming if REQUEST_ID.match(incoming or "") else uuid.uuid4().hex


class ConsoleFlask(Flask):
    """Flask, with the request's database settled before its answer leaves (see the module doc),
    and a configuration that tells the policy when it changed (``console.policy.Config``)."""

    from .policy import Config as config_class

    def wsgi_app(self, environ, start_response):
        environ[ENV_REQUEST_ID] = new_request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        environ[ENV_STARTED] = time.perf_counter()
        owns_app_context = not (has_app_context() and current_app._get_current_object() is self)
        ctx = self.request_context(environ)
        error: BaseException | None = None
        try:
            try:
                ctx.push()
                g.request_id = environ[ENV_REQUEST_ID]
                response = self.full_dispatch_request()
            except Exception as e:
                error = e
                response = self.handle_exception(e)
            except:  # noqa: E722 (as Flask: let KeyboardInterrupt and friends through)
                error = sys.exc_info()[1]
                raise
            response = self._settle(response, error, owns_app_context)
            return response(environ, start_response)
        finally:
            if "werkzeug.debug.preserve_context" in environ:  # pragma: no cover - the debugger only
                from flask.globals import _cv_app, _cv_request

                environ["werkzeug.debug.preserve_context"](_cv_app.get())
                environ["werkzeug.debug.preserve_context"](_cv_request.get())
            if error is not None and self.should_ignore_error(error):
                error = None
            ctx.pop(error)

    def handle_exception(self, e: Exception):
        """An exception no handler answered (raised by an ``after_request`` hook or an error handler):
        a database error is a 503 (or the committed answer), never Flask's 500."""
        if is_database_error(e):
            return self.finalize_request(database_error_answer(e), from_error_handler=True)
        return super().handle_exception(e)

    def _settle(self, response, error, owns_app_context):
        """Release what the request holds, run the teardown (it rolls back and returns the
        connection), and only then let the answer go: a database failure here is still a 503."""
        from .observability import log_request
        from .web import once

        once.release_unanswered()
        try:
            self._teardown_now(error, owns_app_context)
        except Exception as exc:
            if not is_database_error(exc):
                log.exception("teardown failed: %s", type(exc).__name__)
                raise
            if committed_answer() is not None and response.status_code < 500:
                log.warning("database error at teardown after the work was committed (%s)", type(exc).__name__)
            else:
                log.error("database unavailable at teardown: %s", type(exc).__name__)
                response = self._late_unavailable()
        log_request(response)
        return response

    def _teardown_now(self, error, owns_app_context) -> None:
        request.environ[_SKIP_REQUEST_TEARDOWN] = True  # ctx.pop() must not run them again
        try:
            self._teardown_request(error)
        finally:
            if owns_app_context:
                g._console_app_torn_down = True
                self._teardown_appcontext(error)

    def _late_unavailable(self):
        reset_session()
        response = unavailable_response()
        for func in reversed(self.after_request_funcs.get(None, ())):  # security headers and the like
            try:
                response = self.ensure_sync(func)(response)
            except Exception:
                log.exception("after_request hook failed on the 503")
        return response

    def do_teardown_request(self, exc=_UNSET) -> None:
        if has_request_context() and request.environ.pop(_SKIP_REQUEST_TEARDOWN, False):
            return
        self._teardown_request(sys.exc_info()[1] if exc is _UNSET else exc)

    def do_teardown_appcontext(self, exc=_UNSET) -> None:
        if g.pop("_console_app_torn_down", False):
            return
        self._teardown_appcontext(sys.exc_info()[1] if exc is _UNSET else exc)

    # As Flask's, except that one failing teardown function does not skip the others (the
    # session removal among them): every one runs, then the first failure is raised.

    def _teardown_request(self, exc) -> None:
        _run_all([func for name in chain(request.blueprints, (None,))
                  for func in reversed(self.teardown_request_funcs.get(name, ()))], self.ensure_sync, exc)
        request_tearing_down.send(self, _async_wrapper=self.ensure_sync, exc=exc)

    def _teardown_appcontext(self, exc) -> None:
        _run_all(list(reversed(self.teardown_appcontext_funcs)), self.ensure_sync, exc)
        appcontext_tearing_down.send(self, _async_wrapper=self.ensure_sync, exc=exc)


def _run_all(funcs, ensure_sync, exc) -> None:
    failure = None
    for func in funcs:
        try:
            ensure_sync(func)(exc)
        except Exception as error:
            if failure is None:
                failure = error
            else:
                log.error("another teardown function failed: %s", type(error).__name__)
    if failure is not None:
        raise failure
