"""The wallet API's payloads, each described once (see console/api/schemas.py for how they are used)."""
from __future__ import annotations

from typing import Annotated, Literal

from flask import has_app_context
from pydantic import Field, model_validator

from .. import codes
from ..identity import ID_TYPES
from .schemas import Answer, IpAddress, ItemCount, OneOf, Payload, Timestamp, absent, config_value, shaped, text

WalletNo = shaped("^[0-9]{8,20}$", "8 to 20 digits", max_length=20)
DeviceId = shaped("^[A-Za-z0-9._:-]{1,64}$", "1 to 64 characters from A-Z a-z 0-9 . _ : -", max_length=64)
Password = text(128)
SecurityAnswer = text(200, visible=True, description="2 to 100 characters once full-width forms are folded and "
                                                     "spaces collapsed.")


def _questions_required() -> int:
    if has_app_context():
        from .. import policy

        return policy.current().wallet_passwords.security_questions_required
    return config_value("SECURITY_QUESTIONS_REQUIRED", 2)


# --- requests -------------------------------------------------------------------------------------


class _Caller(Payload):
    wallet_no: WalletNo
    client_ip: IpAddress | None = Field(default=None, description="The customer's address as the wallet back end "
                                                                  "sees it (the caller's own if left out).")
    device_id: DeviceId | None = None


class SignInRequest(_Caller):
    password: Password


class ChangePasswordRequest(_Caller):
    current_password: Password = Field(description="The current password, or the temporary one sent by SMS.")
    new_password: Password = Field(description="Checked against the password policy (a 422 password_policy "
                                               "names the rules it breaks).")


class QuestionAnswer(Payload):
    code: Annotated[str, OneOf(lambda: codes.SECURITY_QUESTIONS), Field(description="A question code "
                                                                                     "(GET /security-questions).")]
    answer: SecurityAnswer


class SetQuestionsRequest(_Caller):
    password: Password
    questions: Annotated[list[QuestionAnswer], ItemCount(_questions_required, lambda: len(codes.SECURITY_QUESTIONS)),
                         Field(description="Each question code at most once.")]


# --- self-service recovery ------------------------------------------------------------------------

Mobile = shaped("^[+0-9 -]{11,20}$", "a mainland mobile number (11 digits; spaces, dashes and +86 accepted)",
                max_length=20)
IdNumber = shaped("^[0-9A-Za-z]{6,18}$", "the identity document's number", max_length=18)
SixDigits = shaped("^[0-9]{6}$", "6 digits", max_length=6)
RecoveryToken = shaped("^[A-Za-z0-9_-]{43}$", "the recovery token from the second-factor step", max_length=43)


class _Customer(Payload):
    client_ip: IpAddress | None = Field(default=None, description="The customer's address as the wallet back end "
                                                                  "sees it (the caller's own if left out).")
    device_id: DeviceId | None = None


def _exactly_one_of(*names: str) -> dict:
    """A body that takes exactly one of ``names`` (each a string when given, never null)."""
    return {**Payload.model_config, "json_schema_extra": {"oneOf": [{"required": [n]} for n in names]}}


class StartRecoveryRequest(_Customer):
    model_config = _exactly_one_of("wallet_no", "mobile")

    wallet_no: WalletNo = absent(description="The wallet number; or give the mobile instead.")
    mobile: Mobile = absent(description="The registered mobile; or give the wallet number instead.")
    id_type: Annotated[str, OneOf(lambda: list(ID_TYPES))] = Field(
        default="resident_id", description="The identity document's type.")
    id_number: IdNumber

    @model_validator(mode="after")
    def _one_way_in(self):
        if (self.wallet_no is None) == (self.mobile is None):
            raise ValueError("give either wallet_no or mobile")
        return self


class RecoveryCodeRequest(_Customer):
    code: SixDigits = Field(description="The code sent by SMS to the registered mobile.")


class RecoveryFactorRequest(_Customer):
    model_config = _exactly_one_of("answers", "authenticator_code")

    answers: list[QuestionAnswer] = absent(description="With factor security_answers: the questions asked, each "
                                                       "answered once.")
    authenticator_code: SixDigits = absent(description="With factor authenticator_code: the bound authenticator's "
                                                       "current code.")

    @model_validator(mode="after")
    def _one_factor(self):
        if (self.answers is None) == (self.authenticator_code is None):
            raise ValueError("give either answers or authenticator_code")
        return self


class RecoveryPasswordRequest(_Customer):
    recovery_token: RecoveryToken
    new_password: Password = Field(description="Checked against the password policy (a 422 password_policy names "
                                               "the rules it breaks; the token stays usable).")


# --- answers --------------------------------------------------------------------------------------


class SignInResult(Answer):
    """The outcome of a sign-in attempt (HTTP 200 for every expected outcome)."""

    result: Literal["ok", "must_change_password", "password_expired", "invalid_credentials", "locked", "frozen",
                    "busy"]
    wallet_no: str
    remaining_attempts: int = absent(description="With invalid_credentials.")
    reason: str | None = absent(description="With locked and frozen: why (too_many_failures, "
                                            "too_many_failures_staff_unlock, risk_freeze).")
    locked_until: Timestamp | None = absent(description="With locked and frozen: null if only staff can unlock.")
    unlock: Literal["automatic", "staff"] = absent(description="With locked and frozen.")
    retry_after_seconds: int = absent(description="With busy: also the Retry-After header.")


class PasswordChanged(Answer):
    result: Literal["password_changed"]
    wallet_no: str
    password_expires_at: Timestamp | None


class QuestionCode(Answer):
    code: str


class QuestionCatalogue(Answer):
    required: int = Field(description="How many questions a customer sets.")
    questions: list[QuestionCode]


class QuestionsSet(Answer):
    result: Literal["questions_set"]
    wallet_no: str
    count: int
    at: Timestamp


class RecoveryStarted(Answer):
    """The same for every start, whether or not the details match a wallet."""

    recovery_id: str = Field(description="Names this recovery in the next steps.")
    next: Literal["sms_code"]
    code_valid_seconds: int
    code_tries: int
    expires_at: Timestamp = Field(description="The whole recovery must be finished by then.")


class RecoveryCodeAccepted(Answer):
    result: Literal["second_factor"]
    factor: Literal["security_answers", "authenticator_code"]
    questions: list[str] = Field(description="With security_answers: the question codes to answer.")


class RecoveryVerified(Answer):
    result: Literal["verified"]
    recovery_token: str = Field(description="Sets the new password once, before expires_at.")
    expires_at: Timestamp


class PasswordRecovered(Answer):
    result: Literal["password_reset"]
    wallet_no: str
    password_expires_at: Timestamp | None
    unlocked: bool = Field(description="Whether a wrong-password lock was lifted.")
