"""Security keys (passkeys): real WebAuthn ceremonies against the service, on both backends.

``SoftKey`` is a software authenticator (ES256 through ``cryptography``, "none" attestation) that
answers the options the service hands out as a browser and a key would: the ``webauthn`` library
verifies real signatures, nothing is mocked.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
from datetime import timedelta

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from console import timeutil
from console.extensions import db
from console.models.passkey import StaffPasskey, WebauthnChallenge
from console.models.staff import Staff
from console.services import passkeys, staff_admin
from console.services.actor import Actor
from console.services.errors import Conflict, NotFound

from .conftest import CSRF_RE, audit_events, make_staff, post_form, sign_in, totp_code

ORIGIN = "http://localhost"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SoftKey:
    """One credential on a software authenticator."""

    def __init__(self, *, user_verified=True):
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.counter = 0
        self.user_verified = user_verified

    def _flags(self, extra=0) -> bytes:
        return bytes([0x01 | (0x04 if self.user_verified else 0) | extra])  # UP, UV, (AT)

    def _client_data(self, kind, options, origin) -> bytes:
        return json.dumps({"type": kind, "challenge": options["challenge"], "origin": origin,
                           "crossOrigin": False}).encode()

    def register(self, options_json: str, origin=ORIGIN) -> str:
        options = json.loads(options_json)
        numbers = self.private.public_key().public_numbers()
        cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})
        auth_data = (hashlib.sha256(options["rp"]["id"].encode()).digest() + self._flags(0x40)
                     + self.counter.to_bytes(4, "big") + bytes(16) + len(self.credential_id).to_bytes(2, "big")
                     + self.credential_id + cose)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return json.dumps({"id": b64url(self.credential_id), "rawId": b64url(self.credential_id), "type": "public-key",
                           "response": {"clientDataJSON": b64url(self._client_data("webauthn.create", options, origin)),
                                        "attestationObject": b64url(attestation), "transports": ["usb"]},
                           "clientExtensionResults": {}})

    def assertion(self, options_json: str, origin=ORIGIN, rp_id="localhost") -> str:
        options = json.loads(options_json)
        self.counter += 1
        auth_data = hashlib.sha256(rp_id.encode()).digest() + self._flags() + self.counter.to_bytes(4, "big")
        client_data = self._client_data("webauthn.get", options, origin)
        signature = self.private.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        return json.dumps({"id": b64url(self.credential_id), "rawId": b64url(self.credential_id), "type": "public-key",
                           "response": {"clientDataJSON": b64url(client_data), "authenticatorData": b64url(auth_data),
                                        "signature": b64url(signature), "userHandle": None},
                           "clientExtensionResults": {}})


def staff_row(handle) -> Staff:
    return db.session.get(Staff, handle.id)


def actor_for(staff: Staff) -> Actor:
    return Actor.for_staff(staff, source_ip="10.0.0.7")


def enrol(staff: Staff, key: SoftKey, name="Desk key", context="session:test") -> StaffPasskey:
    options = passkeys.begin_registration(db.session, staff, context=context)
    result = passkeys.finish_registration(db.session, actor_for(staff), staff, key.register(options), name=name,
                                          context=context)
    db.session.commit()
    assert result.refusal is None, result.refusal
    return result.passkey


def present(staff: Staff, key: SoftKey, purpose=passkeys.SIGNIN, context="pending:1", *, answer_purpose=None,
            answer_context=None, **answer):
    """Ask ``staff`` for a key (for ``purpose``/``context``) and have ``key`` answer; the verifier is
    told ``answer_purpose``/``answer_context`` (by default the same)."""
    options = passkeys.begin_assertion(db.session, staff, purpose, context)
    db.session.commit()
    credential = key.assertion(options, **answer)
    result = passkeys.verify_assertion(db.session, staff, answer_purpose or purpose, answer_context or context,
                                       credential, actor=actor_for(staff))
    db.session.commit()
    return result, credential


def test_enrol_then_present_the_key(app):
    staff = staff_row(make_staff("supervisor"))
    key = SoftKey()
    passkey = enrol(staff, key)
    assert (passkey.name, passkey.transports, passkey.sign_count) == ("Desk key", "usb", 0)
    assert passkey.credential_id == key.credential_id
    enrolled = audit_events("staff.passkey_enrol")[-1]
    assert enrolled.outcome == "success" and json.loads(enrolled.after_state)["name"] == "Desk key"

    result, _ = present(staff, key)
    assert result.ok and result.passkey.id == passkey.id
    db.session.expire_all()
    row = db.session.get(StaffPasskey, passkey.id)
    assert row.sign_count == 1 and row.last_used_at is not None
    assert staff_row(staff).failed_signins == 0
    used = audit_events("staff.passkey_assert")[-1]
    assert json.loads(used.details)["purpose"] == "signin" and used.actor_employee_no == staff.employee_no
    assert db.session.query(WebauthnChallenge).count() == 0  # spent

    # The same authenticator cannot be enrolled twice; a registration answer cannot be replayed.
    options = passkeys.begin_registration(db.session, staff, context="session:test")
    assert json.loads(options)["excludeCredentials"][0]["id"] == json.loads(key.register(options))["id"]
    answer = key.register(options)
    refused = passkeys.finish_registration(db.session, actor_for(staff), staff, answer, name="Again",
                                           context="session:test")
    assert refused.refusal == "already_enrolled"
    again = passkeys.finish_registration(db.session, actor_for(staff), staff, answer, name="Again",
                                         context="session:test")
    assert again.refusal == "challenge_invalid"
    db.session.commit()
    assert [e.reason_code for e in audit_events("staff.passkey_enrol")[-2:]] == ["already_enrolled",
                                                                                 "challenge_invalid"]


def test_replayed_wrong_purpose_and_unverified_answers_are_refused_and_counted(app):
    staff = staff_row(make_staff("supervisor"))
    key = SoftKey()
    enrol(staff, key)
    result, credential = present(staff, key)
    assert result.ok
    replay = passkeys.verify_assertion(db.session, staff, passkeys.SIGNIN, "pending:1", credential,
                                       actor=actor_for(staff))
    db.session.commit()
    assert replay.refusal == "challenge_invalid"
    # A challenge lives CEREMONY_SECONDS.
    options = passkeys.begin_assertion(db.session, staff, passkeys.SIGNIN, "pending:1")
    db.session.commit()
    timeutil.set_offset(timedelta(seconds=passkeys.CEREMONY_SECONDS + 1))
    late = passkeys.verify_assertion(db.session, staff, passkeys.SIGNIN, "pending:1", key.assertion(options),
                                     actor=actor_for(staff))
    db.session.commit()
    timeutil.set_offset(None)
    assert late.refusal == "challenge_invalid"
    # An authorisation's challenge does not sign anyone in, nor one for another operation.
    wrong_purpose, _ = present(staff, key, "authorise", "approval:9", answer_purpose=passkeys.SIGNIN,
                               answer_context="approval:9")
    wrong_context, _ = present(staff, key, "authorise", "approval:9", answer_context="approval:10")
    assert wrong_purpose.refusal == wrong_context.refusal == "challenge_invalid"
    # User verification (PIN, fingerprint) is required.
    lax = SoftKey()
    enrol(staff, lax, name="Second")
    lax.user_verified = False
    unverified, _ = present(staff, lax)
    assert unverified.refusal == "assertion_invalid"
    assert staff_row(staff).failed_signins == 5 and staff_row(staff).locked_until is not None  # the fifth locks
    failures = [e for e in audit_events("staff.signin") if e.outcome == "failed"]
    assert [e.reason_code for e in failures] == ["challenge_invalid", "challenge_invalid", "challenge_invalid",
                                                 "assertion_invalid"]
    assert all(json.loads(e.details)["step"] == "passkey" for e in failures)
    # Outside sign-in (an authorisation at the counter) a failure is its own action, counted the same.
    assert [e.reason_code for e in audit_events("staff.passkey_assert") if e.outcome == "failed"] == [
        "challenge_invalid"]
    assert audit_events("staff.locked")


def test_counter_regression_revoked_and_foreign_keys_are_refused(app):
    staff, other = staff_row(make_staff("supervisor")), staff_row(make_staff("supervisor"))
    key, spare, theirs = SoftKey(), SoftKey(), SoftKey()
    enrol(staff, key)
    spare_row = enrol(staff, spare, name="Spare")
    enrol(other, theirs)
    assert present(staff, key)[0].ok and present(staff, key)[0].ok
    key.counter = 0  # a copy of the key, its counter behind the original's
    assert present(staff, key)[0].refusal == "sign_count_regression"
    passkeys.revoke(db.session, actor_for(staff), spare_row.id)
    db.session.commit()
    assert present(staff, spare)[0].refusal == "passkey_revoked"
    assert present(staff, theirs)[0].refusal == "passkey_other_staff"
    stranger = SoftKey()
    assert present(staff, stranger)[0].refusal == "passkey_unknown"
    assert staff_row(staff).failed_signins == 4 and staff_row(other).failed_signins == 0


def test_key_failures_and_totp_failures_share_one_lock(app):
    from console.services import staff_auth

    handle = make_staff("supervisor")
    staff = staff_row(handle)
    key = SoftKey()
    enrol(staff, key)
    for _ in range(3):
        assert present(staff, SoftKey())[0].refusal == "passkey_unknown"
    assert present(staff, key, origin="http://localhost.evil.example")[0].refusal == "assertion_invalid"
    assert staff_auth.check_totp(db.session, staff, "000000", source_ip=None).status == "locked"
    db.session.commit()
    # Locked: the right key is not even checked, and its challenge stays unspent.
    options = passkeys.begin_assertion(db.session, staff, passkeys.SIGNIN, "pending:2")
    db.session.commit()
    locked = passkeys.verify_assertion(db.session, staff, passkeys.SIGNIN, "pending:2", key.assertion(options),
                                       actor=actor_for(staff))
    db.session.commit()
    assert locked.refusal == "account_locked" and locked.locked
    assert db.session.query(WebauthnChallenge).count() == 1


def test_rename_and_revoke_by_owner_and_admin_only(app):
    owner = staff_row(make_staff("teller"))
    other, admin = staff_row(make_staff("teller")), staff_row(make_staff("admin", branch_code="HO-000"))
    first, second = enrol(owner, SoftKey()), enrol(owner, SoftKey(), name="Second")
    passkeys.rename(db.session, actor_for(owner), first.id, "  Blue   key ")
    db.session.commit()
    assert first.name == "Blue key" and audit_events("staff.passkey_rename")
    for attempt in (lambda: passkeys.rename(db.session, actor_for(admin), first.id, "x"),
                    lambda: passkeys.revoke(db.session, actor_for(other), first.id),
                    lambda: passkeys.revoke(db.session, actor_for(owner), 99999)):
        with pytest.raises(NotFound) as refused:
            attempt()
        assert refused.value.audit["outcome"] == "denied"
        db.session.rollback()
    generation = owner.session_generation
    passkeys.revoke(db.session, actor_for(admin), first.id)
    db.session.commit()
    revoked = audit_events("staff.passkey_revoke")[-1]
    assert json.loads(revoked.details)["by"] == "admin" and revoked.actor_employee_no == admin.employee_no
    # Revoked as lost by an administrator: whatever the key signed in has ended too.
    assert owner.session_generation == generation + 1
    with pytest.raises(Conflict):
        passkeys.revoke(db.session, actor_for(owner), first.id)
    db.session.rollback()
    # A role that must sign in with a key keeps its last one (an administrator revokes it).
    app.config["STAFF_KEY_REQUIRED_ROLES"] = ("teller",)
    with pytest.raises(Conflict) as last:
        passkeys.revoke(db.session, actor_for(owner), second.id)
    assert last.value.audit["reason_code"] == "last_required_key"
    db.session.rollback()
    assert passkeys.has_passkey(db.session, owner)


def test_admin_resets_revoke_every_key_and_end_sessions(app):
    from console.services import staff_auth

    admin = staff_row(make_staff("admin", branch_code="HO-000"))
    staff = staff_row(make_staff("supervisor"))
    enrol(staff, SoftKey())
    enrol(staff, SoftKey(), name="Second")
    staff_auth.start_session(db.session, staff, source_ip=None)
    db.session.commit()
    staff_admin.revoke_staff_passkeys(db.session, actor_for(admin), staff)
    db.session.commit()
    assert not passkeys.has_passkey(db.session, staff) and staff.totp_enrolled
    details = json.loads(audit_events("staff.passkey_revoke")[-1].details)
    assert details["passkeys_revoked"] == 2 and details["sessions_ended"] == 1
    enrol(staff, SoftKey(), name="New")
    staff_admin.reset_staff_totp(db.session, actor_for(admin), staff)
    db.session.commit()
    assert not passkeys.has_passkey(db.session, staff) and not staff.totp_enrolled
    assert json.loads(audit_events("staff.totp_reset")[-1].details)["passkeys_revoked"] == 1
    assert all(k.revoked_by_id == admin.id for k in passkeys.passkeys_of(db.session, staff, include_revoked=True))


# --- the pages -------------------------------------------------------------------------------------

OPTIONS_RE = re.compile(r'data-options="([^"]+)"')


def ceremony_page(client, url) -> tuple[str, str]:
    """The options and the CSRF token of one view of a key page (each view issues a new challenge)."""
    text = client.get(url).get_data(as_text=True)
    return html.unescape(OPTIONS_RE.search(text).group(1)), CSRF_RE.search(text).group(1)


def test_enrol_from_the_profile_then_sign_in_with_the_key(app, client):
    handle = make_staff("teller")
    sign_in(client, handle)
    assert "passkeys.js" in client.get("/profile/keys/").get_data(as_text=True)
    key = SoftKey()
    options, csrf = ceremony_page(client, "/profile/keys/")
    # The password is asked again (a key can authorise as its owner): a wrong one adds nothing.
    refused = client.post("/profile/keys/", data={"name": "Blue key", "credential": key.register(options),
                                                  "password": "not-the-password", "csrf_token": csrf})
    assert refused.status_code == 400 and not passkeys.passkeys_of(db.session, staff_row(handle))
    assert staff_row(handle).failed_signins == 1
    options, csrf = ceremony_page(client, "/profile/keys/")
    enrolled = client.post("/profile/keys/", data={"name": "Blue key", "credential": key.register(options),
                                                   "password": handle.password, "csrf_token": csrf},
                           follow_redirects=True)
    assert "Blue key" in enrolled.get_data(as_text=True)
    row = passkeys.passkeys_of(db.session, staff_row(handle))[0]
    post_form(client, f"/profile/keys/{row.id}/name", {"name": "Green key"}, token_from="/profile/keys/")
    db.session.expire_all()
    assert db.session.get(StaffPasskey, row.id).name == "Green key"
    post_form(client, "/auth/logout", {}, token_from="/profile/keys/")

    # Password, then the key page comes first (the code stays possible for a role not bound to keys).
    answer = post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    assert answer.headers["Location"].endswith("/auth/key")
    assert "/auth/totp" in client.get("/auth/key").get_data(as_text=True)
    options, csrf = ceremony_page(client, "/auth/key")
    done = client.post("/auth/key", data={"credential": key.assertion(options), "csrf_token": csrf})
    assert done.status_code == 302 and client.get("/").status_code == 200
    assert audit_events("staff.signin")[-1].outcome == "success"
    # Someone else's key id in a URL is "not found" (and recorded), never theirs to revoke.
    other = make_staff("teller")
    theirs = enrol(staff_row(other), SoftKey())
    refused = post_form(client, f"/profile/keys/{theirs.id}/revoke", {}, token_from="/profile/keys/")
    assert refused.status_code == 404 and passkeys.has_passkey(db.session, staff_row(other))
    post_form(client, f"/profile/keys/{row.id}/revoke", {}, token_from="/profile/keys/")
    assert not passkeys.has_passkey(db.session, staff_row(handle))


def test_a_role_that_requires_a_key_enrols_one_before_anything_else(app, client):
    app.config["STAFF_KEY_REQUIRED_ROLES"] = ("supervisor",)
    handle = make_staff("supervisor")
    signed = sign_in(client, handle, follow=False)
    assert signed.headers["Location"].endswith("/auth/key/enrol")
    assert client.get("/").status_code == 302  # no session yet
    options, csrf = ceremony_page(client, "/auth/key/enrol")
    done = client.post("/auth/key/enrol", data={"name": "Supervisor key", "credential": SoftKey().register(options),
                                                "csrf_token": csrf})
    assert done.status_code == 302 and client.get("/").status_code == 200
    post_form(client, "/auth/logout", {}, token_from="/profile/keys/")
    # From now on the code alone does not sign this role in, on the console or the API.
    post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    assert client.get("/auth/totp").headers["Location"].endswith("/auth/key")
    assert "/auth/totp" not in client.get("/auth/key").get_data(as_text=True)
    token = client.post("/api/v1/tokens", json={"employee_no": handle.employee_no, "password": handle.password,
                                                "totp_code": totp_code(handle)})
    assert token.status_code == 403 and token.get_json()["error"]["code"] == "key_required"


def test_the_administrator_revokes_a_lost_key_from_the_staff_list(app, client, login_as):
    login_as("admin", branch_code="HO-000")
    other = make_staff("supervisor")
    listing = client.get("/admin/staff_admin/").get_data(as_text=True)
    assert f"/account/revoke_keys/?id={other.id}" not in listing  # no key, nothing to revoke
    enrol(staff_row(other), SoftKey())
    listing = client.get("/admin/staff_admin/").get_data(as_text=True)
    assert f"/account/revoke_keys/?id={other.id}" in listing
    done = post_form(client, f"/admin/staff_admin/account/revoke_keys/?id={other.id}", {}, follow=True)
    assert done.status_code == 200 and not passkeys.has_passkey(db.session, staff_row(other))
    assert json.loads(audit_events("staff.passkey_revoke")[-1].details)["by"] == "admin"
