"""One JSON error shape for every API, and the JSON body (its fields are validated by the pydantic
models of console/api/schemas.py)."""
from __future__ import annotations

from flask import has_request_context, jsonify, request


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details):
        super().__init__(code)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(status: int, code: str, message: str, **details):
    """``{"error": {"code", "message", "details"?, "request_id"}}``: the request id is also the
    ``X-Request-ID`` header and the log line's, for support."""
    body = {"error": {"code": code, "message": message}}
    if details:
        body["error"]["details"] = details
    if has_request_context():
        from ..answers import request_id

        body["error"]["request_id"] = request_id()
    response = jsonify(body)
    response.status_code = status
    return response


def domain_error_response(exc, *, not_found: tuple[str, str] = ("not_found", "Not found.")):
    """A refused service call, answered as JSON: the one place that maps a DomainError to the API's
    error shape (the boundary, console/boundary.py, has rolled back and recorded the refusal)."""
    from ..services.errors import InvalidInput, NotFound

    reason = (exc.audit or {}).get("reason_code") or exc.message
    if isinstance(exc, NotFound):
        return error_response(404, *not_found)
    if isinstance(exc, InvalidInput):
        # The input's own code (e.g. id_checksum), not the event's "input_error".
        extra = {key: exc.details[key] for key in ("field", "problems") if key in exc.details}
        return error_response(422, "invalid_request", "Some fields are missing or invalid.", reason=exc.message,
                              **extra)
    status = 409 if exc.code == "conflict" or reason in ("already_pending", "already_decided") else 403
    if reason == "customer_sms_cap":
        # The customer's SMS codes for the window are spent, by whoever sent them: a 429, with when
        # the oldest of them leaves the window.
        retry = exc.details.get("retry_after_seconds") or 60
        response = error_response(429, reason, "The request was refused.", retry_after_seconds=retry)
        response.headers["Retry-After"] = str(retry)
        return response
    return error_response(status, reason, "The request was refused.")


def json_body() -> dict:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    from ..web.inputs import MAX_JSON_DEPTH, has_control_characters

    data = request.get_json(silent=True)  # the app's JSON provider refuses deep nesting as invalid
    if data is None:
        raise ApiError(400, "malformed_json",
                       f"The body is not valid JSON (or nests deeper than {MAX_JSON_DEPTH} levels).")
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", "The body must be a JSON object.")
    if has_control_characters(data):
        raise ApiError(400, "invalid_characters",
                       "The body contains control characters (such as NUL) that are not allowed.")
    return data
