"""One schema per API payload (issue #11 part 8): the pieces both JSON APIs build on.

Every request body and every answer of the staff API (``staff_schemas.py``) and the wallet API
(``wallet_schemas.py``) is a pydantic model, declared once. The same model

- **validates the request** in the view (:func:`request_body`): strict types (``"true"`` is not a
  boolean, ``5`` is not a string), unknown fields refused, lengths, patterns and enums exactly as the
  services accept them; a :class:`~pydantic.ValidationError` becomes the API's 422
  ``invalid_request`` with ``details.fields``, a map of field to a plain message;
- **builds the answer** (:func:`answer`): the view's dictionary is validated against the model it
  is documented with, for the status it is documented for, so an answer cannot leave the schema;
- **generates the OpenAPI document** (:class:`ApiSpec`): ``components/schemas`` come from
  :func:`pydantic.json_schema.models_json_schema`, and each operation's request body, answers and
  statuses from the declaration beside its view (:meth:`ApiSpec.operation`).

Unknown fields are refused (422, ``"is not a field of this request"``): a misspelt optional
field (``photo_match``) would otherwise be silently ignored. Values the services decide on at run
time (the registry's operations, the configured reason codes, the security questions) are
enums read at validation and at document time, so a new operation is in both at once.

Strings: no control characters but tab, CR and LF (the app refuses the others with a 400 before
any view runs, see console/web/inputs.py; the schema says so, so a valid document never meets that
400), and where the service trims and then requires something, at least one visible character.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, get_args

from flask import abort, current_app, has_app_context, jsonify, request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema
from pydantic.fields import FieldInfo
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticCustomError, core_schema

from .. import policy
from .common import ApiError, json_body

# --- strings ------------------------------------------------------------------------------------

# What console.web.inputs refuses in a JSON value (CONTROL_IN_TEXT), as JSON Schema / regex escapes
# that Python's re, pydantic's Rust regex and ECMA-262 read alike.
_CONTROL = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f"
# What str.strip() removes (Python's whitespace), apart from the control characters above: spelled
# out rather than \s, whose meaning differs between regex dialects.
_SPACE = r"\t\n\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TEXT_PATTERN = f"^[^{_CONTROL}]*$"
VISIBLE_PATTERN = f"^[^{_CONTROL}]*[^{_CONTROL}{_SPACE}][^{_CONTROL}]*$"


def text(max_length: int, *, min_length: int = 1, visible: bool = False, description: str | None = None):
    """A free-text string: ``min_length`` to ``max_length`` characters, no control character but tab,
    CR, LF; ``visible``: not only spaces (the service trims it, then requires something)."""
    return Annotated[str, Field(min_length=min_length, max_length=max_length,
                                pattern=VISIBLE_PATTERN if visible else TEXT_PATTERN,
                                description=description)]


def shaped(pattern: str, description: str, *, max_length: int | None = None, examples: list[str] | None = None):
    """An identifier of an exact shape (``pattern`` anchored, ASCII classes only)."""
    return Annotated[str, Field(pattern=pattern, max_length=max_length, description=description,
                                examples=examples)]


@dataclass(frozen=True)
class OneOf:
    """A string among values known at run time (the registry's operations, configured codes):
    read when a request is validated and when the document is generated, so both agree."""

    values: Callable[[], Iterable[str]]

    def allowed(self) -> list[str]:
        return list(self.values())

    def __get_pydantic_core_schema__(self, source_type, handler):
        return core_schema.no_info_after_validator_function(self._check, handler(source_type))

    def __get_pydantic_json_schema__(self, schema, handler):
        result = handler(schema)
        result["enum"] = self.allowed()
        return result

    def _check(self, value: str) -> str:
        allowed = self.allowed()
        if value not in allowed:
            raise PydanticCustomError("one_of", "must be one of: {allowed}", {"allowed": ", ".join(allowed)})
        return value


def config_value(key: str, default):
    """A configuration value where an application is running, else the code's default (the document
    is also built outside a request, e.g. by tests)."""
    return current_app.config.get(key, default) if has_app_context() else default


def _ip_address(value: str) -> str:
    if "%" in value:  # a scoped IPv6 address (fe80::1%eth0) is not a client's address
        raise PydanticCustomError("ip_address", "must be an IPv4 or IPv6 address")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise PydanticCustomError("ip_address", "must be an IPv4 or IPv6 address") from None


IpAddress = Annotated[str, Field(max_length=64), AfterValidator(_ip_address), WithJsonSchema({
    "type": "string", "maxLength": 64, "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
    "description": "An IPv4 or IPv6 address (without a zone index); answered normalised."})]


def _aware_timestamp(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("timestamp", "must be an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise PydanticCustomError("timestamp", "must carry its UTC offset")
    return value


# Timestamps are answered as the services format them (``datetime.isoformat()`` of an aware UTC time).
Timestamp = Annotated[str, AfterValidator(_aware_timestamp),
                      WithJsonSchema({"type": "string", "format": "date-time"})]


def _no_default(schema: dict) -> None:
    schema.pop("default", None)


def absent(**kwargs):
    """An answer's key that is left out, rather than null, when it does not apply."""
    return Field(default=None, json_schema_extra=_no_default, **kwargs)


# --- models --------------------------------------------------------------------------------------


class Payload(BaseModel):
    """A request body: strict types, unknown fields refused."""

    model_config = ConfigDict(strict=True, extra="forbid", regex_engine="rust-regex")


class Answer(BaseModel):
    """An answer body: built by :func:`answer` from the view's dictionary and checked on the way out."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ErrorDetail(Answer):
    code: str = Field(description="What went wrong, for programs (e.g. invalid_request, not_found, busy).")
    message: str = Field(description="What went wrong, for people.")
    details: dict[str, Any] = absent(description="More about it: for invalid_request, `fields` maps each "
                                                 "field to what is wrong with it.")
    request_id: str = absent(description="Also the X-Request-ID header and the log line's, for support.")


class Error(Answer):
    """Every error of both APIs: ``{error: {code, message, details?, request_id}}``."""

    error: ErrorDetail


# --- the request ---------------------------------------------------------------------------------


_MESSAGES = {
    "missing": "required",
    "extra_forbidden": "is not a field of this request",
    "string_type": "must be a string",
    "bool_type": "must be a boolean (true or false)",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be an array",
    "string_unicode": "must be valid Unicode text",
}


def _field_description(model: type[BaseModel], loc: Sequence) -> str | None:
    """The description of the field at ``loc`` (through nested models and lists), if any."""
    current: Any = model
    info = None
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            break
        info = current.model_fields[part]
        annotation = info.annotation
        candidates = (annotation, *getattr(annotation, "__args__", ()))
        current = next((a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return _described(info) if info is not None else None


def _described(info) -> str | None:
    """A field's description, or that of the constrained type it is made of (``DeviceId | None``)."""
    if info.description:
        return info.description
    stack = [info.annotation]
    while stack:
        annotation = stack.pop()
        for part in get_args(annotation):
            if isinstance(part, FieldInfo) and part.description:
                return part.description
            stack.append(part)
    return None


def _message(model: type[BaseModel], error: Mapping) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else f"must be at least {ctx['min_length']} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} items"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == VISIBLE_PATTERN:
            return "must contain more than spaces"
        if ctx.get("pattern") == TEXT_PATTERN:
            return "must not contain control characters (only tab, CR and LF)"
        described = _field_description(model, error["loc"])
        return f"has the wrong format: expected {described}" if described else "has the wrong format"
    if kind in ("literal_error", "enum"):
        return f"must be one of: {ctx.get('expected', '')}".replace("'", "")
    return error["msg"]


def _where(loc: Sequence) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def invalid_fields(model: type[BaseModel], exc: ValidationError) -> dict[str, str]:
    """``{field: message}`` for the 422: one message per field, the first found."""
    fields: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        fields.setdefault(_where(error["loc"]), _message(model, error))
    return fields


def validate(model: type[Payload], data: dict) -> Payload:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", "Some fields are missing or invalid.",
                       fields=invalid_fields(model, exc)) from None


def request_body() -> Payload:
    """The request's JSON body, validated against the model its operation declares (415 if it is
    not JSON, 400 if malformed or not an object or with control characters, 422 if invalid)."""
    operation = OPERATIONS[request.endpoint]
    assert operation.body is not None, f"{operation.operation_id} declares no request body"
    return validate(operation.body, json_body())


def answer(model: type[Answer], status: int = 200, /, headers: Mapping[str, str] | None = None, **values):
    """The JSON answer ``values`` as ``model``, which the operation must declare for ``status``."""
    operation = OPERATIONS.get(request.endpoint)
    if operation is not None and operation.answers.get(status, (None,))[0] is not model:
        raise RuntimeError(f"{operation.operation_id} does not document {model.__name__} for {status}")
    body = model.model_validate(values).model_dump(mode="json", exclude_unset=True)
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# --- the document --------------------------------------------------------------------------------


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                               "schema": {"type": "integer", "minimum": 0}}}
REPLAYED = {"Idempotent-Replayed": {"description": "Present on a retry answered with the first answer.",
                                    "schema": {"type": "string", "enum": ["true"]}}}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "8 to 128 characters from A-Z a-z 0-9 . _ : ~ + / = - (a UUID will do), optionally in double "
                   "quotes. The same key with the same request returns the first answer; with another method, "
                   "path or body it is a 422 (idempotency_key_reused); while the first is at work, a 409 "
                   "(request_in_flight).",
    "schema": {"type": "string", "pattern": '^(?:"[A-Za-z0-9._:~+/=-]{8,128}"|[A-Za-z0-9._:~+/=-]{8,128})$'}}

# Path parameters, by the converter that routes them (console/web/inputs.py): a value of another
# shape is answered 404 (and audited when staff sent it), as an unknown one is.
_INT_MAX = 2**31 - 1
PATH_PARAMETERS = {
    "case_no": {"type": "string", "pattern": "^K[0-9]{14}$", "description": "K and 14 digits"},
    "customer_no": {"type": "string", "pattern": "^C[0-9]{9}$", "description": "C and 9 digits"},
    "receipt_no": {"type": "string", "pattern": "^R[0-9]{14}$", "description": "R and 14 digits"},
    "recovery_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{32}$", "description": "32 URL-safe characters"},
    "int": {"type": "integer", "minimum": 1, "maximum": _INT_MAX},
}
_RULE_PARAMETER = re.compile(r"<(?:(\w+):)?(\w+)>")

# Why an operation may answer each error status; the applicable reasons are joined in its description.
WHY = {
    "characters": (400, "control characters (such as NUL) in the path, query or body (code invalid_characters)"),
    "malformed": (400, "the body is not a JSON object, is malformed or nests too deep (code malformed_json)"),
    "key": (400, "a malformed Idempotency-Key (code invalid_idempotency_key)"),
    "unauthorized": (401, "no valid credentials (code unauthorized)"),
    "reference": (404, "the path names nothing this caller may see, or is not of the right shape (code not_found)"),
    "in_flight": (409, "a request with this Idempotency-Key is still at work (code request_in_flight); retry after "
                       "Retry-After seconds"),
    "too_large": (413, "the body is larger than the API accepts (code payload_too_large)"),
    "media_type": (415, "the body is not application/json (code unsupported_media_type)"),
    "invalid": (422, "missing, unknown or invalid fields (code invalid_request; details.fields says which and why)"),
    "reused": (422, "this Idempotency-Key was already used for a different request (code idempotency_key_reused)"),
    "rate_limited": (429, "too many requests from this caller or address (code rate_limited); retry after "
                          "Retry-After seconds"),
    "unavailable": (503, "the database is unavailable (code unavailable); nothing was changed; retry after "
                         "Retry-After seconds (with the same Idempotency-Key)"),
}
_WITH_RETRY_AFTER = {409, 429, 503}


@dataclass
class Operation:
    endpoint: str
    method: str
    rule: str
    operation_id: str
    summary: str
    body: type[Payload] | None
    answers: dict[int, tuple[type[Answer] | None, str]]
    refusals: dict[int, str]
    idempotent: bool
    public: bool
    rate_limited: bool
    uses_database: bool = True
    description: str | None = None
    answer_headers: dict = field(default_factory=dict)

    @property
    def path(self) -> str:
        return _RULE_PARAMETER.sub(lambda m: "{" + m.group(2) + "}", self.rule)

    def matches(self, path: str) -> bool:
        """Whether ``path`` (below the API's prefix) is this operation's, its parameters of their shape."""
        pattern, at = "", 0
        for match in _RULE_PARAMETER.finditer(self.rule):
            converter, name = match.groups()
            schema = PATH_PARAMETERS.get(name) or PATH_PARAMETERS.get(converter) or {}
            shape = schema.get("pattern", "^[1-9][0-9]*$" if schema.get("type") == "integer" else "^[^/]+$")
            pattern += re.escape(self.rule[at:match.start()]) + f"(?:{shape[1:-1]})"
            at = match.end()
        return re.fullmatch(pattern + re.escape(self.rule[at:]), path) is not None

    def parameters(self) -> list[dict]:
        found = []
        for converter, name in _RULE_PARAMETER.findall(self.rule):
            schema = dict(PATH_PARAMETERS.get(name) or PATH_PARAMETERS.get(converter) or {"type": "string"})
            description = schema.pop("description", None)
            found.append({"name": name, "in": "path", "required": True, "schema": schema,
                          **({"description": description} if description else {})})
        if self.idempotent:
            found.append({"$ref": "#/components/parameters/IdempotencyKey"})
        return found

    def reasons(self) -> dict[int, list[str]]:
        """Every error status this operation can answer, with why."""
        keys = ["characters"] + (["unavailable"] if self.uses_database else [])
        if not self.public:
            keys.append("unauthorized")
        if "<" in self.rule:
            keys.append("reference")
        if self.body is not None:
            keys += ["malformed", "too_large", "media_type", "invalid"]
        if self.idempotent:
            keys += ["key", "in_flight", "reused", "too_large"]
        if self.rate_limited:
            keys.append("rate_limited")
        why: dict[int, list[str]] = {}
        for key in keys:
            status, text_ = WHY[key]
            if text_ not in why.setdefault(status, []):
                why[status].append(text_)
        for status, text_ in self.refusals.items():
            why.setdefault(status, []).append(text_)
        return why


OPERATIONS: dict[str, Operation] = {}  # endpoint -> its declaration, for both APIs


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


class ApiSpec:
    """One API's operations, each declared once beside its view, and the document built from them."""

    def __init__(self, blueprint, *, title: str, description, security_scheme: str):
        """``description``: the text, or a function of the running policy that returns it (so the
        numbers it quotes are the policy's)."""
        self.blueprint, self.title, self.description = blueprint, title, description
        self.security_scheme = security_scheme
        self.operations: list[Operation] = []
        blueprint.before_request(self.refuse_other_methods)
        blueprint.after_request(self.exact_allow)

    def operation(self, method: str, rule: str, operation_id: str, *, summary: str,
                  answers: dict[int, tuple[type[Answer] | None, str]], body: type[Payload] | None = None,
                  refusals: dict[int, str] | None = None, idempotent: bool | None = None, public: bool = False,
                  rate_limited: bool = False, uses_database: bool = True, description: str | None = None,
                  answer_headers: dict | None = None):
        """Register ``view`` as the route ``method rule`` and declare its operation: its request body's
        model, its answers' models by status, and the refusals it can answer besides the ones every
        operation of its kind can (see :meth:`Operation.reasons`)."""
        method = method.upper()

        def register(view):
            endpoint = view.__name__
            self.blueprint.add_url_rule(rule, endpoint, view, methods=[method])
            operation = Operation(
                endpoint=f"{self.blueprint.name}.{endpoint}", method=method, rule=rule, operation_id=operation_id,
                summary=summary, body=body, answers=answers, refusals=refusals or {},
                idempotent=method != "GET" if idempotent is None else idempotent, public=public,
                rate_limited=rate_limited, uses_database=uses_database, description=description,
                answer_headers=answer_headers or {})
            self.operations.append(operation)
            OPERATIONS[operation.endpoint] = operation
            return view
        return register

    def refuse_other_methods(self):
        """``before_request``: a documented path asked with a method it does not offer is a 405 with
        ``Allow``, even where another route's template fits the path by routing alone (GET
        /customers/search would otherwise be GET /customers/{customer_no}, refused as malformed)."""
        operation = OPERATIONS.get(request.endpoint)
        if operation is None or "<" not in operation.rule or request.method == "OPTIONS":
            return None
        path = request.path[len(self.blueprint.url_prefix or ""):]
        if operation.matches(path):
            return None
        methods = {other.method for other in self.operations if other.matches(path)}
        if methods:
            methods |= {"OPTIONS"} | ({"HEAD"} if "GET" in methods else set())
            abort(405, valid_methods=sorted(methods))
        return None

    def exact_allow(self, response):
        """``after_request``: an automatic OPTIONS answer's ``Allow`` names exactly the documented methods
        of the path (Flask's would also name those of a template the path only fits by routing, such as
        GET /customers/{customer_no} for /customers/search, which answers 404)."""
        if request.method != "OPTIONS" or "Allow" not in response.headers:
            return response
        path = request.path[len(self.blueprint.url_prefix or ""):]
        methods = {operation.method for operation in self.operations if operation.matches(path)}
        if methods:
            methods |= {"OPTIONS"} | ({"HEAD"} if "GET" in methods else set())
            response.headers["Allow"] = ", ".join(sorted(methods))
        return response

    def _models(self) -> list[tuple[type[BaseModel], str]]:
        models: dict[type[BaseModel], str] = {Error: "serialization"}
        for operation in self.operations:
            if operation.body is not None:
                models[operation.body] = "validation"
            for model, _text in operation.answers.values():
                if model is not None:
                    models[model] = "serialization"
        return list(models.items())

    def _responses(self, operation: Operation) -> dict:
        responses: dict[str, dict] = {}
        for status, (model, text_) in sorted(operation.answers.items()):
            entry: dict[str, Any] = {"description": text_}
            if model is not None:
                entry["content"] = _json(_ref(model))
            headers = {**(REPLAYED if operation.idempotent else {}), **operation.answer_headers.get(status, {})}
            if headers:
                entry["headers"] = headers
            responses[str(status)] = entry
        for status, reasons in sorted(operation.reasons().items()):
            text_ = "; ".join(reasons)
            entry = {"description": text_[0].upper() + text_[1:] + ".", "content": _json(_ref(Error))}
            if status in _WITH_RETRY_AFTER:
                entry["headers"] = RETRY_AFTER
            responses[str(status)] = entry
        return responses

    def document(self, *, version: str = "1.0.0") -> dict:
        _keys, definitions = models_json_schema(self._models(), ref_template="#/components/schemas/{model}")
        paths: dict[str, dict] = {}
        for operation in self.operations:
            entry: dict[str, Any] = {"operationId": operation.operation_id, "summary": operation.summary}
            if operation.description:
                entry["description"] = operation.description
            parameters = operation.parameters()
            if parameters:
                entry["parameters"] = parameters
            if operation.body is not None:
                entry["requestBody"] = {"required": True, "content": _json(_ref(operation.body))}
            entry["responses"] = self._responses(operation)
            if operation.public:
                entry["security"] = []
            paths.setdefault(operation.path, {})[operation.method.lower()] = entry
        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": version, "description": self.description(policy.current()) if callable(self.description)
                     else self.description},
            "servers": [{"url": self.blueprint.url_prefix}],
            "security": [{self.security_scheme: []}],
            "paths": paths,
            "components": {
                "securitySchemes": {self.security_scheme: {"type": "http", "scheme": "bearer"}},
                "parameters": {"IdempotencyKey": IDEMPOTENCY_KEY},
                "schemas": definitions.get("$defs", {}),
            },
        }


class OpenApiDocument(Answer):
    """An OpenAPI 3.1 document (this one)."""

    model_config = ConfigDict(strict=True, extra="allow")

    openapi: str


@dataclass(frozen=True)
class ItemCount:
    """How many items an array may have, read at run time (a policy setting) at validation and at
    document time."""

    minimum: Callable[[], int]
    maximum: Callable[[], int]

    def __get_pydantic_core_schema__(self, source_type, handler):
        return core_schema.no_info_after_validator_function(self._check, handler(source_type))

    def __get_pydantic_json_schema__(self, schema, handler):
        result = handler(schema)
        result["minItems"], result["maxItems"] = self.minimum(), self.maximum()
        return result

    def _check(self, value: list) -> list:
        low, high = self.minimum(), self.maximum()
        if not low <= len(value) <= high:
            raise PydanticCustomError("item_count", "must have {low} to {high} items", {"low": low, "high": high})
        return value
