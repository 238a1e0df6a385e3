"""Words for the service desk: operations, reasons, refusals, states."""
from collections.abc import Mapping

from flask_babel import lazy_gettext as _l

from .. import policy

from ..services.operations import registry
from .labels import security_question


class _OperationWords(Mapping):
    """An operation's label or help, by code, translated at the edge from the English msgid its
    module declares (``operations.registry``); read at access time, so every registered operation
    is here."""

    def __init__(self, field: str):
        self._field = field

    def __getitem__(self, code: str):
        return _l(getattr(registry.get(code), self._field))

    def __iter__(self):
        return iter(registry.codes())

    def __len__(self) -> int:
        return len(registry.codes())


OPERATION_LABELS = _OperationWords("label")
OPERATION_HELP = _OperationWords("help")

REASON_LABELS = {
    "forgot_password": _l("Customer forgot the password"),
    "locked_after_wrong_passwords": _l("Locked after wrong passwords"),
    "forgot_security_answers": _l("Customer forgot the security answers"),
    "new_phone": _l("Customer changed phone"),
    "lost_phone": _l("Phone lost or stolen"),
    "suspected_fraud": _l("Suspected fraud"),
    "customer_request": _l("At the customer's request"),
    "risk_reviewed": _l("Risk reviewed with the customer"),
}

# Why a case is closed with nothing done for the customer (a note of the case says which).
CLOSE_WITHOUT_ACTION = {
    "enquiry_only": _l("The customer only asked for information"),
    "not_verified": _l("The customer's identity could not be verified"),
    "customer_left": _l("The customer left or the call ended"),
    "referred": _l("Sent to the counter or another channel"),
    "opened_by_mistake": _l("Case opened by mistake"),
}

_REFUSALS = {
    "not_permitted": _l("Your role does not allow this. The attempt has been recorded."),
    "verification_missing_or_expired": _l("Verify the customer first: this case has no valid verification by you (one lasts %(valid_minutes)s minutes). A verification of an earlier case counts only once you use it in this case."),
    "verification_too_weak": _l("This needs the ID document checked at the counter."),
    "not_applicable": _l("This operation does not apply to the wallet's present state."),
    "case_not_open_or_not_yours": _l("Only the staff member who opened this case can act on it while it is open."),
    "case_closed": _l("This case is closed."),
    "wrong_case": _l("This verification does not fit this case's channel."),
    "customer_flagged_counter_only": _l("%(flag_failures)s verifications of this customer failed within %(flag_hours)s hours. Phone help is refused: ask the customer to come to a branch counter with an ID document."),
    "no_security_questions": _l("The customer has no security questions, so phone verification is impossible: ask the customer to come to a counter."),
    "verification_not_pending": _l("This phone verification is no longer in progress; start a new one."),
    "already_pending": _l("A request for this operation is already waiting for a supervisor."),
    "approval_pending": _l("A request for this operation is already waiting for a supervisor: it cannot be filed again or done beside it until it is decided or expires."),
    "alert_resolved": _l("This alert is resolved: the freeze it reported has been released."),
    "self_approval": _l("You made this request, so you cannot decide it. Another supervisor must."),
    "already_decided": _l("This request was already decided."),
    "own_screen": _l("The staff member signed in on this screen cannot authorise at it: another supervisor of the branch must enter their own details."),
    "expired": _l("This request expired after %(approval_minutes)s minutes. The maker must file it again."),
    "no_longer_applicable": _l("The wallet's state has changed; this operation no longer applies. Reject the request."),
    "not_case_owner": _l("Only the staff member who opened this case can close it."),
    "not_found_or_other_branch": _l("Not found."),
    "not_your_case": _l("This case belongs to a colleague: only the staff member who opened it, or a supervisor of its branch, can act on it."),
    "not_your_receipt": _l("This receipt belongs to a colleague's case: only they, or a supervisor of the branch, can print it."),
    "already_verified": _l("This case already has a valid verification."),
    "verification_not_adoptable": _l("That verification cannot be used in this case: only your own, still valid, of this customer on this channel. Verify the customer again."),
    "customer_sms_cap": _l("This customer has received the most verification codes allowed for now (from any branch or channel). Ask the customer to wait a few minutes, or to come to a counter."),
}

# 主管现场授权 (console/services/operations/counter_authorisation.py): what the screen is told when a
# supervisor's proof is refused. "credentials" is the one answer for every reason that would otherwise
# confirm an account, a role, a branch or a password; "no_key" and "key_refused" are its words on the
# security key's two steps.
_COUNTER_REFUSALS = {
    "credentials": _l("Not authorised: the employee number, password or authenticator code is not right, or this "
                      "account cannot authorise requests of this branch. Each failed try counts towards the "
                      "supervisor's sign-in lock (%(lockout_threshold)s tries lock the account for %(lockout_minutes)s minutes)."),
    "directory_unavailable": _l("The bank's directory is unavailable, so the supervisor's password cannot be checked now "
                                "(nothing was counted). Try again shortly, use a security key, or leave the request "
                                "for the approvals queue."),
    "no_key": _l("No security key can be used for this employee number here. Check the number, or use the "
                 "password and authenticator code."),
    "key_refused": _l("Not authorised: the security key's answer was not accepted (it took too long, or the key is "
                      "not this supervisor's). Try again, or use the password and authenticator code."),
    "own_screen": _l("The staff member signed in on this screen cannot authorise at it: another supervisor of the "
                     "branch enters their own employee number. A supervisor signed in here decides from the approvals page."),
    "self_approval": _l("The maker of a request can never authorise it, not even at the counter: another supervisor of "
                        "the branch must."),
}

INPUT_ERRORS = {
    "wallet_no_format": _l("A wallet number has only digits."),
    "reason_code": _l("Choose a reason."),
    "reason_required": _l("Give a reason of at least 4 characters."),
    "note_length": _l("The note must be 1 to 2,000 characters."),
    "decision_note_required": _l("A note is required to approve or reject."),
    "alert_note_required": _l("Write a note of 1 to 1,000 characters: what you found and what happens next."),
    "alert_owner": _l("Choose the owner from the staff of your branch."),
    "code_format": _l("The code has 6 digits."),
    "search_kind": _l("Choose what to search by."),
    "input_error": _l("Some details are missing or mistyped: correct them and send the form again."),
}

# The staff member's own slips in a verification (``codes.VERIFICATION_SLIPS``), shown on the field:
# they never count against the customer.
_VERIFICATION_SLIPS = {
    "id_format": _l("A resident ID number has 17 digits followed by a digit or X."),
    "id_checksum": _l("The ID number's check digit is wrong; please check the number on the card."),
    "id_birth_date": _l("The ID number does not contain a valid date of birth."),
    "passport_format": _l("A document number has 5 to 20 letters and digits."),
    "photo_not_attested": _l("Compare the photo on the document with the customer, then tick this box."),
    "document_type_mismatch": _l("This is the customer's number, but another document type is chosen: choose the type of the document handed over."),
    "document_expired": _l("The document has expired. Ask the customer for a valid ID document; nothing was counted against the customer."),
    "code_format": _l("The code has 6 digits."),
    "answer_missing": _l("Enter the customer's answer to this question."),
}

_VERIFICATION_FAILURES = {
    "document_mismatch": _l("The document does not match the customer's record."),
    "document_expired": _l("The document has expired."),
    "registry_mismatch": _l("The citizen-ID registry has a different name for this number."),
    "registry_not_found": _l("The citizen-ID registry does not know this number."),
    "registry_revoked": _l("The citizen-ID registry reports this document as invalid."),
    "registry_unavailable": _l("The citizen-ID registry could not be reached; the check failed closed. Try again."),
    "photo_not_attested": _l("You did not confirm that the photo matches the person."),
    "code_expired": _l("The SMS code expired (%(code_minutes)s minutes). Send a new code."),
    "code_wrong": _l("The code is wrong."),
    "code_wrong_no_tries_left": _l("The code was wrong %(code_tries)s times. This verification failed."),
    "security_answers_wrong": _l("The security answers are wrong. This verification failed."),
    "id_format": _l("A resident ID number has 17 digits followed by a digit or X."),
    "id_checksum": _l("The ID number's check digit is wrong; please check the number on the card."),
    "id_birth_date": _l("The ID number does not contain a valid date of birth."),
    "passport_format": _l("A document number has 5 to 20 letters and digits."),
}


def policy_numbers() -> dict:
    """The numbers the desk's messages quote, from the running policy (never written into a msgid)."""
    rules = policy.current()
    return {"valid_minutes": rules.verification.valid_minutes, "flag_failures": rules.verification.failures_to_flag,
            "flag_hours": rules.verification.flag_hours, "approval_minutes": rules.approvals.expiry_minutes,
            "code_minutes": rules.verification.code_valid_minutes, "code_tries": rules.verification.code_tries,
            "lockout_threshold": rules.staff_signin.lockout_threshold,
            "lockout_minutes": rules.staff_signin.lockout_minutes}


class _Worded(Mapping):
    """Messages by code, translated and with the policy's numbers filled in when read."""

    def __init__(self, words: dict):
        self._words = words

    def __getitem__(self, code: str) -> str:
        return str(self._words[code]) % policy_numbers()

    def __iter__(self):
        return iter(self._words)

    def __len__(self) -> int:
        return len(self._words)


REFUSALS = _Worded(_REFUSALS)
VERIFICATION_FAILURES = _Worded(_VERIFICATION_FAILURES)
VERIFICATION_SLIPS = _Worded(_VERIFICATION_SLIPS)
COUNTER_REFUSALS = _Worded(_COUNTER_REFUSALS)


# Approval requests: where a request stands, and the words of the approval page (``overview.approval_review``).
APPROVAL_STATES = {
    "pending": _l("waiting for a supervisor"),
    "expired": _l("expired without a decision"),
    "approved": _l("approved"),
    "executed": _l("approved and done"),
    "rejected": _l("rejected"),
}

VERIFICATION_METHODS = {
    "id_document": _l("ID document checked at the counter"),
    "sms_code_and_questions": _l("SMS code to the registered mobile and security answers, by phone"),
}

VERIFICATION_STRENGTHS = {
    "strong": _l("strong"),
    "medium": _l("medium"),
}

REGISTRY_RESULTS = {
    "match": _l("the citizen-ID registry confirms the name and number"),
    "mismatch": _l("the citizen-ID registry has another name for this number"),
    "not_found": _l("the citizen-ID registry does not know this number"),
    "revoked": _l("the citizen-ID registry reports the document as invalid"),
    "unavailable": _l("the citizen-ID registry could not be reached"),
}

# Credential changes a checker weighs (audit actions); the wallet operations' own use their label.
CHANGE_LABELS = {
    "wallet.password_change": _l("The customer changed the wallet password in the app"),
    "wallet.security_questions_set": _l("The customer set new security questions in the app"),
    "wallet.password_reset": _l("The wallet password was reset"),
}


def change_label(action: str) -> str:
    """Words for a credential change (an audit action)."""
    if action in CHANGE_LABELS:
        return str(CHANGE_LABELS[action])
    if action.startswith("wallet.") and action.removeprefix("wallet.") in registry.REGISTRY:
        return str(OPERATION_LABELS[action.removeprefix("wallet.")])
    return action

# Who made a change, when it was not a staff member (``codes.ACTOR_KINDS``).
ACTOR_KIND_LABELS = {
    "staff": _l("a staff member"),
    "operator": _l("an operator at the command line"),
    "system": _l("the system"),
    "anonymous": _l("someone not signed in"),
    "service": _l("the wallet app"),
    "customer": _l("the customer"),
}


class _ApprovalWords:
    """The words of approval requests, for templates (a template global, ``approval_words``): the
    case page's approval notice and the approval pages read them without their view passing them."""

    states = APPROVAL_STATES
    methods = VERIFICATION_METHODS
    strengths = VERIFICATION_STRENGTHS
    registry_results = REGISTRY_RESULTS
    actor_kinds = ACTOR_KIND_LABELS
    operations = OPERATION_LABELS
    reasons = REASON_LABELS

    @staticmethod
    def change(action: str) -> str:
        return change_label(action)

    @staticmethod
    def question(code: str):
        return security_question(code)


APPROVAL_WORDS = _ApprovalWords()
