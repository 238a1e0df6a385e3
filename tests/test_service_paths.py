"""Service paths no other test ran: each asserts its audit event, and that a failure leaves
neither the change nor the event (in the style of indico's operations tests)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from console.extensions import db
from console.models.audit import AuditEvent
from console.models.customer import SecurityQuestion
from console.models.notification import Notification
from console.models.service import CaseNote, Verification
from console.models.staff import Staff
from console.services import cases, operations, staff_admin, verification
from console.services.actor import Actor
from console.services.errors import DomainError

from .conftest import audit_events, get_wallet, make_staff, make_wallet


def _actor(handle, channel="console") -> Actor:
    return Actor.for_staff(db.session.get(Staff, handle.id), channel=channel)


def _case(handle, wallet_no, channel="console"):
    actor = _actor(handle, channel)
    wallet = get_wallet(wallet_no)
    case = cases.open_case(db.session, actor, wallet.customer)
    db.session.commit()
    return actor, case, get_wallet(wallet_no)


def _events() -> int:
    return db.session.scalar(select(func.count()).select_from(AuditEvent))


def _fails_cleanly(fn, *args, **kwargs):
    """The call raises a domain error; rolled back, it leaves no change and no event."""
    before = _events()
    with pytest.raises(DomainError):
        fn(*args, **kwargs)
    db.session.rollback()
    assert _events() == before


@pytest.mark.parametrize("operation, state, sms", [
    ("reset_questions", lambda w: len(w.security_questions) == 0, "security_questions_reset"),
    ("place_hold", lambda w: w.hold_placed_at is not None, "hold_placed"),
])
def test_execute_changes_the_wallet_with_its_event_and_sms(app, operation, state, sms):
    wallet_no = make_wallet()
    actor, case, wallet = _case(make_staff("supervisor"), wallet_no)
    operations.execute(db.session, actor, case, wallet, operation, reason_code="customer_request", note="柜面",
                       verification_id=None)
    db.session.commit()
    wallet = get_wallet(wallet_no)
    assert state(wallet)
    event = audit_events(f"wallet.{operation}")[-1]
    assert event.case_ref == case.case_no and event.actor_employee_no == actor.employee_no
    assert db.session.scalar(select(func.count()).select_from(Notification).where(Notification.kind == sms)) == 1


def test_release_hold_clears_it_with_its_event(app):
    wallet_no = make_wallet()
    actor, case, wallet = _case(make_staff("supervisor"), wallet_no)
    operations.execute(db.session, actor, case, wallet, "place_hold", reason_code="customer_request", note=None,
                       verification_id=None)
    db.session.commit()
    operations.execute(db.session, actor, case, get_wallet(wallet_no), "release_hold", reason_code="customer_request",
                       note=None, verification_id=None)
    db.session.commit()
    assert get_wallet(wallet_no).hold_placed_at is None
    assert len(audit_events("wallet.release_hold")) == 1


def test_a_failed_operation_leaves_neither_change_nor_event(app):
    """Unlocking a wallet that is not locked is refused inside execute: nothing is written."""
    wallet_no = make_wallet()
    actor, case, wallet = _case(make_staff("supervisor"), wallet_no)
    questions = db.session.scalar(select(func.count()).select_from(SecurityQuestion))
    _fails_cleanly(operations.execute, db.session, actor, case, wallet, "unlock", reason_code="customer_request",
                   note=None, verification_id=None)
    assert get_wallet(wallet_no).lock_kind is None
    assert db.session.scalar(select(func.count()).select_from(SecurityQuestion)) == questions
    assert audit_events("wallet.unlock") == []


def test_add_note_records_it_and_refuses_empty_or_closed(app):
    handle = make_staff("teller")
    actor, case, _wallet = _case(handle, make_wallet())
    note = cases.add_note(db.session, actor, case, "  客户来电询问  ")
    db.session.commit()
    assert note.text == "客户来电询问"
    assert len(audit_events("case.note")) == 1
    _fails_cleanly(cases.add_note, db.session, actor, case, "   ")
    _fails_cleanly(cases.add_note, db.session, actor, case, "x" * 2001)
    assert db.session.scalar(select(func.count()).select_from(CaseNote)) == 1


def test_a_resent_code_does_not_reset_the_tries(app):
    handle = make_staff("agent", branch_code="CC-95588")
    wallet_no = make_wallet()
    actor, case, wallet = _case(handle, wallet_no, channel="phone")
    row = verification.start_phone_verification(db.session, actor, case, wallet)
    db.session.commit()
    # One wrong code: a try is used (and audited).
    verification.check_phone_verification(db.session, actor, case, row, wallet, code="000001", answers={})
    db.session.commit()
    row = db.session.get(Verification, row.id)
    assert row.code_tries == 1 and row.codes_sent == 1
    sent_before = db.session.scalar(select(func.count()).select_from(Notification))
    verification.resend_code(db.session, actor, case, row)
    db.session.commit()
    row = db.session.get(Verification, row.id)
    assert row.code_tries == 1 and row.codes_sent == 2  # a new code, the same count of tries
    assert db.session.scalar(select(func.count()).select_from(Notification)) == sent_before + 1
    other = make_staff("agent", branch_code="CC-95588")
    _fails_cleanly(verification.resend_code, db.session, _actor(other, "phone"), case, row)


def test_reset_staff_totp_unbinds_and_ends_sessions_with_its_event(app):
    admin = make_staff("admin", branch_code="HO-000")
    target = make_staff("teller")
    staff_admin.reset_staff_totp(db.session, _actor(admin), db.session.get(Staff, target.id))
    db.session.commit()
    assert db.session.get(Staff, target.id).totp_secret_enc is None
    event = audit_events("staff.totp_reset")[-1]
    assert event.actor_employee_no == admin.employee_no and event.outcome == "success"
    # Not an admin: refused, nothing changed (the refusal's own event is recorded by the caller).
    teller = make_staff("teller")
    other = make_staff("teller")
    _fails_cleanly(staff_admin.reset_staff_totp, db.session, _actor(teller), db.session.get(Staff, other.id))
    assert db.session.get(Staff, other.id).totp_secret_enc is not None
