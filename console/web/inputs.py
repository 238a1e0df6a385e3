"""Malformed input is refused at the edge, before it reaches a service or the database.

- Control characters: PostgreSQL refuses NUL in text, and no identifier, filter or name needs a
  C0 control character. Paths, query strings, form and JSON keys may carry none; form and JSON
  values only tab, CR and LF (text areas). Refused app-wide with a 400, before the rate limiter
  and the views look at the request.
- JSON: nested deeper than ``MAX_JSON_DEPTH`` is not JSON this console accepts; the app's JSON
  provider refuses it as a ``ValueError`` (so ``get_json(silent=True)`` answers ``None`` and
  ``json_body`` a 400 ``malformed_json``) instead of letting ``json.loads`` recurse into a
  ``RecursionError``.
- References in URLs: the ``int`` converter is replaced app-wide, and ``case_no``,
  ``receipt_no``, ``customer_no`` and ``seq`` converters are added. They route anything of
  the broad shape, and the exact shape and the column's range are checked just before the view
  runs, after the blueprints' guards: a signed-in staff member's malformed reference is then a
  404 and an ``access.denied`` audit event (the value repr-escaped and cut to 64 characters), as an
  unknown or out-of-scope one is; an anonymous caller still meets the sign-in guard first.
"""
from __future__ import annotations

import re
from functools import wraps

from flask import abort, current_app, g, request
from flask.json.provider import DefaultJSONProvider
from flask_babel import lazy_gettext as _l
from werkzeug.routing import BaseConverter

MAX_JSON_DEPTH = 32
INT_MAX = 2**31 - 1  # Integer primary keys
BIGINT_MAX = 2**63 - 1  # audit_event.seq
# Bodies larger than the smallest API limit are left to the blueprint's own size limit (and to
# ``json_body``'s check): reading them here would read them under the larger app-wide limit.
SMALLEST_API_BODY = 16 * 1024

CONTROL_STRICT = re.compile(r"[\x00-\x1f\x7f]")
CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab, LF and CR allowed

INVALID_CHARACTERS = _l("The request contains control characters (such as NUL) that are not allowed. "
                        "Please check what was typed and try again.")
MALFORMED_NUMBER = _l("A number in the request is not valid. Please go back and try again.")

SHAPES = {
    "case_no": re.compile(r"K\d{14}"),  # cases._new_case_no: K + YYYYMMDD + 6 digits
    "receipt_no": re.compile(r"R\d{14}"),  # cases.close_case: R + the case number's digits
    "customer_no": re.compile(r"C\d{9}"),  # customers.new_customer_no: C + 9 digits
}


def escaped(value, limit: int = 64) -> str:
    """How an untrusted value is recorded: repr-escaped (no control character, quoted, so it never
    begins with a formula character) and cut to ``limit`` characters."""
    return repr(str(value)[: limit * 4])[:limit]


# --- converters -------------------------------------------------------------------------------------


class BoundedIntConverter(BaseConverter):
    """Digits, as Werkzeug's ``int``; the range of the column is checked before the view runs."""

    regex = r"\d{1,64}"
    weight = 50
    kind = "id"
    minimum, maximum = 1, INT_MAX

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value) -> str:
        return str(int(value))

    def valid(self, value) -> bool:
        return isinstance(value, int) and self.minimum <= value <= self.maximum


class SeqConverter(BoundedIntConverter):
    """An audit sequence number (BigInteger)."""

    kind = "seq"
    maximum = BIGINT_MAX


class ReferenceConverter(BaseConverter):
    """A case, receipt or customer number: any path segment routes, its shape is checked later."""

    shape: re.Pattern

    def valid(self, value) -> bool:
        return isinstance(value, str) and bool(self.shape.fullmatch(value))


def _reference_converter(name: str) -> type[ReferenceConverter]:
    return type(f"{name.title().replace('_', '')}Converter", (ReferenceConverter,),
                {"shape": SHAPES[name], "kind": name})


CONVERTERS = {"int": BoundedIntConverter, "seq": SeqConverter,
              **{name: _reference_converter(name) for name in SHAPES}}


# --- JSON ---------------------------------------------------------------------------------------


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """How deep ``text``'s arrays and objects nest (strings skipped), without recursion."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


class BoundedJSONProvider(DefaultJSONProvider):
    """Refuses JSON nested deeper than ``MAX_JSON_DEPTH`` as invalid JSON (a ``ValueError``)."""

    def loads(self, s, **kwargs):
        text = s.decode("utf-8", "replace") if isinstance(s, (bytes, bytearray)) else s
        if json_depth(text) > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return super().loads(s, **kwargs)


def has_control_characters(data) -> bool:
    """Any key of a decoded JSON document with a control character, or a value with one other than
    tab, CR, LF; walked with a stack, so no depth makes it recurse."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if CONTROL_IN_TEXT.search(item):
                return True
        elif isinstance(item, dict):
            for key, value in item.items():
                if isinstance(key, str) and CONTROL_STRICT.search(key):
                    return True
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return False


# --- the request hook ------------------------------------------------------------------------------


# Page numbers and keyset cursors, wherever they are read (our pages and Flask-Admin's lists): a
# value that is not digits within the column's range would reach OFFSET or a comparison unchecked.
CURSOR_ARGS = {"page": INT_MAX, "page_size": 1000, "before": BIGINT_MAX, "after": BIGINT_MAX}


def _in_range(raw: str, minimum: int, maximum: int) -> bool:
    return raw.isascii() and raw.isdigit() and len(raw) <= 20 and minimum <= int(raw) <= maximum


def _admin_id_limit() -> int | None:
    """The range of the primary key behind a Flask-Admin view's ``?id=`` (none elsewhere)."""
    from sqlalchemy import BigInteger

    for admin in current_app.extensions.get("admin", ()):
        for view in admin._views:
            model = getattr(view, "model", None)
            if model is not None and request.blueprint == view.endpoint:
                keys = model.__table__.primary_key.columns
                return BIGINT_MAX if any(isinstance(c.type, BigInteger) for c in keys) else INT_MAX
    return None  # not a Flask-Admin model view: its ``id`` is not checked here


def _refuse(code: str, message, status: int = 400):
    """The 400 answer (a response object, so ``abort`` can raise it too)."""
    from flask import make_response

    from .errors import _page

    if request.path.startswith("/api/"):
        from ..api.common import error_response

        return error_response(status, code, str(message))
    return make_response(_page(status, message))


def _body_to_check() -> bool:
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return False
    length = request.content_length
    if request.path.startswith("/api/") and (length is None or length > SMALLEST_API_BODY):
        return False
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    return length is not None and (limit is None or length <= limit)


def refuse_control_characters():
    """``before_request``, app-wide and first: no control character reaches a view or the database."""
    if CONTROL_STRICT.search(request.path):
        return _refuse("invalid_characters", INVALID_CHARACTERS)
    for key, value in request.args.items(multi=True):
        if CONTROL_STRICT.search(key) or CONTROL_STRICT.search(value):
            return _refuse("invalid_characters", INVALID_CHARACTERS)
        if key in CURSOR_ARGS and value and not _in_range(value, 0, CURSOR_ARGS[key]):
            return _refuse("malformed_number", MALFORMED_NUMBER)
    admin_id = request.args.get("id")
    if admin_id is not None and (limit := _admin_id_limit()) and not _in_range(admin_id, 0, limit):
        from .errors import MESSAGES

        return _refuse("not_found", MESSAGES[404], 404)  # no record has this id
    if not _body_to_check():
        return None
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for key, value in request.form.items(multi=True):
            if CONTROL_STRICT.search(key) or CONTROL_IN_TEXT.search(value):
                return _refuse("invalid_characters", INVALID_CHARACTERS)
        for key, upload in request.files.items(multi=True):
            if CONTROL_STRICT.search(key) or CONTROL_STRICT.search(upload.filename or ""):
                return _refuse("invalid_characters", INVALID_CHARACTERS)
    elif request.is_json:
        data = request.get_json(silent=True)  # invalid JSON is the view's 400 (json_body)
        if data is not None and has_control_characters(data):
            return _refuse("invalid_characters", INVALID_CHARACTERS)
    return None


def int_arg(name: str, *, maximum: int = INT_MAX, minimum: int = 1) -> int | None:
    """An optional integer query argument (a page cursor): absent is ``None``; anything but
    digits within the column's range is a 400."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if not _in_range(raw, minimum, maximum):
        abort(_refuse("malformed_number", MALFORMED_NUMBER))
    return int(raw)


# --- references in URLs ------------------------------------------------------------------------------


def _staff_actor():
    """Who sent a malformed reference, when a staff member did (a session or an API token)."""
    from flask_login import current_user

    from ..services.actor import Actor
    from .security import current_actor

    if g.get("api_staff") is not None:
        staff = g.api_staff
        row = g.get("api_session")
        return Actor.for_staff(staff, source_ip=request.remote_addr, session_id=row.public_id if row else None,
                               channel="api", interface="api")
    if request.path.startswith("/api/"):
        return None  # the wallet back end's service key is not a staff member
    if current_user and current_user.is_authenticated:
        return current_actor()
    return None


def refuse_reference(parameter: str, kind: str, value):
    """A 404 for a reference that cannot exist; an ``access.denied`` event when staff sent it."""
    from .. import boundary

    actor = _staff_actor()
    if actor is not None:
        boundary.refuse(actor, "access.denied", reason_code="malformed_reference",
                        details={"endpoint": request.endpoint, "method": request.method, "parameter": parameter,
                                 "kind": kind, "value": escaped(value), "path": escaped(request.path, 200)})
    abort(404)


def _checked(view, checks: dict):
    @wraps(view)
    def wrapper(*args, **kwargs):
        for name, converter in checks.items():
            if name in kwargs and not converter.valid(kwargs[name]):
                refuse_reference(name, converter.kind, kwargs[name])
        return view(*args, **kwargs)
    return wrapper


def check_references(app) -> None:
    """Wrap every view that takes a shaped reference or a bounded id (call after every blueprint and
    Flask-Admin view is registered)."""
    checks: dict[str, dict] = {}
    for rule in app.url_map.iter_rules():
        for name, converter in rule._converters.items():
            if isinstance(converter, (BoundedIntConverter, ReferenceConverter)):
                checks.setdefault(rule.endpoint, {})[name] = converter
    for endpoint, by_name in checks.items():
        app.view_functions[endpoint] = _checked(app.view_functions[endpoint], by_name)


def init_app(app) -> None:
    """Converters before any blueprint is registered; the hook before the rate limiter's."""
    app.url_map.converters.update(CONVERTERS)
    app.json = BoundedJSONProvider(app)
    app.before_request(refuse_control_characters)
