"""OpenAPI 3.1 description of the wallet API (checked against the real routes by a test)."""
from __future__ import annotations


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_COMMON_ERRORS = {
    "400": _error("Malformed JSON (code malformed_json), or a malformed Idempotency-Key (code invalid_idempotency_key)."),
    "401": _error("Missing or wrong service key (code unauthorized)."),
    "404": _error("No active wallet has this number (code unknown_wallet)."),
    "413": _error("Body larger than 16 KiB (code payload_too_large)."),
    "415": _error("Body is not application/json (code unsupported_media_type)."),
    "422": _error("Missing or invalid fields (code invalid_request, details.fields), or an Idempotency-Key "
                  "already used for a different request (code idempotency_key_reused)."),
    "503": {**_error("The database is unavailable (code unavailable); nothing was changed. Retry after "
                     "Retry-After seconds (with the same Idempotency-Key)."),
            "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
}

_IN_FLIGHT = "a request with this Idempotency-Key is still being processed (code request_in_flight); retry after Retry-After seconds."
_IDEMPOTENT = {"parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}]}


def _in_flight(also: str = "") -> dict:
    text = f"{also}{_IN_FLIGHT}" if also else _IN_FLIGHT[0].upper() + _IN_FLIGHT[1:]
    return {**_error(text), "headers": {"Retry-After": {"schema": {"type": "integer"}}}}

_WALLET_FIELDS = {
    "wallet_no": {"type": "string", "pattern": "^[0-9]{8,20}$"},
    "client_ip": {"type": "string", "description": "The customer's address as seen by the wallet back end."},
    "device_id": {"type": "string", "maxLength": 64},
}


def openapi_document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Branch Console wallet API", "version": "1.0.0",
                 "description": "Called by the wallet's own back end. Authenticate with "
                                "`Authorization: Bearer <service key>`. Every error has the shape "
                                "`{error: {code, message, details?, request_id}}`; the request id is also the "
                                "`X-Request-ID` header. Every state-changing call takes an `Idempotency-Key` "
                                "(IETF httpapi draft): a retry with the same key gets the first answer again, "
                                "marked `Idempotent-Replayed: true`, and the work is done once. Keys belong to "
                                "the service key and are kept 24 hours; answers that say \"try again\" (5xx, "
                                "429, a `Retry-After`, sign-in `busy`) are not kept."},
        "servers": [{"url": "/api/wallet/v1"}],
        "security": [{"serviceKey": []}],
        "paths": {
            "/sign-in": {"post": {
                **_IDEMPOTENT,
                "operationId": "signIn",
                "summary": "Check a customer's wallet password, applying the lockout policy.",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["wallet_no", "password"],
                    "properties": {**_WALLET_FIELDS, "password": {"type": "string", "maxLength": 128}}}}}},
                "responses": {"200": {"description": "The outcome of the attempt (with result busy, a "
                                                     "Retry-After header).", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/SignInResult"}}}},
                    "409": _in_flight(), **_COMMON_ERRORS},
            }},
            "/change-password": {"post": {
                **_IDEMPOTENT,
                "operationId": "changePassword",
                "summary": "Set a new password with the current or the temporary password.",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["wallet_no", "current_password", "new_password"],
                    "properties": {**_WALLET_FIELDS, "current_password": {"type": "string"},
                                   "new_password": {"type": "string"}}}}}},
                "responses": {
                    "200": {"description": "Password changed (result password_changed)."},
                    "403": _error("Not authenticated: code invalid_credentials (details.remaining_attempts), "
                                  "locked (details.locked_until, details.reason) or frozen."),
                    "409": _in_flight("Every attempt slot is being checked (code busy); or "),
                    **{**_COMMON_ERRORS, "422": _error(
                        "invalid_request, idempotency_key_reused, or password_policy with details.rules from: "
                        "too_short, common, contains_mobile, contains_id_number, contains_birth_date, reused.")},
                },
            }},
            "/security-questions": {
                "get": {"operationId": "listSecurityQuestions", "summary": "The question codes on offer.",
                        "responses": {"200": {"description": "Question codes and how many are required."},
                                      "401": _COMMON_ERRORS["401"]}},
                "put": {
                    **_IDEMPOTENT,
                    "operationId": "setSecurityQuestions",
                    "summary": "Replace the security questions (password required).",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["wallet_no", "password", "questions"],
                        "properties": {**_WALLET_FIELDS, "password": {"type": "string"}, "questions": {
                            "type": "array", "items": {"type": "object", "required": ["code", "answer"],
                                                       "properties": {"code": {"type": "string"},
                                                                      "answer": {"type": "string"}}}}}}}}},
                    "responses": {"200": {"description": "Questions set (result questions_set)."},
                                  "403": _error("Not authenticated, or the password must be changed first."),
                                  "409": _in_flight("Every attempt slot is being checked (code busy); or "),
                                  **_COMMON_ERRORS},
                },
            },
            "/openapi.json": {"get": {"operationId": "openapi", "security": [],
                                      "summary": "This document.", "responses": {"200": {"description": "OpenAPI"}}}},
        },
        "components": {
            "securitySchemes": {"serviceKey": {"type": "http", "scheme": "bearer"}},
            "parameters": {"IdempotencyKey": {
                "name": "Idempotency-Key", "in": "header", "required": False,
                "description": "8 to 128 characters from A-Z a-z 0-9 . _ : ~ + / = - (a UUID will do), optionally "
                               "in double quotes. The same key with the same request returns the first answer; "
                               "with another method, path or body it is a 422.",
                "schema": {"type": "string", "pattern": "^\"?[A-Za-z0-9._:~+/=-]{8,128}\"?$"}}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                   "details": {"type": "object"}, "request_id": {"type": "string"}}}}},
                "SignInResult": {"type": "object", "required": ["result", "wallet_no"], "properties": {
                    "result": {"enum": ["ok", "must_change_password", "password_expired", "invalid_credentials",
                                        "locked", "frozen", "busy"]},
                    "wallet_no": {"type": "string"},
                    "remaining_attempts": {"type": "integer"},
                    "reason": {"type": "string"},
                    "locked_until": {"type": ["string", "null"], "format": "date-time"},
                    "unlock": {"enum": ["automatic", "staff"]},
                }},
            },
        },
    }
