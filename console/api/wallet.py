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
import time
from datetime import timedelta

from flask import Blueprint, current_app, g, request

from .. import boundary, codes, policy
from ..extensions import csrf, db
from ..services import recovery, wallet_credentials, wallet_signin
from ..services.actor import Actor
from ..services.errors import DomainError, InvalidInput, NotFound
from ..timeutil import utcnow
from ..web import once
from . import wallet_schemas as S
from .common import ApiError, domain_error_response, error_response
from .schemas import RETRY_AFTER, ApiSpec, OpenApiDocument, answer, request_body

bp = Blueprint("wallet_api", __name__, url_prefix="/api/wallet/v1")
csrf.exempt(bp)
log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
PUBLIC = {"wallet_api.openapi"}
api = ApiSpec(bp, title="Branch Console wallet API", security_scheme="serviceKey", description=lambda rules: (
    "Called by the wallet's own back end. Authenticate with `Authorization: Bearer <service key>`. Every error "
    "has the shape `{error: {code, message, details?, request_id}}`; the request id is also the `X-Request-ID` "
    "header. Request bodies are validated against the schemas below: unknown fields are refused, strings carry "
    "no control characters (tab, CR and LF aside), and an invalid body is a 422 `invalid_request` whose "
    "`details.fields` maps each field to what is wrong with it. A method a path does not offer is a 405 with an "
    "`Allow` header. Every state-changing call takes an `Idempotency-Key` (IETF httpapi draft): a retry with the "
    "same key gets the first answer again, marked `Idempotent-Replayed: true`, and the work is done once. Keys "
    f"belong to the service key and are kept {rules.idempotency.wallet_key_minutes} minutes (the bodies carry passwords); answers that say \"try "
    "again\" (5xx, 429, a `Retry-After`, sign-in `busy`) are not kept."))

NOT_AUTHENTICATED = ("the wallet could not be authenticated: code invalid_credentials (details.remaining_attempts), "
                     "locked (details.locked_until, details.reason, details.unlock) or frozen")
BUSY = "every attempt slot of the wallet is being checked (code busy; details.retry_after_seconds and Retry-After)"
UNKNOWN_WALLET = "no active wallet has this number (code unknown_wallet)"


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
                          retention=timedelta(minutes=policy.current().idempotency.wallet_key_minutes))


def _answer_no_sooner(response):
    """A recovery start is answered no sooner than the policy's floor after it arrived, after its
    commit (this runs after ``once.finish``), so whether the details matched does not show in time."""
    started = g.pop("recovery_started", None)
    if started is not None:
        rest = started + policy.current().recovery.start_min_ms / 1000 - time.monotonic()
        if rest > 0:
            time.sleep(rest)
    return response


# after_request functions run in the reverse order of registration: the floor after the commit.
bp.after_request(_answer_no_sooner)
bp.after_request(once.finish)


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return error_response(exc.status, exc.code, exc.message, **exc.details)


@bp.errorhandler(DomainError)
def _refused(exc: DomainError):
    return domain_error_response(exc, not_found=("unknown_wallet", "No active wallet has this number."))


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
    busy = {"Retry-After": str(outcome.retry_after or 1)} if outcome.result == "busy" else None
    return answer(S.SignInResult, headers=busy, **_outcome_json(outcome))


def _refusal_response(outcome: wallet_signin.SignInOutcome):
    body = _outcome_json(outcome)
    body.pop("result")
    response = error_response(409 if outcome.result == "busy" else 403, outcome.result,
                              "The wallet could not be authenticated.", **body)
    if outcome.result == "busy":
        response.headers["Retry-After"] = str(outcome.retry_after or 1)
    return response


def _client_ip(data) -> str | None:
    return data.client_ip or request.remote_addr


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
        outcome = wallet_signin.authenticate(db.session, wallet_no, password, commit=boundary.commit_now,
                                             source_ip=client_ip, device_id=device_id, purpose=purpose,
                                             finalize=finalize)
    except once.KeyLost:
        db.session.rollback()
        return None, once.in_flight_response(1)
    if outcome.authenticated:
        return outcome, None
    return None, refusal.get("response") or _refusal_response(outcome)


@api.operation("POST", "/sign-in", "signIn", summary="Check a customer's wallet password, applying the lockout policy.",
               body=S.SignInRequest, rate_limited=True,
               answers={200: (S.SignInResult, "The outcome of the attempt (with result busy, a Retry-After header).")},
               answer_headers={200: RETRY_AFTER}, refusals={404: UNKNOWN_WALLET})
def sign_in():
    data = request_body()
    answer_ = {}

    def finalize(outcome):
        # Inside the engine's final transaction: the answer (and its Idempotency-Key record) is
        # committed with the attempt's settlement.
        answer_["response"] = _outcome_response(outcome)
        once.stage_answer(answer_["response"])

    try:
        outcome = wallet_signin.authenticate(db.session, data.wallet_no, data.password, commit=boundary.commit_now,
                                             source_ip=_client_ip(data), device_id=data.device_id, finalize=finalize)
    except once.KeyLost:
        db.session.rollback()
        return once.in_flight_response(1)
    return answer_.get("response") or _outcome_response(outcome)


@api.operation("POST", "/change-password", "changePassword",
               summary="Set a new password with the current or the temporary password.",
               body=S.ChangePasswordRequest, rate_limited=True,
               answers={200: (S.PasswordChanged, "Password changed (result password_changed).")},
               refusals={403: NOT_AUTHENTICATED, 404: UNKNOWN_WALLET, 409: BUSY,
                         422: "the new password breaks the password policy (code password_policy; details.rules "
                              "from too_short, common, contains_mobile, contains_id_number, contains_birth_date, "
                              "reused)"})
def change_password():
    data = request_body()
    client_ip = _client_ip(data)
    outcome, refusal = _require_auth(data.wallet_no, data.current_password, client_ip, data.device_id,
                                     "change_password")
    if refusal is not None:
        return refusal
    wallet = outcome.wallet
    try:
        boundary.perform(_actor(client_ip), wallet_credentials.change_password, wallet, data.new_password,
                         used_temporary=outcome.used_temporary)
    except InvalidInput as exc:
        rules = exc.details.get("problems", [])
        return error_response(422, "password_policy", "The new password breaks the password policy.", rules=rules)
    # Built before the commit, which once.finish makes with the stored answer.
    return answer(S.PasswordChanged, result="password_changed", wallet_no=wallet.wallet_no,
                  password_expires_at=wallet.password_expires_at.isoformat() if wallet.password_expires_at else None)


@api.operation("GET", "/security-questions", "listSecurityQuestions", summary="The question codes on offer.",
               answers={200: (S.QuestionCatalogue, "Question codes and how many are required.")},
               uses_database=False)  # the configuration's catalogue
def question_catalogue():
    return answer(S.QuestionCatalogue, required=policy.current().wallet_passwords.security_questions_required,
                  questions=[{"code": code} for code in wallet_credentials.SECURITY_QUESTIONS])


@api.operation("PUT", "/security-questions", "setSecurityQuestions",
               summary="Replace the security questions (password required).", body=S.SetQuestionsRequest,
               rate_limited=True, answers={200: (S.QuestionsSet, "Questions set (result questions_set).")},
               refusals={403: NOT_AUTHENTICATED + "; or the password must be changed first (code must_change_password "
                                                  "or password_expired)",
                         404: UNKNOWN_WALLET, 409: BUSY,
                         422: "a question code given twice, or an answer of the wrong length once normalised "
                              "(code invalid_questions)"})
def set_security_questions():
    data = request_body()
    client_ip = _client_ip(data)
    answers = [(item.code, item.answer) for item in data.questions]
    outcome, refusal = _require_auth(data.wallet_no, data.password, client_ip, data.device_id, "set_questions")
    if refusal is not None:
        return refusal
    if outcome.result != "ok":
        raise ApiError(403, outcome.result, "Change the password before setting security questions.")
    try:
        boundary.perform(_actor(client_ip), wallet_credentials.set_security_questions, outcome.wallet, answers)
    except InvalidInput as exc:
        return error_response(422, "invalid_questions", "The security questions are not acceptable.",
                              reason=str(exc.message))
    return answer(S.QuestionsSet, result="questions_set", wallet_no=outcome.wallet.wallet_no,
                  count=len(answers), at=utcnow().isoformat())


# --- self-service recovery (the wallet app's 忘记密码) ------------------------------------------------

UNKNOWN_RECOVERY = "no recovery has this id (code unknown_recovery)"
RECOVERY_EXPIRED = ("the recovery was not finished in time (code recovery_expired); start again")
WRONG_STEP = ("this step does not follow where the recovery stands: it failed, was finished, or another "
              "step comes first (code wrong_step; details.recovery_status)")
RECOVERY_FAILED = ("the recovery failed and counts against the customer (code recovery_failed; details.reason from "
                   + ", ".join(codes.RECOVERY_FAILURES) + "); start again, or go to the counter")
COUNTER_REQUIRED = ("the wallet cannot be recovered in the app: the customer must come to a branch counter with "
                    "an identity document or call the hotline (code counter_required; details.reason from "
                    + ", ".join(codes.RECOVERY_COUNTER_REASONS) + "; details.hotline)")


def _recovery_call(fn, *args, **kwargs) -> recovery.Step:
    """A recovery step through the boundary (committed with the answer); an unknown id is a 404."""
    client_ip = _client_ip(kwargs.pop("data"))
    try:
        return boundary.perform(recovery.actor_for(source_ip=client_ip), lambda session, _actor: fn(
            session, *args, **kwargs))
    except NotFound:
        raise ApiError(404, "unknown_recovery", "No recovery has this id.") from None
    except InvalidInput as exc:
        if exc.message == "wrong_step":
            raise ApiError(409, "wrong_step", "This step does not follow where the recovery stands.",
                           recovery_status=exc.details.get("status")) from None
        if exc.message == "invalid_token":
            raise ApiError(403, "invalid_token", "The recovery token is not valid (wrong, used or expired).") \
                from None
        raise


def _step_refusal(step: recovery.Step):
    """The error answer of a step that did not go on, or None."""
    hotline = policy.current().bank.hotline
    if step.result == "expired":
        return error_response(410, "recovery_expired", "The recovery was not finished in time; start again.")
    if step.result == "code_wrong":
        return error_response(422, "code_wrong", "The code is not right.", remaining_tries=step.remaining_tries)
    if step.result == "failed":
        return error_response(403, "recovery_failed", "The recovery failed. Start again, or visit a branch counter "
                              f"with an identity document or call {hotline}.", reason=step.reason, hotline=hotline)
    if step.result == "counter_required":
        return error_response(403, "counter_required", "This wallet cannot be recovered in the app. Visit a branch "
                              f"counter with an identity document or call {hotline}.", reason=step.reason,
                              hotline=hotline)
    if step.result == "password_policy":
        return error_response(422, "password_policy", "The new password breaks the password policy.",
                              rules=step.problems)
    return None


@api.operation("POST", "/recovery", "startRecovery",
               summary="Start a self-service recovery (忘记密码): an SMS code goes to the registered mobile.",
               body=S.StartRecoveryRequest, rate_limited=True,
               description="The answer is the same, and takes as long, whether or not the wallet number or mobile "
                           "and the ID number match a wallet: a code is sent only if they do. Limited per address "
                           "and per wallet number or mobile.",
               answers={202: (S.RecoveryStarted, "Started (the same answer whatever matched).")})
def start_recovery():
    g.recovery_started = time.monotonic()
    data = request_body()
    rules = policy.current()
    handle, step = boundary.perform(
        recovery.actor_for(source_ip=_client_ip(data)), lambda session, _actor: recovery.start(
            session, wallet_no=data.wallet_no, mobile=data.mobile, id_type=data.id_type, id_number=data.id_number,
            source_ip=_client_ip(data), device_id=data.device_id))
    return answer(S.RecoveryStarted, 202, recovery_id=handle, next="sms_code",
                  code_valid_seconds=rules.verification.code_valid_minutes * 60,
                  code_tries=rules.verification.code_tries, expires_at=step.recovery.expires_at.isoformat())


@api.operation("POST", "/recovery/<recovery_id>/code", "checkRecoveryCode",
               summary="Check the SMS code; the answer names the second factor to give.",
               body=S.RecoveryCodeRequest, rate_limited=True,
               answers={200: (S.RecoveryCodeAccepted, "The code is right: give the second factor.")},
               refusals={403: RECOVERY_FAILED + "; or " + COUNTER_REQUIRED, 404: UNKNOWN_RECOVERY, 409: WRONG_STEP,
                         410: RECOVERY_EXPIRED,
                         422: "the code is not right (code code_wrong; details.remaining_tries)"})
def check_recovery_code(recovery_id):
    data = request_body()
    step = _recovery_call(recovery.check_code, recovery_id, data.code, data=data)
    refusal = _step_refusal(step)
    if refusal is not None:
        return refusal
    return answer(S.RecoveryCodeAccepted, result="second_factor", factor=step.factor, questions=step.questions)


@api.operation("POST", "/recovery/<recovery_id>/second-factor", "checkRecoveryFactor",
               summary="Check the security answers or the bound authenticator's code (one try).",
               body=S.RecoveryFactorRequest, rate_limited=True,
               answers={200: (S.RecoveryVerified, "Verified: set the new password with the token.")},
               refusals={403: RECOVERY_FAILED + "; or " + COUNTER_REQUIRED, 404: UNKNOWN_RECOVERY, 409: WRONG_STEP,
                         410: RECOVERY_EXPIRED})
def check_recovery_factor(recovery_id):
    data = request_body()
    answers = {item.code: item.answer for item in data.answers} if data.answers is not None else None
    step = _recovery_call(recovery.check_factor, recovery_id, answers=answers,
                          authenticator_code=data.authenticator_code, data=data)
    refusal = _step_refusal(step)
    if refusal is not None:
        return refusal
    return answer(S.RecoveryVerified, result="verified", recovery_token=step.token,
                  expires_at=step.expires_at.isoformat())


@api.operation("POST", "/recovery/<recovery_id>/password", "completeRecovery",
               summary="Set the new password with the recovery token; lifts a first or second wrong-password lock.",
               body=S.RecoveryPasswordRequest, rate_limited=True,
               answers={200: (S.PasswordRecovered, "The password is set (result password_reset).")},
               refusals={403: "the token is wrong, used or expired (code invalid_token); or " + COUNTER_REQUIRED,
                         404: UNKNOWN_RECOVERY, 409: WRONG_STEP, 410: RECOVERY_EXPIRED,
                         422: "the new password breaks the password policy (code password_policy; details.rules)"})
def complete_recovery(recovery_id):
    data = request_body()
    step = _recovery_call(recovery.complete, recovery_id, data.recovery_token, data.new_password, data=data)
    refusal = _step_refusal(step)
    if refusal is not None:
        return refusal
    wallet = step.recovery.wallet
    return answer(S.PasswordRecovered, result="password_reset", wallet_no=wallet.wallet_no,
                  password_expires_at=wallet.password_expires_at.isoformat() if wallet.password_expires_at else None,
                  unlocked=step.unlocked)


@api.operation("GET", "/openapi.json", "openapi", summary="This document.", public=True, uses_database=False,
               answers={200: (OpenApiDocument, "OpenAPI 3.1, generated from the schemas that validate the requests.")})
def openapi():
    return answer(OpenApiDocument, **api.document())
