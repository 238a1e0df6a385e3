"""The staff API's payloads, each described once (see console/api/schemas.py for how they are used)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema

from .. import codes
from ..identity import ID_TYPES
from ..services.operations import registry
from .schemas import TEXT_PATTERN, Answer, OneOf, Payload, Timestamp, absent, config_value, shaped, text

EmployeeNo = shaped("^[A-Za-z0-9]{1,16}$", "1 to 16 letters and digits", max_length=16)
SixDigits = shaped("^[0-9]{6}$", "6 digits", max_length=6)
WalletNo = shaped("^[0-9]{8,20}$", "8 to 20 digits", max_length=20)
IdType = Annotated[str, OneOf(lambda: list(ID_TYPES)),
                   Field(description="The identity document's type.")]
OperationCode = Annotated[str, OneOf(registry.codes), Field(description="A wallet operation (the registry's codes).")]
ReasonCode = Annotated[str, OneOf(lambda: config_value("REASON_CODES", codes.REASON_CODES)),
                       Field(description="Why (the configured reason codes).")]
StaffPassword = text(256)
SearchValue = text(40, visible=True)
DocumentNumber = text(40)
AnswerText = text(200, min_length=0)
Note = text(1000)
RequiredNote = text(1000, visible=True)


# --- requests -------------------------------------------------------------------------------------


class TokenRequest(Payload):
    """Sign in with the password and a current TOTP code."""

    employee_no: EmployeeNo
    password: StaffPassword
    totp_code: SixDigits


class SearchRequest(Payload):
    """An exact search: a wallet number (up to 20 digits), a mainland mobile number (11 digits; full-width
    digits, spaces, dashes and +86 are accepted) or an identity document number (of ``id_type``; a resident
    ID has 17 digits and a check digit or X). A value of the wrong format for its kind is a 422 with
    ``details.reason`` (wallet_no_format, mobile_format, id_format, id_birth_date, id_checksum,
    passport_format) and ``details.field`` = value."""

    kind: Literal["wallet_no", "mobile", "id_number"]
    value: SearchValue
    id_type: IdType | None = Field(default=None, description="With kind id_number; resident_id if left out.")


class CounterVerificationRequest(Payload):
    """The ID document the customer hands over at the counter. A well-formed document that does not
    match the customer's record or the citizen-ID registry is a failed verification (201); a slip of
    the staff member's (a malformed number, a wrong check digit, the photo not attested, the document
    under the wrong type, an expired document) is a 422 that stores nothing and does not count against
    the customer."""

    id_type: IdType
    id_number: DocumentNumber
    photo_matches: bool = Field(description="The teller attests that the photo matches the person.")


QUESTION_KEY = "^[^\\u0000-\\u001f\\u007f]*$"  # a key may carry no control character at all
QuestionCode = Annotated[str, Field(max_length=64, pattern=QUESTION_KEY)]


class PhoneCheckRequest(Payload):
    """The SMS code the customer reads out, and the answers to the questions asked."""

    code: SixDigits
    answers: Annotated[dict[QuestionCode, AnswerText], WithJsonSchema({
        "type": "object", "description": "Question code to the customer's answer (up to 200 characters).",
        "propertyNames": {"maxLength": 64, "pattern": QUESTION_KEY},
        "additionalProperties": {"type": "string", "maxLength": 200, "pattern": TEXT_PATTERN}})]


class OperationRequest(Payload):
    wallet_no: WalletNo
    operation: OperationCode
    reason_code: ReasonCode
    note: Note | None = None


class DecisionRequest(Payload):
    decision: Literal["approve", "reject"]
    note: RequiredNote = Field(description="Required: why.")


# --- answers --------------------------------------------------------------------------------------


class Token(Answer):
    token: str = Field(description="Send as `Authorization: Bearer <token>`.")
    token_type: Literal["Bearer"]
    session: str = Field(description="The session's public id (in the audit trail).")
    idle_timeout_seconds: int
    absolute_timeout_seconds: int


class Revoked(Answer):
    result: Literal["revoked"]


class WalletState(Answer):
    """A wallet's state as the audit trail keeps it (no secret, no personal identifier)."""

    wallet_no: str
    lock_kind: Literal["temporary", "until_unlock"] | None
    lock_until: Timestamp | None
    frozen: bool
    hold: bool
    must_change_password: bool
    security_questions: int = Field(description="How many are set.")
    twofa_bound: bool


class SignInState(Answer):
    failed_count: int
    in_progress: int = Field(description="Checks of the password at work now.")
    interrupted: int = Field(description="Checks whose worker died; settled by the next attempt or by staff.")
    oldest_claim_at: Timestamp | None


class WalletOverview(WalletState):
    tier: int
    lock_reason: str | None
    sign_in: SignInState


class SelfServiceRecovery(Answer):
    """One self-service recovery (忘记密码 in the wallet app) of the customer's wallets."""

    started_at: Timestamp
    identified_by: Literal["wallet_no", "mobile"]
    status: Annotated[str, Field(description="code_sent, code_verified, verified, completed, failed, "
                                             "sent_to_counter or expired.")]
    reason: str | None = Field(description="Why it failed or sent the customer to the counter "
                                            "(details_mismatch: the ID number did not match the wallet).")
    source_ip: str | None
    device_id: str | None


class Customer(Answer):
    """A customer, masked."""

    customer_no: str
    name: str = Field(description="Masked.")
    id_type: str
    id_number: str = Field(description="Masked.")
    mobile: str = Field(description="Masked.")
    wallets: list[WalletOverview]
    flagged_for_counter_only: bool = Field(description="Served at the counter only, after repeated failed "
                                                       "verifications.")
    self_service: list[SelfServiceRecovery] = absent(description="With one customer (not in search results): "
                                                                 "the recoveries of the policy's last days, "
                                                                 "newest first.")


class Customers(Answer):
    customers: list[Customer]


class OperationAvailability(Answer):
    wallet_no: str
    operation: str
    state: str = Field(description="available, needs_verification, not_allowed, ...")
    reason: str | None
    needs_approval: bool


class Case(Answer):
    case_no: str
    status: str = Field(description="open or closed.")
    channel: Literal["counter", "phone"]
    customer_no: str
    opened_at: Timestamp
    verified_until: Timestamp | None
    verification_strength: Literal["strong", "medium"] | None
    adoptable_verification: AdoptableVerification | None = Field(
        description="A verification of yours from an earlier case this case may adopt (POST .../verifications/adopt).")
    operations: list[OperationAvailability]


class AdoptableVerification(Answer):
    verification_id: int
    case_no: str = Field(description="The earlier case it was made in.")
    expires_at: Timestamp


def _whole(value):
    """JSON does not tell 55 from 55.0, and JSON Schema calls both an integer: take either."""
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2**53 else value


RowId = Annotated[int, BeforeValidator(_whole), Field(ge=1, le=2_147_483_647)]


class AdoptRequest(Payload):
    """Use a still-valid verification of your own, made for the same customer on the same channel in
    an earlier case, in this case (recorded on this case's log and receipt; its expiry is kept)."""

    verification_id: RowId


class Verification(Answer):
    verification_id: int
    status: Literal["pending", "passed", "failed"]
    strength: Literal["strong", "medium"]
    failure_reason: str | None
    expires_at: Timestamp | None
    questions: list[str] | None = Field(description="The question codes to ask, while pending.")
    code_tries: int


class OperationResult(Answer):
    result: Literal["done", "pending_approval"]
    operation: str
    wallet: WalletState
    approval_id: int = absent(description="With 202: the approval request filed.")
    approval_expires_at: Timestamp = absent(description="With 202.")


class ClosedCase(Answer):
    case_no: str
    status: str
    receipt_no: str
    pdf_sha256: str
    check_url: str = Field(description="Where the customer checks the receipt (its QR code).")
    summary: dict[str, Any]


class Approval(Answer):
    approval_id: int
    operation: str
    status: str = Field(description="pending, approved, rejected, executed or expired.")
    reason_code: str
    customer_no: str
    wallet_no: str
    case_no: str
    maker: str = Field(description="The maker's employee number.")
    created_at: Timestamp
    expires_at: Timestamp
    evidence: dict[str, Any]


class Approvals(Answer):
    approvals: list[Approval]
