"""Request ids, one JSON log line per request, and JSON formatting of every log record.

Log lines carry the request id (also returned as ``X-Request-ID``), the staff id, the endpoint,
the status and the duration; never a query string, a body, a secret or personal data.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid

from flask import g, request

REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")
request_log = logging.getLogger("console.request")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(), "logger": record.name}
        if isinstance(record.msg, dict):
            body.update(record.msg)
        else:
            body["message"] = record.getMessage()
        request_id = getattr(record, "request_id", None) or _current_request_id()
        if request_id:
            body["request_id"] = request_id
        if record.exc_info:
            body["error"] = self.formatException(record.exc_info).splitlines()[-1][:300]
        return json.dumps(body, ensure_ascii=False, default=str)


def _current_request_id():
    try:
        return g.get("request_id")
    except RuntimeError:  # outside a request
        return None


_configured = False


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for the whole process (once; every app in the process shares it)."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # our request line replaces its access log
    _configured = True


def init_app(app) -> None:
    if app.config.get("LOG_JSON", True) and not app.testing:
        configure_logging(app.config.get("LOG_LEVEL", "INFO"))

    @app.before_request
    def _start():
        # Normally already set by ConsoleFlask.wsgi_app, before every other hook.
        if not g.get("request_id"):
            incoming = request.headers.get("X-Request-ID", "")
            g.request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex

    @app.after_request
    def _finish(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response


# Paths that carry a bearer secret (a receipt's check token, a recovery's handle): logged without it.
_SECRET_IN_PATH = {"receipt_check.check": "/receipts/check/…"}


def _loggable_path() -> str:
    if request.endpoint in _SECRET_IN_PATH:
        return _SECRET_IN_PATH[request.endpoint]
    if request.view_args and "recovery_id" in request.view_args:
        return request.path.replace(str(request.view_args["recovery_id"]), "…")
    return request.path


def log_request(response) -> None:
    """The request's one log line, written when its answer is final (console.answers.ConsoleFlask)."""
    started = request.environ.get("console.request_started") or time.perf_counter()
    request_log.info({
        "event": "request", "method": request.method, "endpoint": request.endpoint,
        "path": _loggable_path(),
        "status": response.status_code,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "staff_id": g.get("staff_id"),
        "remote_addr": request.remote_addr,
    })
