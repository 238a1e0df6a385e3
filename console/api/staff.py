"""Staff JSON API under /api/v1: bearer tokens issued after password + TOTP, the same services,
permission checks and audit as the pages, and one JSON error shape.

Every state-changing call takes an ``Idempotency-Key`` (console/web/once.py), scoped to the
staff member (to the token for sign-out). A view's commits are deferred: its answer is built
inside the transaction and committed with the work and the key's stored copy by ``once.finish``
(console/answers.py has the rule). ``POST /tokens`` takes no key: its answer is a secret that is
never stored, and a retry simply signs in again.
"""
from __future__ import annotations

import json
import re

from flask import Blueprint, current_app, g, jsonify, request
from sqlalchemy import select

from .. import answers, crypto
from ..adapters.registry import registry_from_config
from ..extensions import csrf, db
from ..identity import mask_name
from ..models.customer import Wallet
from ..services import audit, cases, operations, receipts, staff_auth, verification, wallet_signin
from ..services.actor import Actor
from ..services.errors import DomainError, InvalidInput, NotFound
from ..web import once
from .common import ApiError, error_response, field, json_body, raise_if
from .staff_openapi import openapi_document

bp = Blueprint("staff_api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)
PUBLIC = {"staff_api.issue_token", "staff_api.openapi"}
EMPLOYEE_NO = re.compile(r"[A-Za-z0-9]{1,16}")


@bp.before_request
def _authenticate():
    request.max_content_length = 64 * 1024
    if request.endpoint in PUBLIC:
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return error_response(401, "unauthorized", "A bearer token is required (POST /api/v1/tokens).")
    row, reason = staff_auth.resolve_session(db.session, token.strip())
    token_scope = f"token:{crypto.token_digest(token.strip())[:40]}"
    if row is None or row.kind != "api":
        db.session.commit()  # a timeout's audit event
        if request.endpoint == "staff_api.revoke_token":
            replayed = once.replay_only(token_scope)  # a retried sign-out: its token is gone by now
            if replayed is not None:
                return replayed
        return error_response(401, "unauthorized", "The token is unknown, expired or revoked.",
                              **({"reason": reason} if reason else {}))
    staff_auth.touch_session(row)
    g.api_session = row
    g.api_staff = row.staff
    g.staff_id = row.staff_id
    db.session.commit()
    return once.begin_api(token_scope if request.endpoint == "staff_api.revoke_token" else f"staff:{g.staff_id}")


bp.after_request(once.finish)


def actor() -> Actor:
    staff = g.api_staff
    return Actor.for_staff(staff, source_ip=request.remote_addr, session_id=g.api_session.public_id,
                           channel=Actor.service_channel(staff))


def call(fn, *args, **kwargs):
    """Run a service (its change is committed with the answer), or roll back and record the
    refusal, answering in the one error shape."""
    try:
        result = fn(*args, **kwargs)
    except DomainError as exc:
        db.session.rollback()
        if exc.audit:
            audit.record_refusal(db.session, actor(), exc.audit)
            answers.commit()  # deferred: committed with the answer
        reason = (exc.audit or {}).get("reason_code") or exc.message
        if isinstance(exc, NotFound):
            raise ApiError(404, "not_found", "Not found.") from None
        if isinstance(exc, InvalidInput):
            raise ApiError(422, "invalid_request", "Some fields are missing or invalid.",
                           reason=reason, **({"field": exc.details["field"]} if "field" in exc.details else {})) from None
        status = 409 if exc.code == "conflict" or reason in ("already_pending", "already_decided") else 403
        if reason == "customer_sms_cap":
            status = 429  # the customer's SMS codes for the window are spent, by whoever sent them
        raise ApiError(status, reason, "The request was refused.") from None
    answers.commit()  # deferred: once.finish commits the work with its answer
    return result


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return error_response(exc.status, exc.code, exc.message, **exc.details)


# --- tokens ------------------------------------------------------------------------------------


@bp.post("/tokens")
def issue_token():
    data = json_body()
    errors: dict = {}
    employee_no = field(data, "employee_no", pattern=EMPLOYEE_NO, max_length=16, errors=errors)
    password = field(data, "password", max_length=256, errors=errors)
    code = field(data, "totp_code", pattern=re.compile(r"\d{6}"), max_length=6, errors=errors)
    raise_if(errors)
    ip = request.remote_addr
    # Unknown number, wrong password or code, locked or inactive account: one answer for all,
    # so the endpoint cannot confirm an employee number (issue #11 part 4).
    refused = ApiError(401, "invalid_credentials",
                       "Employee number, password or code is incorrect, or the account cannot sign in.")
    result = staff_auth.check_password(db.session, employee_no, password, source_ip=ip)
    db.session.commit()
    if result.status != "ok":
        raise refused
    staff = result.staff
    if staff.must_change_password or not staff.totp_enrolled:
        raise ApiError(403, "signin_incomplete", "Sign in to the console once to change the password and enrol TOTP.")
    result = staff_auth.check_totp(db.session, staff, code, source_ip=ip)
    db.session.commit()
    if result.status != "ok":
        raise refused
    token, row = staff_auth.start_session(db.session, staff, source_ip=ip, kind="api")
    db.session.commit()
    config = current_app.config
    return jsonify({"token": token, "token_type": "Bearer", "session": row.public_id,
                    "idle_timeout_seconds": config["STAFF_IDLE_TIMEOUT_MINUTES"] * 60,
                    "absolute_timeout_seconds": config["STAFF_ABSOLUTE_TIMEOUT_HOURS"] * 3600}), 201


@bp.delete("/tokens/current")
def revoke_token():
    staff_auth.end_session(db.session, g.api_session, "signout", actor=actor())
    return jsonify({"result": "revoked"})


# --- customers and cases ---------------------------------------------------------------------


def _customer_json(customer, *, detail=False) -> dict:
    body = {"customer_no": customer.customer_no, "name": mask_name(customer.name),
            "id_type": customer.id_type, "id_number": customer.id_number_masked, "mobile": customer.mobile_masked,
            "wallets": [_wallet_json(w) for w in customer.wallets]}
    if detail:
        body["flagged_for_counter_only"] = verification.is_flagged(db.session, customer.id)
    return body


def _wallet_json(wallet: Wallet) -> dict:
    return {**operations.wallet_state(wallet), "tier": wallet.tier, "lock_reason": wallet_signin.lock_reason(wallet),
            "sign_in": wallet_signin.sign_in_state(db.session, wallet).as_json()}


@bp.post("/customers/search")
def search_customers():
    data = json_body()
    errors: dict = {}
    kind = field(data, "kind", max_length=16, errors=errors)
    value = field(data, "value", max_length=40, errors=errors)
    id_type = field(data, "id_type", required=False, max_length=24, errors=errors) or "resident_id"
    raise_if(errors)
    found = call(cases.search, db.session, actor(), kind, value, id_type)
    return jsonify({"customers": [_customer_json(c) for c in found]})


@bp.get("/customers/<customer_no:customer_no>")
def get_customer(customer_no):
    customer = call(cases.get_customer, db.session, actor(), customer_no)
    return jsonify(_customer_json(customer, detail=True))


def _case_json(case) -> dict:
    proof = verification.valid_verification(db.session, actor(), case)
    return {"case_no": case.case_no, "status": case.status, "channel": case.channel,
            "customer_no": case.customer.customer_no, "opened_at": case.opened_at.isoformat(),
            "verified_until": proof.expires_at.isoformat() if proof else None,
            "verification_strength": proof.strength if proof else None}


@bp.post("/customers/<customer_no:customer_no>/cases")
def open_case(customer_no):
    customer = call(cases.get_customer, db.session, actor(), customer_no, record_view=False)
    case = call(cases.open_case, db.session, actor(), customer)
    return jsonify(_case_json(case)), 201


def _case(case_no):
    return call(cases.get_case, db.session, actor(), case_no)


@bp.get("/cases/<case_no:case_no>")
def get_case(case_no):
    return jsonify(_case_json(_case(case_no)))


def _verification_json(row) -> dict:
    return {"verification_id": row.id, "status": row.status, "strength": row.strength,
            "failure_reason": row.failure_reason,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            "questions": row.question_codes.split(",") if row.question_codes and row.status == "pending" else None,
            "code_tries": row.code_tries}


@bp.post("/cases/<case_no:case_no>/verifications/counter")
def verify_counter(case_no):
    case = _case(case_no)
    data = json_body()
    errors: dict = {}
    id_type = field(data, "id_type", max_length=24, errors=errors)
    id_number = field(data, "id_number", max_length=40, errors=errors)
    photo = data.get("photo_matches")
    if not isinstance(photo, bool):
        errors["photo_matches"] = "must be a boolean (the teller attests the photo matches the person)"
    raise_if(errors)
    row = call(verification.verify_at_counter, db.session, actor(), case, id_type=id_type, id_number=id_number,
               photo_matches=photo, registry=registry_from_config(current_app.config, db.session))
    return jsonify(_verification_json(row)), 201


def _wallet(case) -> Wallet:
    if not case.customer.wallets:
        raise ApiError(404, "not_found", "The customer has no wallet.")
    return case.customer.wallets[0]


@bp.post("/cases/<case_no:case_no>/verifications/phone")
def verify_phone_start(case_no):
    case = _case(case_no)
    row = call(verification.start_phone_verification, db.session, actor(), case, _wallet(case))
    return jsonify(_verification_json(row)), 201


@bp.post("/cases/<case_no:case_no>/verifications/phone/check")
def verify_phone_check(case_no):
    case = _case(case_no)
    data = json_body()
    errors: dict = {}
    code = field(data, "code", max_length=6, errors=errors)
    answers = data.get("answers")
    if not isinstance(answers, dict) or not all(isinstance(k, str) and isinstance(v, str) and len(v) <= 200
                                                for k, v in answers.items()):
        errors["answers"] = "must be an object of question code to answer"
    raise_if(errors)
    call(verification.require_phone_verifier, db.session, actor(), case)
    pending = verification.pending_phone_verification(db.session, actor(), case)
    if pending is None:
        raise ApiError(409, "verification_not_pending", "Start a phone verification first.")
    row = call(verification.check_phone_verification, db.session, actor(), case, pending, _wallet(case),
               code=code, answers=answers)
    return jsonify(_verification_json(row))


@bp.post("/cases/<case_no:case_no>/operations")
def perform_operation(case_no):
    case = _case(case_no)
    data = json_body()
    errors: dict = {}
    wallet_no = field(data, "wallet_no", max_length=20, errors=errors)
    operation = field(data, "operation", max_length=24, errors=errors)
    reason_code = field(data, "reason_code", max_length=32, errors=errors)
    note = field(data, "note", required=False, max_length=1000, errors=errors)
    raise_if(errors)
    wallet = db.session.scalar(select(Wallet).where(Wallet.wallet_no == wallet_no, Wallet.customer_id == case.customer_id))
    if wallet is None:
        raise ApiError(404, "not_found", "The case's customer has no such wallet.")
    if operation not in operations.RULES:
        raise ApiError(422, "invalid_request", "Unknown operation.", allowed=sorted(operations.RULES))
    result = call(operations.perform, db.session, actor(), case, wallet, operation, reason_code=reason_code, note=note)
    body = {"result": result.status, "operation": operation, "wallet": operations.wallet_state(wallet)}
    if result.approval is not None:
        body["approval_id"] = result.approval.id
        body["approval_expires_at"] = result.approval.expires_at.isoformat()
    return jsonify(body), 202 if result.approval is not None else 200


@bp.post("/cases/<case_no:case_no>/close")
def close_case(case_no):
    case = _case(case_no)
    receipt = call(receipts.close_and_issue, db.session, actor(), case)
    return jsonify({"case_no": case.case_no, "status": case.status, "receipt_no": receipt.receipt_no,
                    "pdf_sha256": receipt.pdf_sha256, "check_url": receipts.check_url(receipt.receipt_no),
                    "summary": json.loads(receipt.summary)})


# --- approvals ---------------------------------------------------------------------------------


def _approval_json(row) -> dict:
    return {"approval_id": row.id, "operation": row.operation, "status": row.status, "reason_code": row.reason_code,
            "customer_no": row.customer.customer_no, "wallet_no": row.wallet.wallet_no, "case_no": row.case.case_no,
            "maker": row.maker.employee_no, "created_at": row.created_at.isoformat(),
            "expires_at": row.expires_at.isoformat(), "evidence": json.loads(row.evidence or "{}")}


@bp.get("/approvals")
def list_approvals():
    from ..permissions import APPROVAL_DECIDE, can

    if not can(actor(), APPROVAL_DECIDE):
        audit.record(db.session, actor(), "approval.list", outcome="denied", reason_code="not_permitted")
        db.session.commit()
        raise ApiError(403, "not_permitted", "The request was refused.")
    operations.expire_stale(db.session)
    db.session.commit()
    return jsonify({"approvals": [_approval_json(a) for a in operations.pending_for_branch(db.session, actor())]})


@bp.post("/approvals/<int:approval_id>/decision")
def decide(approval_id):
    data = json_body()
    errors: dict = {}
    decision = field(data, "decision", max_length=8, pattern=re.compile(r"approve|reject"), errors=errors)
    note = field(data, "note", max_length=1000, errors=errors)
    raise_if(errors)
    row = call(operations.get_approval, db.session, actor(), approval_id)
    row = call(operations.decide, db.session, actor(), row, approve=decision == "approve", note=note)
    return jsonify(_approval_json(row))


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())

