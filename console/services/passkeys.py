"""Staff security keys (passkeys, WebAuthn): enrolment, sign-in, and a key presented at the counter.

The ceremonies are verified by the ``webauthn`` library (py_webauthn); this module keeps what it
leaves to the relying party: the challenges (server-side, single use, short-lived, bound to one
staff member, one purpose and one context), which keys belong to whom, the signature counter,
revocation, the failure counter and the audit trail. User verification (PIN or biometric on the
key) is required in every ceremony. docs/passkeys.md explains the choices.

API for another module (e.g. a supervisor authorising at a teller's screen, 主管现场授权)::

    begin_assertion(session, staff, purpose, context) -> str | None
        Options JSON for navigator.credentials.get() asking ``staff`` (anyone, not necessarily
        the signed-in staff member) for one of their active keys, or None when they have none.
        ``purpose`` is a short word of the caller's ("authorise"; never "signin" or "register",
        which are this module's) and ``context`` (at most 64 characters) names what is being
        authorised, e.g. "approval:42:session:ab12cd": the answer is accepted only for the same
        staff member, purpose and context, once, within CEREMONY_SECONDS.

    verify_assertion(session, staff, purpose, context, credential_json, *, actor) -> AssertionResult
        Checks the browser's answer (a JSON string). ``result.ok``: ``result.passkey`` is the key
        that signed, its counter and last use updated, and a ``staff.passkey_assert`` success
        event recorded. Otherwise ``result.refusal`` is the reason code (``challenge_invalid``,
        ``passkey_unknown``, ``passkey_other_staff``, ``passkey_revoked``, ``assertion_invalid``,
        ``sign_count_regression``, ``account_locked``, ``account_disabled``, ...) and
        ``result.locked`` says the staff member is (now) locked. A failure counts in the staff
        member's sign-in failure counter, as a wrong TOTP code does, and is recorded; so the
        caller must COMMIT a refusal too (return it, never raise through the boundary's rollback).
        ``actor`` is the one recorded: the presenting staff member, with the screen's session as
        context (e.g. ``Actor.for_staff(staff, source_ip=..., session_id=teller_session_id)``).

Services here never commit; the entry point does, once.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from webauthn import (generate_authentication_options, generate_registration_options, options_to_json,
                      verify_authentication_response, verify_registration_response)
from webauthn.helpers import (parse_authentication_credential_json, parse_client_data_json,
                              parse_registration_credential_json)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (AuthenticatorSelectionCriteria, AuthenticatorTransport,
                                      PublicKeyCredentialDescriptor, ResidentKeyRequirement,
                                      UserVerificationRequirement)

from .. import crypto, policy
from ..models.passkey import StaffPasskey, WebauthnChallenge
from ..models.staff import Staff
from ..permissions import ADMIN_MANAGE, can
from ..timeutil import utcnow
from . import audit, staff_auth
from .actor import Actor
from .errors import Conflict, InvalidInput, NotFound

REGISTER = "register"
SIGNIN = "signin"
CEREMONY_SECONDS = 120  # the browser's prompt and the challenge's life
MAX_KEYS = 10  # active keys per staff member
NAME_MAX = 60
MAX_ANSWER_CHARS = 16_384  # a credential's JSON; real ones are 1-3 KB
# Exceptions the library and its CBOR/ASN.1 parsers raise on a malformed or forged answer.
_BAD_ANSWER = (WebAuthnException, ValueError, TypeError, KeyError, IndexError, AttributeError)


@dataclass
class AssertionResult:
    passkey: StaffPasskey | None = None
    refusal: str | None = None
    locked: bool = False

    @property
    def ok(self) -> bool:
        return self.refusal is None


@dataclass
class RegistrationResult:
    passkey: StaffPasskey | None = None
    refusal: str | None = None


def _relying_party() -> policy.RelyingParty:
    return policy.current().staff_signin.relying_party


def key_required(staff: Staff) -> bool:
    """Whether the policy requires this staff member to sign in with a security key."""
    return staff.role in policy.current().staff_signin.key_required_roles


def passkeys_of(session: Session, staff: Staff, *, include_revoked: bool = False) -> list[StaffPasskey]:
    query = select(StaffPasskey).where(StaffPasskey.staff_id == staff.id)
    if not include_revoked:
        query = query.where(StaffPasskey.revoked_at.is_(None))
    return list(session.scalars(query.order_by(StaffPasskey.created_at, StaffPasskey.id)))


def has_passkey(session: Session, staff: Staff) -> bool:
    return session.scalar(select(StaffPasskey.id).where(
        StaffPasskey.staff_id == staff.id, StaffPasskey.revoked_at.is_(None)).limit(1)) is not None


def staff_with_passkeys(session: Session) -> set[int]:
    """The staff members with an active key (one query, for a list of accounts)."""
    return set(session.scalars(select(StaffPasskey.staff_id).distinct().where(StaffPasskey.revoked_at.is_(None))))


def clean_name(name) -> str:
    """A key's name as its owner typed it: trimmed, 1 to NAME_MAX printable characters."""
    name = " ".join(name.split()) if isinstance(name, str) else ""
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise InvalidInput("passkey_name", field="name")
    return name


# --- challenges ----------------------------------------------------------------------------------


def _digest(challenge: bytes) -> str:
    return hashlib.sha256(challenge).hexdigest()


def _new_challenge(session: Session, staff: Staff, purpose: str, context: str) -> bytes:
    """A fresh challenge for one ceremony; an older one of the same staff, purpose and context is
    replaced (one ceremony at a time), and expired ones of anyone are deleted on the way."""
    if not purpose or len(purpose) > 16 or not context or len(context) > 64:
        raise ValueError("a challenge needs a purpose (at most 16 characters) and a context (at most 64)")
    now = utcnow()
    session.execute(delete(WebauthnChallenge).where(WebauthnChallenge.expires_at <= now)
                    .execution_options(synchronize_session=False))
    session.execute(delete(WebauthnChallenge).where(
        WebauthnChallenge.staff_id == staff.id, WebauthnChallenge.purpose == purpose,
        WebauthnChallenge.context == context).execution_options(synchronize_session=False))
    challenge = secrets.token_bytes(32)
    session.add(WebauthnChallenge(challenge_digest=_digest(challenge), staff_id=staff.id, purpose=purpose,
                                  context=context, created_at=now,
                                  expires_at=now + timedelta(seconds=CEREMONY_SECONDS)))
    session.flush()
    return challenge


def _take_challenge(session: Session, staff: Staff, purpose: str, context: str,
                    client_data_json: bytes) -> bytes | None:
    """The challenge the answer carries, if it was issued for this staff member, purpose and
    context and has not expired. It is deleted whatever the outcome: an answer is tried once."""
    try:
        challenge = parse_client_data_json(client_data_json).challenge
    except _BAD_ANSWER:
        return None
    row = session.execute(
        delete(WebauthnChallenge).where(WebauthnChallenge.challenge_digest == _digest(challenge))
        .returning(WebauthnChallenge.staff_id, WebauthnChallenge.purpose, WebauthnChallenge.context,
                   WebauthnChallenge.expires_at)
        .execution_options(synchronize_session=False)).first()
    if row is None or row.staff_id != staff.id or row.purpose != purpose or row.context != context:
        return None
    return challenge if row.expires_at > utcnow() else None


def _user_handle(staff: Staff) -> bytes:
    """The WebAuthn user handle: stable for the staff member, no personal data in it."""
    return bytes.fromhex(crypto.blind_index(str(staff.id), context="webauthn.user"))


def _descriptor(key: StaffPasskey) -> PublicKeyCredentialDescriptor:
    transports = []
    for name in (key.transports or "").split(","):
        try:
            transports.append(AuthenticatorTransport(name))
        except ValueError:
            continue
    return PublicKeyCredentialDescriptor(id=key.credential_id, transports=transports or None)


def _snapshot(key: StaffPasskey) -> dict:
    return {"passkey": key.id, "name": key.name, "employee_no": key.staff.employee_no,
            "revoked": key.revoked_at is not None}


# --- enrolment -----------------------------------------------------------------------------------


def begin_registration(session: Session, staff: Staff, *, context: str) -> str:
    """Options JSON for navigator.credentials.create(): a new key for ``staff`` (their active keys
    excluded, so one authenticator is not enrolled twice)."""
    rp = _relying_party()
    challenge = _new_challenge(session, staff, REGISTER, context)
    options = generate_registration_options(
        rp_id=rp.rp_id, rp_name=rp.name, user_id=_user_handle(staff), user_name=staff.employee_no,
        user_display_name=f"{staff.name} ({staff.employee_no})", challenge=challenge,
        timeout=CEREMONY_SECONDS * 1000,
        # The staff member is always known before the key is asked for (password first, or the
        # supervisor chosen at the counter): no discoverable credential needed, so hardware keys
        # keep their few resident slots.
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.REQUIRED),
        exclude_credentials=[_descriptor(k) for k in passkeys_of(session, staff)])
    return options_to_json(options)


def finish_registration(session: Session, actor: Actor, staff: Staff, credential_json, *, name: str,
                        context: str) -> RegistrationResult:
    """Verify the browser's answer and keep the new key. A refusal is recorded and returned (the
    challenge is spent either way); an unusable name raises InvalidInput before anything else."""
    name = clean_name(name)

    def refuse(reason: str) -> RegistrationResult:
        audit.record(session, actor, "staff.passkey_enrol", outcome="failed", reason_code=reason,
                     details={"employee_no": staff.employee_no, "name": name})
        return RegistrationResult(refusal=reason)

    if not isinstance(credential_json, str) or len(credential_json) > MAX_ANSWER_CHARS:
        return refuse("registration_invalid")
    try:
        credential = parse_registration_credential_json(credential_json)
    except _BAD_ANSWER:
        return refuse("registration_invalid")
    challenge = _take_challenge(session, staff, REGISTER, context, credential.response.client_data_json)
    if challenge is None:
        return refuse("challenge_invalid")
    if len(passkeys_of(session, staff)) >= MAX_KEYS:
        return refuse("too_many_keys")
    rp = _relying_party()
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins), require_user_verification=True)
    except _BAD_ANSWER:
        return refuse("registration_invalid")
    if len(verified.credential_id) > 1023:
        return refuse("registration_invalid")
    if session.scalar(select(StaffPasskey.id).where(StaffPasskey.credential_id == verified.credential_id)):
        return refuse("already_enrolled")
    transports = ",".join(t.value for t in credential.response.transports or ())[:120] or None
    key = StaffPasskey(staff_id=staff.id, credential_id=verified.credential_id,
                       public_key=verified.credential_public_key, sign_count=verified.sign_count, name=name,
                       transports=transports, aaguid=verified.aaguid, created_at=utcnow())
    session.add(key)
    session.flush()
    key.staff = staff
    audit.record(session, actor, "staff.passkey_enrol", after=_snapshot(key),
                 details={"aaguid": verified.aaguid, "transports": transports})
    return RegistrationResult(passkey=key)


# --- presenting a key ----------------------------------------------------------------------------


def begin_assertion(session: Session, staff: Staff, purpose: str, context: str) -> str | None:
    """Options JSON for navigator.credentials.get() asking ``staff`` for one of their active
    keys, bound to ``purpose`` and ``context``; None when they have no active key."""
    if purpose == REGISTER:
        raise ValueError("an assertion's purpose cannot be the registration's")
    keys = passkeys_of(session, staff)
    if not keys:
        return None
    challenge = _new_challenge(session, staff, purpose, context)
    options = generate_authentication_options(
        rp_id=_relying_party().rp_id, challenge=challenge, timeout=CEREMONY_SECONDS * 1000,
        allow_credentials=[_descriptor(k) for k in keys],
        user_verification=UserVerificationRequirement.REQUIRED)
    return options_to_json(options)


def verify_assertion(session: Session, staff: Staff, purpose: str, context: str, credential_json, *,
                     actor: Actor) -> AssertionResult:
    """Check that ``staff`` presented one of their active keys for this purpose and context (see
    the module's docstring). Counted in the staff member's failure counter like a TOTP code."""
    checked: dict = {}

    def check() -> str | None:
        reason, key = _check_assertion(session, staff, purpose, context, credential_json)
        checked["key"] = key
        return reason

    outcome = staff_auth.counted_check(session, staff, actor, "passkey", check,
                                       action="staff.signin" if purpose == SIGNIN else "staff.passkey_assert")
    if outcome.status != "ok":
        return AssertionResult(refusal=outcome.reason or outcome.status, locked=outcome.status == "locked")
    key = checked["key"]
    audit.record(session, actor, "staff.passkey_assert",
                 details={"purpose": purpose, "context": context, "passkey": key.id, "name": key.name,
                          "employee_no": staff.employee_no})
    return AssertionResult(passkey=key)


def _check_assertion(session: Session, staff: Staff, purpose: str, context: str,
                     credential_json) -> tuple[str | None, StaffPasskey | None]:
    if not isinstance(credential_json, str) or len(credential_json) > MAX_ANSWER_CHARS:
        return "assertion_invalid", None
    try:
        credential = parse_authentication_credential_json(credential_json)
    except _BAD_ANSWER:
        return "assertion_invalid", None
    challenge = _take_challenge(session, staff, purpose, context, credential.response.client_data_json)
    if challenge is None:
        return "challenge_invalid", None
    key = session.scalar(select(StaffPasskey).where(StaffPasskey.credential_id == credential.raw_id))
    if key is None:
        return "passkey_unknown", None
    if key.staff_id != staff.id:
        return "passkey_other_staff", None
    if key.revoked_at is not None:
        return "passkey_revoked", None
    rp = _relying_party()
    try:
        # The counter is compared below, after the signature is known to be the key's: a forged
        # answer with a low counter is "invalid", not evidence of a copied key.
        verified = verify_authentication_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins), credential_public_key=key.public_key,
            credential_current_sign_count=0, require_user_verification=True)
    except _BAD_ANSWER:
        return "assertion_invalid", None
    if (verified.new_sign_count or key.sign_count) and verified.new_sign_count <= key.sign_count:
        return "sign_count_regression", None
    key.sign_count = verified.new_sign_count
    key.last_used_at = utcnow()
    return None, key


# --- the owner's and the administrator's changes -------------------------------------------------


def _key_for(session: Session, actor: Actor, passkey_id: int, action: str, *, admin_may: bool) -> StaffPasskey:
    """The key named in a request, if the actor may change it: its owner's (or, where allowed, an
    administrator's); anyone else's is "not found", and the attempt is recorded."""
    key = session.get(StaffPasskey, passkey_id) if isinstance(passkey_id, int) and 0 < passkey_id < 2**31 else None
    if key is None or (key.staff_id != actor.staff_id and not (admin_may and can(actor, ADMIN_MANAGE))):
        raise NotFound("passkey", audit={"action": action, "outcome": "denied",
                                         "reason_code": "not_found_or_out_of_scope",
                                         "details": {"passkey": passkey_id}})
    return key


def rename(session: Session, actor: Actor, passkey_id: int, name: str) -> StaffPasskey:
    """The owner names their key anew (e.g. "YubiKey, desk drawer")."""
    key = _key_for(session, actor, passkey_id, "staff.passkey_rename", admin_may=False)
    name = clean_name(name)
    if key.revoked_at is not None:
        raise Conflict("passkey_revoked")
    before = _snapshot(key)
    key.name = name
    audit.record(session, actor, "staff.passkey_rename", before=before, after=_snapshot(key))
    return key


def revoke(session: Session, actor: Actor, passkey_id: int) -> StaffPasskey:
    """Revoke one key, by its owner or an administrator. An owner whose role must sign in with a
    key keeps at least one: the last is revoked by an administrator. An administrator's revocation
    also ends every session of the key's owner (one may have been signed in with the lost key)."""
    key = _key_for(session, actor, passkey_id, "staff.passkey_revoke", admin_may=True)
    if key.revoked_at is not None:
        raise Conflict("passkey_revoked")
    by_owner = key.staff_id == actor.staff_id
    if by_owner and key_required(key.staff) and len(passkeys_of(session, key.staff)) <= 1:
        raise Conflict("last_required_key", audit={
            "action": "staff.passkey_revoke", "outcome": "denied", "reason_code": "last_required_key",
            "details": {"passkey": key.id}})
    before = _snapshot(key)
    key.revoked_at = utcnow()
    key.revoked_by_id = actor.staff_id
    ended = 0
    if not by_owner:  # an administrator revokes a key reported lost: what it signed in ends too
        from .staff_admin import end_all_sessions  # staff_admin imports this module

        ended = end_all_sessions(session, key.staff, "keys_revoked")
    audit.record(session, actor, "staff.passkey_revoke", before=before, after=_snapshot(key),
                 details={"by": "owner" if by_owner else "admin", "sessions_ended": ended})
    return key


def revoke_every_key(session: Session, staff: Staff, *, revoked_by_id: int | None) -> int:
    """Revoke all of a staff member's active keys (an administrator's reset; the caller audits it)."""
    keys = passkeys_of(session, staff)
    now = utcnow()
    for key in keys:
        key.revoked_at, key.revoked_by_id = now, revoked_by_id
    session.flush()
    return len(keys)

