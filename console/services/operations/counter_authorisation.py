"""Supervisor authorisation at the counter (主管现场授权): a supervisor standing at the maker's
screen decides a waiting request there, with their own credentials, instead of from the queue.

DESIGN.md section 3 ("Approvals") and docs/counter-authorisation.md. It is the same approval:
the decision is :func:`approvals.decide` (one conditional UPDATE), so whichever of the queue and
the screen comes first decides, exactly once, and the other is told "already decided". The
request stays in the queue until then.

Two steps, each committed on its own, as sign-in's steps are (console/boundary.py ``step``):

1. :func:`prove_supervisor`: who is standing there. The number typed must name an active
   supervisor of the request's branch who is neither the maker nor the staff member signed in on
   the screen; their factor (:data:`FACTORS`: password + authenticator code, or a security key)
   is checked inside the sign-in failure counter (``staff_auth.counted_check``: a slot reserved
   before each check, the same threshold and lock as their sign-in). A failure is audited and
   counted; a code that passed is spent. This step is committed whatever its outcome.
2. The decision: ``approvals.decide(..., screen=...)`` with the supervisor as actor, the screen's
   session as the event's session, and ``decided_via = "counter"`` on the request.

Nothing of the supervisor's is kept: no session, cookie or token is made for them, the password
and code are checked and dropped, and the screen stays signed in as before.

One answer. Where an answer would tell the screen whether an employee number names an account,
which role or branch it has, or whether a password was right, it is the same answer
(``refusal == "credentials"``) and costs the same (one argon2id check, a dummy one where no
account's hash is checked): unknown number, an account of another role or branch, a disabled or
locked account, a role that must use a key, a wrong password, a wrong code, a refused key. Two
answers are specific because they confirm nothing the screen does not show already: the maker's
own number (the request names its maker) and the number of the staff member signed in there.
The security-key path names the supervisor before the key is asked for, so it tells whether a
number is a supervisor of this branch with a key; docs/counter-authorisation.md says why that
is accepted. The audit trail records the real reason every time.

Actors: an event about an account's credentials has that account as actor (as at sign-in), with
the screen's session and address; where no account's credentials were checked, the actor is the
staff member signed in on the screen. Services here never commit.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ... import policy
from ...models.service import Approval, Case
from ...models.staff import Staff
from ...passwords import verify_password
from ...permissions import APPROVAL_DECIDE, ROLE_PERMISSIONS, can
from ...timeutil import utcnow
from .. import audit, passkeys, staff_auth
from ..actor import Actor
from ..cases import refusal, require_case_actor
from ..errors import NotFound

ACTION = "approval.counter_authorise"
PURPOSE = "authorise"  # the security key's ceremony (console/services/passkeys.py)
CREDENTIALS = "credentials"  # the one answer
# The bank's directory could not check a directory account's password: nothing was counted, and the
# screen is told (as sign-in tells it: the number is a directory account, docs/directory.md).
UNAVAILABLE = "directory_unavailable"
# Refusals told as they are: they confirm nothing the screen does not already show.
TOLD = frozenset({"own_screen", "self_approval"})
EMPLOYEE_NO_MAX = 16


@dataclass(frozen=True)
class SupervisorProof:
    """Step 1's outcome. Passed: ``actor`` is the supervisor (at the screen's session and
    address) and ``name`` theirs, for the screen to say who decided. Refused: ``refusal`` is what
    the screen may be told (``CREDENTIALS`` or one of :data:`TOLD`)."""

    actor: Actor | None = None
    factor: str | None = None
    name: str | None = None
    refusal: str | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None


@dataclass(frozen=True)
class KeyChallenge:
    """The security key's first half: ``options`` for navigator.credentials.get(), or ``refusal``
    (``CREDENTIALS``, meaning "no key can be used for this number here", or one of :data:`TOLD`)."""

    options: str | None = None
    refusal: str | None = None


def counter_request(session: Session, screen: Actor, case: Case, approval_id: int) -> Approval:
    """The request a supervisor may authorise at this screen: filed in this case (open), still
    waiting, and the screen's staff member may act on the case. Anything else is refused (another
    case's or branch's request is "not found")."""
    fields = {"case_ref": case.case_no, "customer_ref": case.customer.customer_no, "approval_id": approval_id}
    require_case_actor(screen, case, ACTION, approval_id=approval_id)
    row = session.get(Approval, approval_id) if 0 < approval_id < 2**31 else None
    if row is None or row.case_id != case.id:
        raise NotFound("approval", audit={"action": ACTION, "outcome": "denied",
                                          "reason_code": "not_found_or_out_of_scope", **fields})
    if case.status != "open":
        raise refusal(ACTION, "case_closed", **fields)
    if screen.session_id is None:  # the decision names the screen's session: there must be one
        raise refusal(ACTION, "not_permitted", **fields)
    if row.status != "pending":
        raise refusal(ACTION, "already_decided", **fields)
    if row.expires_at <= utcnow():
        raise refusal(ACTION, "expired", **fields)
    return row


def key_context(approval: Approval, screen: Actor, *, approve: bool, note: str) -> str:
    """What the security key's answer is bound to: this request, this decision and note, at this
    screen's session (at most 64 characters). A key touched for a rejection cannot approve."""
    note_digest = hashlib.sha256((note or "").strip().encode()).hexdigest()[:12]
    return f"a{approval.id}:{'y' if approve else 'n'}:{screen.session_id}:{note_digest}"


def begin_key(session: Session, screen: Actor, approval: Approval, employee_no: str, *, approve: bool,
              note: str) -> KeyChallenge:
    """The key's options for the supervisor named, bound by :func:`key_context`; refused (and
    recorded) when the number names nobody who may authorise here, or someone with no key."""
    staff = _named(session, employee_no)
    why = _may_not_authorise(staff, screen, approval, factor="passkey")
    options = None
    if why is None:
        options = passkeys.begin_assertion(session, staff, PURPOSE,
                                           key_context(approval, screen, approve=approve, note=note))
        why = None if options else "no_passkey"
    if why is not None:
        _record_refusal(session, screen, approval, staff, employee_no, why, factor="passkey")
        return KeyChallenge(refusal=why if why in TOLD else CREDENTIALS)
    return KeyChallenge(options=options)


def prove_supervisor(session: Session, screen: Actor, approval: Approval, employee_no: str, *, factor: str,
                     approve: bool, note: str, password: str = "", code: str = "",
                     credential: str | None = None) -> SupervisorProof:
    """Step 1: check the supervisor named with ``factor`` ("totp": ``password`` and ``code``;
    "passkey": ``credential``, the browser's answer to :func:`begin_key`'s options). Failures are
    recorded and counted here and returned, never raised: the caller commits them."""
    check = FACTORS[factor]
    staff = _named(session, employee_no)
    why = _may_not_authorise(staff, screen, approval, factor=factor)
    if why is not None:
        if factor == "totp":
            verify_password(None, password)  # the cost of a real check: the answer's time says nothing
        _record_refusal(session, screen, approval, staff, employee_no, why, factor=factor)
        return SupervisorProof(refusal=why if why in TOLD else CREDENTIALS)
    actor = supervisor_actor(staff, screen)
    failure = check(session, staff, actor, password=password, code=code, credential=credential,
                    context=key_context(approval, screen, approve=approve, note=note))
    if failure == UNAVAILABLE:
        return SupervisorProof(refusal=UNAVAILABLE)
    if failure is not None:
        return SupervisorProof(refusal=CREDENTIALS)
    audit.record(session, actor, ACTION, approval_id=approval.id, customer_ref=approval.customer.customer_no,
                 case_ref=approval.case.case_no,
                 details={"step": "proof", "factor": factor, "screen_staff": screen.employee_no})
    return SupervisorProof(actor=actor, factor=factor, name=staff.name)


def supervisor_actor(staff: Staff, screen: Actor) -> Actor:
    """The supervisor as actor, in the screen's session, from its address and on its channel."""
    return Actor.for_staff(staff, source_ip=screen.source_ip, session_id=screen.session_id, channel=screen.channel)


def password_allowed() -> bool:
    """Whether any role that decides approvals may still authorise with password and code (the
    policy may require a security key of supervisors: then only the key is offered)."""
    required = policy.current().staff_signin.key_required_roles
    return any(APPROVAL_DECIDE in perms and role not in required for role, perms in ROLE_PERMISSIONS.items())


# --- the factors -----------------------------------------------------------------------------------
# Each checks one supervisor's proof inside the sign-in failure counter and returns None when it
# passed, else the failure's reason code (already recorded). A new factor plugs in here.


def _password_and_code(session: Session, staff: Staff, actor: Actor, *, password: str, code: str, **_) -> str | None:
    """The password, then the authenticator code: two counted checks, as sign-in's two steps."""
    checked = []

    def password_check() -> str | None:
        checked.append(True)
        return None if staff_auth.password_is_right(session, staff, password) else staff_auth.GENERIC_FAILURE

    outcome = staff_auth.counted_check(session, staff, actor, "password", password_check, action=ACTION)
    if not checked:
        verify_password(None, password)  # locked: refused unchecked, in the time of a check
    if outcome.status != "ok":
        return outcome.reason or outcome.status
    outcome = staff_auth.counted_check(
        session, staff, actor, "totp", lambda: None if staff_auth.spend_totp_code(staff, code) else "wrong_code",
        action=ACTION)
    return None if outcome.status == "ok" else outcome.reason or outcome.status


def _security_key(session: Session, staff: Staff, actor: Actor, *, credential: str | None, context: str,
                  **_) -> str | None:
    """The browser's answer to :func:`begin_key`'s options, checked by console/services/passkeys.py
    (counted there like a code, and recorded as ``staff.passkey_assert``)."""
    return passkeys.verify_assertion(session, staff, PURPOSE, context, credential, actor=actor).refusal


FACTORS = {"totp": _password_and_code, "passkey": _security_key}


# --- who may authorise -------------------------------------------------------------------------------


def _named(session: Session, employee_no: str) -> Staff | None:
    typed = (employee_no or "").strip()
    if not typed or len(typed) > EMPLOYEE_NO_MAX:
        return None
    return session.scalar(select(Staff).where(Staff.employee_no == typed))


def _may_not_authorise(staff: Staff | None, screen: Actor, approval: Approval, *, factor: str) -> str | None:
    """Why the account named may not authorise this request at this screen (None: it may)."""
    if staff is None:
        return "unknown_employee"
    if staff.id == screen.staff_id:
        return "own_screen"
    if staff.id == approval.maker_id:
        return "self_approval"
    if not staff.active:
        return "account_disabled"
    if staff_auth.account_refused(staff):
        return "branch_inactive"
    if not can(staff, APPROVAL_DECIDE):
        return "not_permitted"
    if staff.branch_id != approval.branch_id:
        return "other_branch"
    if factor == "totp" and passkeys.key_required(staff):
        return "key_required"
    return None


def _record_refusal(session: Session, screen: Actor, approval: Approval, staff: Staff | None, employee_no: str,
                    why: str, *, factor: str) -> None:
    """No credential of anyone was checked: the staff member signed in on the screen is the actor."""
    audit.record(session, screen, ACTION, outcome="denied", reason_code=why, approval_id=approval.id,
                 customer_ref=approval.customer.customer_no, case_ref=approval.case.case_no,
                 details={"step": "proof", "factor": factor,
                          "employee_no": staff.employee_no if staff else (employee_no or "").strip()[:EMPLOYEE_NO_MAX]})
