"""The wallet API's payloads, each described once (see console/api/schemas.py for how they are used)."""
from __future__ import annotations

from typing import Annotated, Literal

from flask import has_app_context
from pydantic import Field

from .. import codes
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
