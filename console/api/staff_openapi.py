"""OpenAPI 3.1 description of the staff API (checked against the real routes by a test)."""
from __future__ import annotations

_ERR = {"description": "Error in the one shape {error: {code, message, details}}.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _op(op_id: str, summary: str, *, body: dict | None = None, ok: str = "200", public: bool = False) -> dict:
    operation = {"operationId": op_id, "summary": summary,
                 "responses": {ok: {"description": "Success."}, "401": _ERR, "403": _ERR, "404": _ERR,
                               "409": _ERR, "422": _ERR}}
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": [k for k, v in body.items() if v.pop("required", True)],
            "properties": body}}}}
    if public:
        operation["security"] = []
    return operation


def _s(**extra):
    return {"type": "string", **extra}


def openapi_document() -> dict:
    case = {"name": "case_no", "in": "path", "required": True, "schema": _s()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Branch Console staff API", "version": "1.0.0",
                 "description": "The service desk as JSON. Tokens come from POST /tokens after password + TOTP, "
                                "expire after 15 minutes idle or 12 hours, and are revoked at sign-out or when the "
                                "account is disabled. Every call is permission-checked and audited like the pages."},
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
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": _s(), "message": _s(), "details": {"type": "object"}}}}}},
        },
    }
