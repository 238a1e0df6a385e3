"""OpenAPI 3.1 description of the staff API (checked against the real routes by a test)."""
from __future__ import annotations

_ERR = {"description": "Error in the one shape {error: {code, message, details, request_id}}.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_RETRY = {"Retry-After": {"schema": {"type": "integer"}}}
_UNAVAILABLE = {**_ERR, "description": "The database is unavailable (code unavailable); nothing was changed. Retry "
                                       "after Retry-After seconds (with the same Idempotency-Key).", "headers": _RETRY}
# Every state-changing operation takes an Idempotency-Key, but signing in (its answer is a secret).
_NOT_IDEMPOTENT = {"issueToken"}


def _op(op_id: str, summary: str, *, body: dict | None = None, ok: str = "200", public: bool = False) -> dict:
    operation = {"operationId": op_id, "summary": summary,
                 "responses": {ok: {"description": "Success."}, "401": _ERR, "403": _ERR, "404": _ERR,
                               "409": _ERR, "422": _ERR, "503": _UNAVAILABLE}}
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": [k for k, v in body.items() if v.pop("required", True)],
            "properties": body}}}}
    if public:
        operation["security"] = []
    return operation


def _s(**extra):
    return {"type": "string", **extra}


def _idempotent(document: dict) -> dict:
    for operations in document["paths"].values():
        for method, operation in operations.items():
            if method == "get" or operation["operationId"] in _NOT_IDEMPOTENT:
                continue
            operation["parameters"] = [*operation.get("parameters", []),
                                       {"$ref": "#/components/parameters/IdempotencyKey"}]
            operation["responses"].update({
                "400": {**_ERR, "description": "Malformed body, or a malformed Idempotency-Key "
                                               "(code invalid_idempotency_key)."},
                "409": {**_ERR, "headers": _RETRY, "description": "Refused as a conflict, or a request with this "
                        "Idempotency-Key is still being processed (code request_in_flight; retry after Retry-After)."},
                "422": {**_ERR, "description": "Missing or invalid fields, or an Idempotency-Key already used for a "
                                               "different request (code idempotency_key_reused)."},
            })
    return document


def openapi_document() -> dict:
    case = {"name": "case_no", "in": "path", "required": True, "schema": _s()}
    return _idempotent({
        "openapi": "3.1.0",
        "info": {"title": "Branch Console staff API", "version": "1.0.0",
                 "description": "The service desk as JSON. Tokens come from POST /tokens after password + TOTP, "
                                "expire after 15 minutes idle or 12 hours, and are revoked at sign-out or when the "
                                "account is disabled. Every call is permission-checked and audited like the pages. "
                                "Every error has the shape `{error: {code, message, details?, request_id}}`; the "
                                "request id is also the `X-Request-ID` header. Every state-changing call but "
                                "POST /tokens takes an `Idempotency-Key` (IETF httpapi draft): a retry with the "
                                "same key gets the first answer again, marked `Idempotent-Replayed: true`, and the "
                                "work is done once. Keys belong to the staff member (to the token for "
                                "DELETE /tokens/current) and are kept 24 hours; 5xx and 429 answers are not kept. "
                                "POST /tokens takes none: its answer is a secret, never stored; a retry signs in again."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/tokens": {"post": _op("issueToken", "Sign in: password and TOTP code; returns a bearer token.",
                                    body={"employee_no": _s(), "password": _s(), "totp_code": _s(pattern="^[0-9]{6}$")},
                                    ok="201", public=True)},
            "/tokens/current": {"delete": _op("revokeToken", "Sign out: revoke this token.")},
            "/customers/search": {"post": _op("searchCustomers", "Exact search by wallet number, mobile or ID number.",
                                              body={"kind": {"enum": ["wallet_no", "mobile", "id_number"]},
                                                    "value": _s(), "id_type": _s(required=False)})},
            "/customers/{customer_no}": {"get": {**_op("getCustomer", "A customer, masked."), "parameters": [
                {"name": "customer_no", "in": "path", "required": True, "schema": _s()}]}},
            "/customers/{customer_no}/cases": {"post": {**_op("openCase", "Open a case for this customer.", ok="201"),
                                                        "parameters": [{"name": "customer_no", "in": "path",
                                                                        "required": True, "schema": _s()}]}},
            "/cases/{case_no}": {"get": {**_op("getCase", "A case of your branch."), "parameters": [case]}},
            "/cases/{case_no}/verifications/counter": {"post": {**_op(
                "verifyAtCounter", "Strong verification with the ID document.",
                body={"id_type": _s(), "id_number": _s(), "photo_matches": {"type": "boolean"}}, ok="201"),
                "parameters": [case]}},
            "/cases/{case_no}/verifications/phone": {"post": {**_op(
                "startPhoneVerification", "Send the SMS code; returns the question codes to ask.", ok="201"),
                "parameters": [case]}},
            "/cases/{case_no}/verifications/phone/check": {"post": {**_op(
                "checkPhoneVerification", "Check the code the customer read out and the answers.",
                body={"code": _s(pattern="^[0-9]{6}$"), "answers": {"type": "object"}}), "parameters": [case]}},
            "/cases/{case_no}/operations": {"post": {**_op(
                "performOperation", "Run an operation (200) or file the approval it needs (202).",
                body={"wallet_no": _s(), "operation": {"enum": ["unlock", "reset_password", "reset_questions",
                                                                "reset_2fa", "place_hold", "release_hold",
                                                                "release_freeze"]},
                      "reason_code": _s(), "note": _s(required=False)}), "parameters": [case]}},
            "/cases/{case_no}/close": {"post": {**_op("closeCase", "Close the case and issue the receipt record."),
                                                "parameters": [case]}},
            "/approvals": {"get": _op("listApprovals", "Pending requests of your branch (supervisors).")},
            "/approvals/{approval_id}/decision": {"post": {**_op(
                "decideApproval", "Approve (and execute once) or reject; a note is required.",
                body={"decision": {"enum": ["approve", "reject"]}, "note": _s()}),
                "parameters": [{"name": "approval_id", "in": "path", "required": True, "schema": {"type": "integer"}}]}},
            "/openapi.json": {"get": _op("openapi", "This document.", public=True)},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "parameters": {"IdempotencyKey": {
                "name": "Idempotency-Key", "in": "header", "required": False,
                "description": "8 to 128 characters from A-Z a-z 0-9 . _ : ~ + / = - (a UUID will do), optionally "
                               "in double quotes. The same key with the same request returns the first answer; "
                               "with another method, path or body it is a 422.",
                "schema": _s(pattern="^\"?[A-Za-z0-9._:~+/=-]{8,128}\"?$")}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": _s(), "message": _s(), "details": {"type": "object"},
                               "request_id": _s()}}}}},
        },
    })
