"""One JSON error shape for every API, and small request validators."""
from __future__ import annotations

import ipaddress

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


def field(data: dict, name: str, *, required: bool = True, max_length: int = 128, pattern=None,
          kind=str, errors: dict):
    value = data.get(name)
    if value is None:
        if required:
            errors[name] = "required"
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        errors[name] = f"must be a {'string' if kind is str else kind.__name__}"
        return None
    if kind is str:
        if not value or len(value) > max_length:
            errors[name] = f"must be 1 to {max_length} characters"
            return None
        if pattern is not None and not pattern.fullmatch(value):
            errors[name] = "has the wrong format"
            return None
    return value


def ip_field(data: dict, name: str, errors: dict) -> str | None:
    value = field(data, name, required=False, max_length=64, errors=errors)
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        errors[name] = "must be an IPv4 or IPv6 address"
        return None


def raise_if(errors: dict) -> None:
    if errors:
        raise ApiError(422, "invalid_request", "Some fields are missing or invalid.", fields=errors)
