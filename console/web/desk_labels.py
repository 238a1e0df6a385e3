"""Words for the service desk: operations, reasons, refusals, states."""
from flask_babel import lazy_gettext as _l

OPERATION_LABELS = {
    "unlock": _l("Unlock the wallet"),
    "reset_password": _l("Reset the wallet password"),
    "reset_questions": _l("Reset the security questions"),
    "reset_2fa": _l("Reset the two-factor device binding"),
    "place_hold": _l("Place a protective hold"),
    "release_hold": _l("Release the protective hold"),
    "release_freeze": _l("Release the risk freeze"),
}

OPERATION_HELP = {
    "unlock": _l("Ends the failure lock at once; the customer can sign in with the current password."),
    "reset_password": _l("A random temporary password goes by SMS to the registered mobile. Nobody at the bank sees it; the customer must change it at first sign-in."),
    "reset_questions": _l("Clears the security questions; the customer sets new ones in the wallet app."),
    "reset_2fa": _l("Unbinds the current 2FA device; the customer binds a new one in the wallet app."),
    "place_hold": _l("Stops the wallet from being used until the hold is released."),
    "release_hold": _l("Needs a supervisor's approval."),
    "release_freeze": _l("Needs a supervisor's approval."),
}

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

REFUSALS = {
    "not_permitted": _l("Your role does not allow this. The attempt has been recorded."),
    "verification_missing_or_expired": _l("Verify the customer first: there is no valid verification by you for this customer (it lasts 15 minutes)."),
    "verification_too_weak": _l("This needs the ID document checked at the counter."),
    "not_applicable": _l("This operation does not apply to the wallet's present state."),
    "case_not_open_or_not_yours": _l("Only the staff member who opened this case can act on it while it is open."),
    "case_closed": _l("This case is closed."),
    "wrong_case": _l("This verification does not fit this case's channel."),
    "customer_flagged_counter_only": _l("Three verifications of this customer failed within 24 hours. Phone help is refused: ask the customer to come to a branch counter with an ID document."),
    "no_security_questions": _l("The customer has no security questions, so phone verification is impossible: ask the customer to come to a counter."),
    "verification_not_pending": _l("This phone verification is no longer in progress; start a new one."),
    "already_pending": _l("A request for this operation is already waiting for a supervisor."),
    "self_approval": _l("You made this request, so you cannot decide it. Another supervisor must."),
    "already_decided": _l("This request was already decided."),
    "expired": _l("This request expired after 30 minutes. The maker must file it again."),
    "no_longer_applicable": _l("The wallet's state has changed; this operation no longer applies. Reject the request."),
    "not_case_owner": _l("Only the staff member who opened this case can close it."),
    "not_found_or_other_branch": _l("Not found."),
    "not_your_case": _l("This case belongs to a colleague: only the staff member who opened it, or a supervisor of its branch, can act on it."),
    "not_your_receipt": _l("This receipt belongs to a colleague's case: only they, or a supervisor of the branch, can print it."),
    "customer_sms_cap": _l("This customer has received the most verification codes allowed for now (from any branch or channel). Ask the customer to wait a few minutes, or to come to a counter."),
}

INPUT_ERRORS = {
    "wallet_no_format": _l("A wallet number has only digits."),
    "reason_code": _l("Choose a reason."),
    "reason_required": _l("Give a reason of at least 4 characters."),
    "note_length": _l("The note must be 1 to 2,000 characters."),
    "decision_note_required": _l("A note is required to approve or reject."),
    "code_format": _l("The code has 6 digits."),
    "search_kind": _l("Choose what to search by."),
}

VERIFICATION_FAILURES = {
    "document_mismatch": _l("The document does not match the customer's record."),
    "document_expired": _l("The document has expired."),
    "registry_mismatch": _l("The citizen-ID registry has a different name for this number."),
    "registry_not_found": _l("The citizen-ID registry does not know this number."),
    "registry_revoked": _l("The citizen-ID registry reports this document as invalid."),
    "registry_unavailable": _l("The citizen-ID registry could not be reached; the check failed closed. Try again."),
    "photo_not_attested": _l("You did not confirm that the photo matches the person."),
    "code_expired": _l("The SMS code expired (5 minutes). Send a new code."),
    "code_wrong": _l("The code is wrong."),
    "code_wrong_no_tries_left": _l("The code was wrong 3 times. This verification failed."),
    "security_answers_wrong": _l("The security answers are wrong. This verification failed."),
    "id_format": _l("A resident ID number has 17 digits followed by a digit or X."),
    "id_checksum": _l("The ID number's check digit is wrong; please check the number on the card."),
    "id_birth_date": _l("The ID number does not contain a valid date of birth."),
    "passport_format": _l("A document number has 5 to 20 letters and digits."),
}
