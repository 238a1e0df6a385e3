"""Answered once: the ``Idempotency-Key`` of the JSON APIs and the one-time tokens of the desk's forms.

Both APIs: a state-changing request (POST, PUT, PATCH, DELETE) may carry
``Idempotency-Key: "<8 to 128 of A-Z a-z 0-9 . _ : ~ + / = ->"`` (quoted, as the IETF draft's
structured-field string, or bare). The key belongs to the caller (the staff member, or the
wallet back end's service key) and lives ``IDEMPOTENCY_KEY_HOURS``. A retry with the same key
gets the first answer again, with ``Idempotent-Replayed: true``; the same key with another
method, path or body is a 422 (``idempotency_key_reused``); a retry while the first request
is still being processed is a 409 (``request_in_flight``) with ``Retry-After``. Answers that
say "try again" (5xx, 429, anything with ``Retry-After``) are not kept: the key is released.

The desk: every state-changing form carries a hidden ``form_token`` (random, and bound by an
HMAC to the staff session that rendered it). The first submit reserves it; a second submit of
the same form (a double click, a reload, a retry) waits for the first one's answer and is sent
where the first one was (the same redirect and messages), without doing the work again. A
form posted without a token (a script) is done as before, without that guarantee.

Both run on ``console.services.idempotency``: the key is reserved in its own committed
transaction before the work, and the answer is stored by :func:`finish` (an ``after_request``
hook of the blueprints) in the very transaction that commits the work; see console/answers.py
for why the answer is built before that commit.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from urllib.parse import urlsplit

from flask import abort, current_app, flash, g, has_request_context, redirect, request, session
from werkzeug.exceptions import Conflict

from .. import answers, boundary, policy
from ..extensions import db
from ..services import idempotency
from ..services.idempotency import Decision, StoredAnswer

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
KEY_PATTERN = re.compile(r"[A-Za-z0-9._:~+/=\-]{8,128}")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_FIELD = "form_token"
KEPT_HEADERS = ("Content-Type", "Location")
# POSTs that only read (a search by POST keeps the number out of URLs and logs): their answers are
# pages of customer data, never kept, and a retry simply searches again (and is audited again).
READ_ONLY_POSTS = frozenset({"staff_api.search_customers"})


class KeyLost(Exception):
    """This request's lease ran out and a retry took the key over: its work must not be committed."""


def parse_key(raw: str) -> str | None:
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value if KEY_PATTERN.fullmatch(value) else None


def _path() -> str:
    query = request.query_string.decode("latin-1")
    return request.path + (f"?{query}" if query else "")


# --- the APIs --------------------------------------------------------------------------------------


def begin_api(scope: str, *, retention=None):
    """``before_request`` of an API blueprint, once the caller is authenticated as ``scope``.

    Defers the request's commits to its answer, and reserves its Idempotency-Key, or answers
    at once: the replayed first answer, 422 (another request), 409 (still in flight), 400 (a
    malformed key).
    """
    from ..api.common import error_response

    answers.defer()
    raw = request.headers.get(HEADER)
    if raw is None or request.method not in STATE_CHANGING or request.endpoint in READ_ONLY_POSTS:
        return None
    key = parse_key(raw)
    if key is None:
        return error_response(400, "invalid_idempotency_key",
                              "Idempotency-Key must be 8 to 128 characters from A-Z a-z 0-9 . _ : ~ + / = - "
                              "(optionally in double quotes).")
    request_fingerprint = idempotency.fingerprint(request.method, _path(), request.get_data(cache=True))
    decision = idempotency.reserve(db.session, scope, key, request_fingerprint, commit=boundary.commit_now,
                                   request_id=answers.request_id(), retention=retention)
    return _api_decision(decision)


def replay_only(scope: str):
    """The stored answer for this request's key under ``scope`` if there is one, else None
    (for a retried sign-out, whose token no longer authenticates anyone)."""
    raw = request.headers.get(HEADER)
    key = parse_key(raw) if raw is not None and request.method in STATE_CHANGING else None
    if key is None:
        return None
    answer = idempotency.lookup(db.session, scope, key,
                                idempotency.fingerprint(request.method, _path(), request.get_data(cache=True)))
    boundary.commit_now()
    return _replay(answer) if answer is not None else None


def _api_decision(decision: Decision):
    from ..api.common import error_response

    if decision.kind == "reserved":
        g.idempotency = decision.reservation
        return None
    if decision.kind == "replay":
        return _replay(decision.answer)
    if decision.kind == "mismatch":
        return error_response(422, "idempotency_key_reused",
                              "This Idempotency-Key was already used for a different request (method, path or body).")
    return in_flight_response(decision.retry_after)


def in_flight_response(retry_after: int):
    from ..api.common import error_response

    response = error_response(409, "request_in_flight",
                              "A request with this Idempotency-Key is still being processed; retry after Retry-After seconds.",
                              retry_after_seconds=retry_after)
    response.headers["Retry-After"] = str(retry_after)
    return response


def _replay(answer: StoredAnswer):
    response = current_app.response_class(answer.body, status=answer.status)
    for name, value in answer.headers.items():
        response.headers[name] = value
    response.headers[REPLAYED] = "true"
    return response


# --- the desk's forms ---------------------------------------------------------------------------------


def _mac(session_public_id: str, nonce: str) -> str:
    digest = hmac.new(current_app.config["SECRET_KEY"].encode(),
                      b"form-token\x00" + session_public_id.encode() + b"\x00" + nonce.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:22]


def form_token() -> str:
    """A fresh one-time token for a form of this page (a template global)."""
    row = g.get("staff_session")
    if row is None:
        return ""
    nonce = secrets.token_urlsafe(18)
    return f"{nonce}.{_mac(row.public_id, nonce)}"


def _token_valid(token: str, session_public_id: str) -> bool:
    nonce, _, mac = token.partition(".")
    if not (16 <= len(nonce) <= 64) or len(mac) != 22:
        return False
    return hmac.compare_digest(mac.encode(), _mac(session_public_id, nonce).encode())


def begin_form(endpoints: frozenset[str]):
    """``before_request`` of the desk: defers the request's commits to its answer and, for a
    one-time form, reserves its token, or answers as the first submit of that form did."""
    answers.defer()
    if request.method != "POST" or request.endpoint not in endpoints:
        return None
    token = request.form.get(FORM_FIELD, "")
    if not token:
        return None
    row = g.get("staff_session")
    if row is None or not _token_valid(token, row.public_id):
        abort(400)
    scope = f"form:{row.public_id}"
    # What was filled in: the same token sent again with other details (the back button, a
    # changed reason) is not the same submission and must not be told the first one's "done".
    fields = sorted((name, value) for name, values in request.form.lists() if name not in (FORM_FIELD, "csrf_token")
                    for value in values)
    filled = idempotency.fingerprint("POST", request.path, json.dumps(fields, ensure_ascii=False).encode())
    deadline = time.monotonic() + policy.current().idempotency.form_wait_seconds
    while True:
        decision = idempotency.reserve(db.session, scope, token, filled, commit=boundary.commit_now, kind="form",
                                       request_id=answers.request_id())
        if decision.kind != "in_flight" or time.monotonic() >= deadline:
            break
        time.sleep(0.05)  # the first submit is still at work: its answer is ours
    if decision.kind == "reserved":
        g.idempotency = decision.reservation
        g.flashes_before = len(session.get("_flashes", []))
        return None
    if decision.kind == "replay":
        for category, message in json.loads(decision.answer.body or b"{}").get("flashes", []):
            flash(message, category)
        return redirect(decision.answer.headers["Location"], code=decision.answer.status)
    if decision.kind == "mismatch":
        from flask_babel import gettext as _

        from .security import is_safe_next

        flash(_("This form had already been sent with other details; nothing was done with these. "
                "Check the page as it is now, then fill the form in again."), "error")
        came_from = urlsplit(request.referrer or "")
        back = came_from.path if came_from.netloc == request.host else ""
        return redirect(back if is_safe_next(back) else "/desk/", code=303)
    abort(409)


# --- the answer ---------------------------------------------------------------------------------------


def _storable(response, kind: str) -> bool:
    if response.is_streamed:
        return False
    if kind == "form":
        return 300 <= response.status_code < 400 and "Location" in response.headers
    return response.status_code < 500 and response.status_code != 429 and "Retry-After" not in response.headers


def _stored(response, kind: str) -> StoredAnswer:
    headers = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
    if kind == "form":
        flashes = [list(item) for item in session.get("_flashes", [])[g.get("flashes_before", 0):]]
        return StoredAnswer(response.status_code, {"Location": headers["Location"]},
                            json.dumps({"flashes": flashes}, ensure_ascii=False).encode())
    return StoredAnswer(response.status_code, headers, response.get_data())


def stage_answer(response) -> None:
    """Inside the transaction that commits the work, just before its COMMIT: store ``response`` as
    the key's answer (or release the key if the answer is not to be kept) and stage it as the
    request's answer. Raises :class:`KeyLost` if a retry took the key over meanwhile."""
    reservation = g.get("idempotency")
    if reservation is not None:
        if _storable(response, reservation.kind):
            if not idempotency.complete(db.session, reservation, _stored(response, reservation.kind)):
                g.idempotency = None
                raise KeyLost()
        else:
            idempotency.release(db.session, reservation)
    answers.stage(response)


def finish(response):
    """``after_request`` of the desk and the APIs: commit the request's work together with its
    answer (and the key's stored copy). The commit is the request's last database action."""
    if not g.get("defer_commit") or response.status_code >= 500:
        return response  # a 5xx commits nothing; its key is released when the request settles
    committed = answers.committed_answer()
    if committed is not None:
        return response  # already committed with its answer (the wallet sign-in's final step)
    try:
        stage_answer(response)
    except KeyLost:
        db.session.rollback()
        log.warning("idempotency key taken over by a retry; this request's work is rolled back")
        if request.path.startswith("/api/"):
            return in_flight_response(1)
        return current_app.make_response(current_app.handle_http_exception(Conflict()))
    boundary.commit_answer()
    return response


def release_unanswered() -> None:
    """When the request ends without committing an answer (a 5xx, a crash in the view), give its
    key back so a retry can do the work. Best effort: if the database is down, the lease runs out."""
    if not has_request_context():
        return
    reservation = g.pop("idempotency", None)
    if reservation is None or answers.committed_answer() is not None:
        return
    try:
        db.session.rollback()
        idempotency.release(db.session, reservation)
        boundary.commit_now()
    except Exception as exc:
        log.warning("could not release an idempotency key (%s); it is free again when its lease ends",
                    type(exc).__name__)
        answers.reset_session()
