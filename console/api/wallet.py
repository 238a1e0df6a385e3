"""Wallet API, called by the wallet's own back end with a service key.

Sign-in answers 200 with a ``result`` for every expected outcome; everything else is a 4xx
with the one error shape ``{"error": {"code", "message", "details", "request_id"}}``, or a 503
when the database is unavailable (console/answers.py), never a 500. Every state-changing call
takes an ``Idempotency-Key`` (console/web/once.py): the answer is stored in the transaction
that commits its work (for sign-in, the lockout engine's final transaction, via ``finalize``).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
from datetime import timedelta

from flask import Blueprint, current_app, jsonify, request

from ..extensions import csrf, db
from ..services import wallet_credentials, wallet_signin
from ..services.actor import Actor
from ..services.errors import InvalidInput, NotFound
from ..timeutil import utcnow
from ..web import once
from .common import ApiError, error_response, field, ip_field, json_body, raise_if
from .wallet_openapi import openapi_document

bp = Blueprint("wallet_api", __name__, url_prefix="/api/wallet/v1")
csrf.exempt(bp)
log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
WALLET_NO = re.compile(r"\d{8,20}")
DEVICE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
PUBLIC = {"wallet_api.openapi"}


def _key_digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


@bp.before_request
def _authenticate_service():
    request.max_content_length = MAX_BODY
    if request.endpoint in PUBLIC:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    expected = current_app.config.get("WALLET_SERVICE_KEY") or ""
    if scheme.lower() != "bearer" or not token or not expected \
            or not hmac.compare_digest(_key_digest(token.strip()), _key_digest(expected)):
        log.warning("wallet api: rejected service key from %s", request.remote_addr)
        return error_response(401, "unauthorized", "A valid service key is required (Authorization: Bearer ...).")
    # Idempotency-Keys belong to the service that presents the key.
    return once.begin_api(f"wallet:{_key_digest(token.strip()).hex()[:16]}",
                          retention=timedelta(minutes=current_app.config["IDEMPOTENCY_WALLET_KEY_MINUTES"]))


bp.after_request(once.finish)


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return error_response(exc.status, exc.code, exc.message, **exc.details)


@bp.errorhandler(NotFound)
def _not_found(exc: NotFound):
    return error_response(404, "unknown_wallet", "No active wallet has this number.")


def _common_fields(data: dict, errors: dict) -> tuple[str, str | None, str | None]:
    wallet_no = field(data, "wallet_no", pattern=WALLET_NO, max_length=20, errors=errors)
    client_ip = ip_field(data, "client_ip", errors)
    device_id = field(data, "device_id", required=False, pattern=DEVICE_ID, max_length=64, errors=errors)
    return wallet_no, client_ip or request.remote_addr, device_id


def _actor(client_ip: str | None) -> Actor:
    return Actor(kind="service", channel="wallet", source_ip=client_ip, employee_no="wallet-backend")


def _outcome_json(outcome: wallet_signin.SignInOutcome) -> dict:
    body = {"result": outcome.result, "wallet_no": outcome.wallet.wallet_no}
    if outcome.result == "invalid_credentials":
        body["remaining_attempts"] = outcome.remaining
    if outcome.result in ("locked", "frozen"):
        body["reason"] = outcome.lock_reason
        body["locked_until"] = outcome.locked_until.isoformat() if outcome.locked_until else None
        body["unlock"] = "automatic" if outcome.locked_until else "staff"
    if outcome.result == "busy":
        body["retry_after_seconds"] = outcome.retry_after or 1
    return body


def _outcome_response(outcome: wallet_signin.SignInOutcome):
    response = jsonify(_outcome_json(outcome))
    if outcome.result == "busy":
        response.headers["Retry-After"] = str(outcome.retry_after or 1)
    return response


def _refusal_response(outcome: wallet_signin.SignInOutcome):
    body = _outcome_json(outcome)
    body.pop("result")
    response = error_response(409 if outcome.result == "busy" else 403, outcome.result,
                              "The wallet could not be authenticated.", **body)
    if outcome.result == "busy":
        response.headers["Retry-After"] = str(outcome.retry_after or 1)
    return response


def _authenticated(data: dict, password_field: str):
    errors: dict = {}
    wallet_no, client_ip, device_id = _common_fields(data, errors)
    password = field(data, password_field, max_length=128, errors=errors)
    return wallet_no, client_ip, device_id, password, errors


def _require_auth(wallet_no, password, client_ip, device_id, purpose):
    """The password check before a credential change: (outcome, None), or (None, the refusal).

    A refusal is the attempt's answer, stored with the engine's final commit; a success is
    answered later, with the change, by the view's own final commit.
    """
    refusal = {}

    def finalize(outcome):
        if not outcome.authenticated:
            refusal["response"] = _refusal_response(outcome)
            once.stage_answer(refusal["response"])

    try:
        outcome = wallet_signin.authenticate(db.session, wallet_no, password, commit=db.session.commit,
                                             source_ip=client_ip, device_id=device_id, purpose=purpose,
                                             finalize=finalize)
    except once.KeyLost:
        db.session.rollback()
        return None, once.in_flight_response(1)
    if outcome.authenticated:
        return outcome, None
    return None, refusal.get("response") or _refusal_response(outcome)


@bp.post("/sign-in")
def sign_in():
    wallet_no, client_ip, device_id, password, errors = _authenticated(json_body(), "password")
    raise_if(errors)
    answer = {}

    def finalize(outcome):
        # Inside the engine's final transaction: the answer (and its Idempotency-Key record) is
        # committed with the attempt's settlement.
        answer["response"] = _outcome_response(outcome)
        once.stage_answer(answer["response"])

    try:
        outcome = wallet_signin.authenticate(db.session, wallet_no, password, commit=db.session.commit,
                                             source_ip=client_ip, device_id=device_id, finalize=finalize)
    except once.KeyLost:
        db.session.rollback()
        return once.in_flight_response(1)
    return answer.get("response") or _outcome_response(outcome)


@bp.post("/change-password")
def change_password():
    data = json_body()
    wallet_no, client_ip, device_id, current, errors = _authenticated(data, "current_password")
    new_password = field(data, "new_password", max_length=128, errors=errors)
    raise_if(errors)
    outcome, refusal = _require_auth(wallet_no, current, client_ip, device_id, "change_password")
    if refusal is not None:
        return refusal
    wallet = outcome.wallet
    try:
        wallet_credentials.change_password(db.session, _actor(client_ip), wallet, new_password,
                                           used_temporary=outcome.used_temporary)
    except InvalidInput as exc:
        db.session.rollback()
        rules = exc.details.get("problems", [])
        return error_response(422, "password_policy", "The new password breaks the password policy.", rules=rules)
    # Built before the commit, which once.finish makes with the stored answer.
    return jsonify({"result": "password_changed", "wallet_no": wallet.wallet_no,
                    "password_expires_at": wallet.password_expires_at.isoformat() if wallet.password_expires_at else None})


@bp.get("/security-questions")
def question_catalogue():
    return jsonify({"required": current_app.config["SECURITY_QUESTIONS_REQUIRED"],
                    "questions": [{"code": code} for code in wallet_credentials.SECURITY_QUESTIONS]})


@bp.put("/security-questions")
def set_security_questions():
    data = json_body()
    wallet_no, client_ip, device_id, password, errors = _authenticated(data, "password")
    questions = field(data, "questions", kind=list, errors=errors)
    answers = []
    if questions is not None:
        for i, item in enumerate(questions[:10]):
            if not isinstance(item, dict) or not isinstance(item.get("code"), str) \
                    or not isinstance(item.get("answer"), str):
                errors[f"questions[{i}]"] = "must be an object with string code and answer"
            else:
                answers.append((item["code"], item["answer"]))
        if len(questions) > 10:
            errors["questions"] = "too many questions"
    raise_if(errors)
    outcome, refusal = _require_auth(wallet_no, password, client_ip, device_id, "set_questions")
    if refusal is not None:
        return refusal
    if outcome.result != "ok":
        raise ApiError(403, outcome.result, "Change the password before setting security questions.")
    try:
        wallet_credentials.set_security_questions(db.session, _actor(client_ip), outcome.wallet, answers)
    except InvalidInput as exc:
        db.session.rollback()
        return error_response(422, "invalid_questions", "The security questions are not acceptable.",
                              reason=str(exc.message))
    return jsonify({"result": "questions_set", "wallet_no": outcome.wallet.wallet_no,
                    "count": len(answers), "at": utcnow().isoformat()})


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())
