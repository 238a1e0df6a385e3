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

from flask import Blueprint, current_app, g, request
from sqlalchemy import select

from .. import boundary, crypto, policy
from ..adapters.registry import registry_from_config
from ..extensions import csrf, db
from ..identity import mask_name
from ..models.customer import Wallet
from ..services import cases, operations, overview, passkeys, receipts, recovery, staff_auth, verification
from ..services.actor import Actor
from ..services.errors import DomainError
from ..web import once
from . import staff_schemas as S
from .common import ApiError, domain_error_response, error_response
from .schemas import ApiSpec, OpenApiDocument, answer, request_body

bp = Blueprint("staff_api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)
PUBLIC = {"staff_api.issue_token", "staff_api.openapi"}
api = ApiSpec(bp, title="Branch Console staff API", security_scheme="bearer", description=lambda rules: (
    "The service desk as JSON. Tokens come from POST /tokens after password + TOTP, expire after "
    f"{rules.staff_signin.idle_timeout_minutes} minutes idle or {rules.staff_signin.absolute_timeout_hours} hours, "
    "and are revoked at sign-out or when the account is disabled. Every call is "
    "permission-checked and audited like the pages. Every error has the shape "
    "`{error: {code, message, details?, request_id}}`; the request id is also the `X-Request-ID` header. "
    "Request bodies are validated against the schemas below: unknown fields are refused, strings carry no "
    "control characters (tab, CR and LF aside), and an invalid body is a 422 `invalid_request` whose "
    "`details.fields` maps each field to what is wrong with it. A method a path does not offer is a 405 with "
    "an `Allow` header. Every state-changing call but POST /tokens takes an `Idempotency-Key` (IETF httpapi "
    "draft): a retry with the same key gets the first answer again, marked `Idempotent-Replayed: true`, and "
    "the work is done once. Keys belong to the staff member (to the token for DELETE /tokens/current) and "
    f"are kept {rules.idempotency.key_hours} hours; 5xx and 429 answers are not kept. POST /tokens takes none: its answer is a secret, "
    "never stored; a retry signs in again. POST /customers/search only reads: it takes none either."))

SLIP = ("a slip of the staff member's, stored nowhere and not counted against the customer (code "
        "invalid_request; details.reason: id_format, id_checksum, id_birth_date, passport_format, "
        "document_type_mismatch, document_expired, photo_not_attested, code_format or answer_missing; "
        "details.field and details.problems), or an invalid body")
REFUSED = ("refused by the rules: permission, branch scope or the case's state (the code names the reason, "
           "e.g. not_permitted, not_your_case, wrong_case)")


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
        boundary.commit_now()  # a timeout's audit event
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
    boundary.commit_now()
    return once.begin_api(token_scope if request.endpoint == "staff_api.revoke_token" else f"staff:{g.staff_id}")


bp.after_request(once.finish)


def actor() -> Actor:
    staff = g.api_staff
    return Actor.for_staff(staff, source_ip=request.remote_addr, session_id=g.api_session.public_id,
                           channel=Actor.service_channel(staff), interface="api")


def perform(fn, *args, **kwargs):
    """A service call by the token's staff member, through the boundary (console/boundary.py); a
    refusal is answered by :func:`_refused`."""
    return boundary.perform(actor(), fn, *args, **kwargs)


@bp.errorhandler(DomainError)
def _refused(exc: DomainError):
    return domain_error_response(exc)


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return error_response(exc.status, exc.code, exc.message, **exc.details)


# --- tokens ------------------------------------------------------------------------------------


@api.operation("POST", "/tokens", "issueToken", summary="Sign in: password and TOTP code; returns a bearer token.",
               body=S.TokenRequest, answers={201: (S.Token, "Signed in.")}, public=True, idempotent=False,
               rate_limited=True, refusals={
                   401: "employee number, password or code incorrect, or an account that cannot sign in "
                        "(code invalid_credentials: one answer for all)",
                   403: "sign in to the console once to change the password and enrol TOTP (code signin_incomplete); "
                        "a role that must sign in with a security key gets no token for password and TOTP "
                        "(code key_required)"})
def issue_token():
    data = request_body()
    ip = request.remote_addr
    # Unknown number, wrong password or code, locked or inactive account: one answer for all,
    # so the endpoint cannot confirm an employee number (issue #11 part 4).
    refused = ApiError(401, "invalid_credentials",
                       "Employee number, password or code is incorrect, or the account cannot sign in.")
    result = boundary.step(staff_auth.check_password, data.employee_no, data.password, source_ip=ip)  # it counts
    if result.status != "ok":
        raise refused
    staff = result.staff
    if staff.must_change_password or not staff.totp_enrolled:
        raise ApiError(403, "signin_incomplete", "Sign in to the console once to change the password and enrol TOTP.")
    if passkeys.key_required(staff):
        raise ApiError(403, "key_required", "This role signs in with a security key, which the API does not take.")
    result = boundary.step(staff_auth.check_totp, staff, data.totp_code, source_ip=ip)  # it counts
    if result.status != "ok":
        raise refused
    token, row = boundary.step(staff_auth.start_session, staff, source_ip=ip, kind="api")
    rules = policy.current().staff_signin
    return answer(S.Token, 201, token=token, token_type="Bearer", session=row.public_id,
                  idle_timeout_seconds=rules.idle_timeout_minutes * 60,
                  absolute_timeout_seconds=rules.absolute_timeout_hours * 3600)


@api.operation("DELETE", "/tokens/current", "revokeToken", summary="Sign out: revoke this token.",
               answers={200: (S.Revoked, "Revoked.")})
def revoke_token():
    perform(staff_auth.sign_out, g.api_session)
    return answer(S.Revoked, result="revoked")


# --- customers and cases ---------------------------------------------------------------------


def _customer_json(customer) -> dict:
    view = overview.customer_overview(db.session, actor(), customer)
    return {"customer_no": customer.customer_no, "name": mask_name(customer.name),
            "id_type": customer.id_type, "id_number": customer.id_number_masked, "mobile": customer.mobile_masked,
            "wallets": [w.state() for w in view.wallets], "flagged_for_counter_only": view.flagged}


@api.operation("POST", "/customers/search", "searchCustomers",
               summary="Exact search by wallet number, mobile or ID number.", body=S.SearchRequest,
               description="Only reads: it takes no Idempotency-Key (one sent is ignored), and its answers are "
                           "never kept; a retry simply searches again (and is audited again).",
               answers={200: (S.Customers, "The customers found (none, or one).")}, rate_limited=True,
               idempotent=False, refusals={
                   403: REFUSED,
                   422: "a value of the wrong format for its kind (code invalid_request; details.reason, e.g. "
                        "mobile_format or id_checksum, and details.field)"})
def search_customers():
    data = request_body()
    found = perform(cases.search, data.kind, data.value, data.id_type or "resident_id")
    return answer(S.Customers, customers=[_customer_json(c) for c in found])


@api.operation("GET", "/customers/<customer_no:customer_no>", "getCustomer", summary="A customer, masked.",
               answers={200: (S.Customer, "The customer.")}, refusals={403: REFUSED})
def get_customer(customer_no):
    customer = perform(cases.get_customer, customer_no)
    recoveries = [{"started_at": row.started_at.isoformat(), "identified_by": row.identified_by,
                   "status": row.status, "reason": row.reason,
                   "source_ip": row.source_ip, "device_id": row.device_id}
                  for row in recovery.recent(db.session, customer.id)]
    return answer(S.Customer, **_customer_json(customer), self_service=recoveries)


def _case_json(case) -> dict:
    view = overview.case_overview(db.session, actor(), case)
    proof = view.proof
    return {"case_no": case.case_no, "status": case.status, "channel": case.channel,
            "customer_no": case.customer.customer_no, "opened_at": case.opened_at.isoformat(),
            "verified_until": proof.expires_at.isoformat() if proof else None,
            "verification_strength": proof.strength if proof else None,
            "adoptable_verification": {
                "verification_id": view.adoptable.id, "case_no": view.adoptable.case.case_no,
                "expires_at": view.adoptable.expires_at.isoformat()} if view.adoptable else None,
            "operations": [{"wallet_no": row.wallet.wallet_no, "operation": row.operation, "state": row.state,
                            "reason": row.reason, "needs_approval": row.needs_approval} for row in view.operations]}


@api.operation("POST", "/customers/<customer_no:customer_no>/cases", "openCase",
               summary="Open a case for this customer.", answers={201: (S.Case, "The case opened.")},
               refusals={403: REFUSED})
def open_case(customer_no):
    customer = perform(cases.get_customer, customer_no, record_view=False)
    case = perform(cases.open_case, customer)
    return answer(S.Case, 201, **_case_json(case))


def _case(case_no):
    return perform(cases.get_case, case_no)


@api.operation("GET", "/cases/<case_no:case_no>", "getCase", summary="A case of your branch.",
               answers={200: (S.Case, "The case, with what may be done in it.")}, refusals={403: REFUSED})
def get_case(case_no):
    return answer(S.Case, **_case_json(_case(case_no)))


def _verification_json(row) -> dict:
    return {"verification_id": row.id, "status": row.status, "strength": row.strength,
            "failure_reason": row.failure_reason,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            "questions": row.question_codes.split(",") if row.question_codes and row.status == "pending" else None,
            "code_tries": row.code_tries}


@api.operation("POST", "/cases/<case_no:case_no>/verifications/counter", "verifyAtCounter",
               summary="Strong verification with the ID document.", body=S.CounterVerificationRequest,
               answers={201: (S.Verification, "The verification, passed or failed (failure_reason).")},
               refusals={403: REFUSED, 422: SLIP})
def verify_counter(case_no):
    case = _case(case_no)
    data = request_body()
    row = perform(verification.verify_at_counter, case, id_type=data.id_type, id_number=data.id_number,
                  photo_matches=data.photo_matches, registry=registry_from_config(current_app.config, db.session))
    return answer(S.Verification, 201, **_verification_json(row))


@api.operation("POST", "/cases/<case_no:case_no>/verifications/adopt", "adoptVerification",
               summary="Use a still-valid verification of yours from an earlier case of this customer.",
               body=S.AdoptRequest, answers={201: (S.Verification, "This case's verification, adopted.")},
               refusals={403: REFUSED + "; or already_verified, verification_not_adoptable, "
                                        "customer_flagged_counter_only"})
def adopt_verification(case_no):
    case = _case(case_no)
    data = request_body()
    row = perform(verification.adopt_verification, case, data.verification_id)
    return answer(S.Verification, 201, **_verification_json(row))


def _wallet(case) -> Wallet:
    if not case.customer.wallets:
        raise ApiError(404, "not_found", "The customer has no wallet.")
    return case.customer.wallets[0]


@api.operation("POST", "/cases/<case_no:case_no>/verifications/phone", "startPhoneVerification",
               summary="Send the SMS code; returns the question codes to ask.",
               answers={201: (S.Verification, "Pending: the code is on its way.")}, rate_limited=True, refusals={
                   403: REFUSED, 404: "the customer has no wallet (code not_found)",
                   429: "the customer's SMS codes for the window are spent, whoever sent them (code customer_sms_cap)"})
def verify_phone_start(case_no):
    case = _case(case_no)
    row = perform(verification.start_phone_verification, case, _wallet(case))
    return answer(S.Verification, 201, **_verification_json(row))


@api.operation("POST", "/cases/<case_no:case_no>/verifications/phone/check", "checkPhoneVerification",
               summary="Check the code the customer read out and the answers.", body=S.PhoneCheckRequest,
               answers={200: (S.Verification, "The verification: passed, failed, or still pending (code_tries).")},
               refusals={403: REFUSED, 404: "the customer has no wallet (code not_found)",
                         409: "no phone verification of yours is pending in this case (code verification_not_pending)",
                         422: SLIP})
def verify_phone_check(case_no):
    case = _case(case_no)
    data = request_body()
    perform(verification.require_phone_verifier, case)
    pending = verification.pending_phone_verification(db.session, actor(), case)
    if pending is None:
        raise ApiError(409, "verification_not_pending", "Start a phone verification first.")
    row = perform(verification.check_phone_verification, case, pending, _wallet(case),
                  code=data.code, answers=data.answers)
    return answer(S.Verification, **_verification_json(row))


@api.operation("POST", "/cases/<case_no:case_no>/operations", "performOperation",
               summary="Run an operation (200) or file the approval it needs (202).", body=S.OperationRequest,
               answers={200: (S.OperationResult, "Done (result done)."),
                        202: (S.OperationResult, "Filed for a supervisor's approval (result pending_approval).")},
               refusals={403: REFUSED + "; or a verification missing or expired (code verification_missing_or_expired)",
                         404: "the case's customer has no such wallet (code not_found)",
                         409: "a request for this is already pending (code already_pending)"})
def perform_operation(case_no):
    case = _case(case_no)
    data = request_body()
    wallet = db.session.scalar(select(Wallet).where(Wallet.wallet_no == data.wallet_no,
                                                    Wallet.customer_id == case.customer_id))
    if wallet is None:
        raise ApiError(404, "not_found", "The case's customer has no such wallet.")
    result = perform(operations.perform, case, wallet, data.operation, reason_code=data.reason_code, note=data.note)
    body = {"result": result.status, "operation": data.operation, "wallet": operations.wallet_state(wallet)}
    if result.approval is not None:
        body["approval_id"] = result.approval.id
        body["approval_expires_at"] = result.approval.expires_at.isoformat()
    return answer(S.OperationResult, 202 if result.approval is not None else 200, **body)


@api.operation("POST", "/cases/<case_no:case_no>/close", "closeCase",
               summary="Close the case and issue the receipt record.",
               answers={200: (S.ClosedCase, "Closed, with its receipt.")}, refusals={403: REFUSED})
def close_case(case_no):
    case = _case(case_no)
    receipt = perform(receipts.close_and_issue, case)
    return answer(S.ClosedCase, case_no=case.case_no, status=case.status, receipt_no=receipt.receipt_no,
                  pdf_sha256=receipt.pdf_sha256, check_url=receipts.check_url(receipt.receipt_no),
                  summary=json.loads(receipt.summary))


# --- approvals ---------------------------------------------------------------------------------


def _approval_json(row) -> dict:
    return {"approval_id": row.id, "operation": row.operation, "status": row.status, "reason_code": row.reason_code,
            "customer_no": row.customer.customer_no, "wallet_no": row.wallet.wallet_no, "case_no": row.case.case_no,
            "maker": row.maker.employee_no, "created_at": row.created_at.isoformat(),
            "expires_at": row.expires_at.isoformat(), "evidence": json.loads(row.evidence or "{}")}


@api.operation("GET", "/approvals", "listApprovals", summary="Pending requests of your branch (supervisors).",
               answers={200: (S.Approvals, "The pending requests.")}, refusals={403: REFUSED})
def list_approvals():
    return answer(S.Approvals, approvals=[_approval_json(a) for a in perform(overview.pending_approvals)])


@api.operation("POST", "/approvals/<int:approval_id>/decision", "decideApproval",
               summary="Approve (and execute once) or reject; a note is required.", body=S.DecisionRequest,
               answers={200: (S.Approval, "Decided (status executed or rejected).")},
               refusals={403: REFUSED + "; or your own request (self_approval), or expired",
                         409: "already decided (code already_decided)"})
def decide(approval_id):
    data = request_body()
    row = perform(operations.get_approval, approval_id)
    row = perform(operations.decide, row, approve=data.decision == "approve", note=data.note)
    return answer(S.Approval, **_approval_json(row))


@api.operation("GET", "/openapi.json", "openapi", summary="This document.",
               answers={200: (OpenApiDocument, "OpenAPI 3.1, generated from the schemas that validate the requests.")},
               public=True, uses_database=False)
def openapi():
    return answer(OpenApiDocument, **api.document())
