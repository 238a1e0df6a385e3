"""The one transaction boundary (console/boundary.py): commits only there, a refusal's event
survives the rollback of the work it refused, and the staff API's actions say they came by API."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from console import boundary
from console.extensions import db
from console.models.audit import AuditEvent
from console.models.staff import Branch, Staff
from console.services import audit, audit_query, cases, overview, staff_admin
from console.services.actor import Actor
from console.services.errors import DomainError, NotAllowed, NotFound

from .conftest import audit_events, get_wallet, make_staff, make_wallet, totp_code

CONSOLE = Path(__file__).resolve().parent.parent / "console"

# Outside the boundary, only these commit their own short transactions, on purpose. (The lockout
# engine commits its claim before the password check too, but through the ``commit`` its entry
# point hands it: ``boundary.commit_now``.)
DOCUMENTED_EXCEPTIONS = {
    "services/notifications.py": "the SMS worker commits each delivery attempt, one message at a time",
    "services/sequencer.py": "the audit sequencer chains committed intake rows in its own transaction, on its "
                             "own connection, after the writers' COMMIT (docs/audit-chain.md)",
}


def test_commit_appears_only_in_the_boundary_and_the_documented_exceptions():
    found = {}
    for path in CONSOLE.rglob("*.py"):
        relative = path.relative_to(CONSOLE).as_posix()
        lines = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"\.commit\(", line)]
        if lines:
            found[relative] = lines
    assert "boundary.py" in found
    strays = {path: lines for path, lines in found.items()
              if path != "boundary.py" and path not in DOCUMENTED_EXCEPTIONS}
    assert strays == {}, f"commit outside the boundary: {strays}"
    # and the documented exceptions are still real (an exception nobody needs any more is removed)
    assert set(DOCUMENTED_EXCEPTIONS) <= set(found)


def _events() -> int:
    return db.session.scalar(select(func.count()).select_from(AuditEvent))


def _actor(role="teller", **kwargs) -> Actor:
    handle = make_staff(role, **kwargs)
    return Actor.for_staff(db.session.get(Staff, handle.id))


def test_perform_commits_the_change_with_its_event(app):
    wallet = get_wallet(make_wallet())
    actor = _actor()
    case = boundary.perform(actor, cases.open_case, wallet.customer)
    db.session.rollback()  # nothing left to lose: it was committed
    [event] = audit_events("case.open")
    assert event.case_ref == case.case_no


def test_a_refusal_rolls_the_work_back_and_records_only_the_refusal(app):
    """An admin service refused to a teller: the refusal is an event of its own, nothing else
    (before, `_require_admin` queued its event in the transaction that was then rolled back)."""
    actor = _actor("teller")
    branch = db.session.scalar(select(Branch))
    staff_before, events_before = db.session.scalar(select(func.count(Staff.id))), _events()
    with pytest.raises(NotAllowed):
        boundary.perform(actor, staff_admin.create_staff, employee_no="X9", name="某人", role="teller",
                         branch=branch)
    db.session.rollback()
    assert db.session.scalar(select(func.count(Staff.id))) == staff_before
    assert _events() == events_before + 1
    [event] = audit_events("staff.create")
    assert (event.outcome, event.reason_code, event.actor_employee_no) == ("denied", "not_permitted",
                                                                          actor.employee_no)


def test_a_failure_after_the_service_changed_things_leaves_nothing(app):
    """A crash (not a refusal) in the middle of the work: rolled back, no change, no event."""
    wallet = get_wallet(make_wallet())
    actor = _actor()
    events_before = _events()

    def opens_then_crashes(session, who, customer):
        cases.open_case(session, who, customer)
        raise RuntimeError("the worker died here")

    with pytest.raises(RuntimeError):
        boundary.perform(actor, opens_then_crashes, wallet.customer)
    db.session.rollback()
    assert _events() == events_before and audit_events("case.open") == []


def test_refuse_keeps_the_edge_refusal_and_drops_the_half_done_work(app):
    wallet = get_wallet(make_wallet())
    actor = _actor()
    cases.open_case(db.session, actor, wallet.customer)  # queued, not committed
    boundary.refuse(actor, "access.denied", reason_code="not_permitted", details={"why": "test"})
    db.session.rollback()
    assert audit_events("case.open") == []
    [event] = audit_events("access.denied")
    assert event.outcome == "denied" and json.loads(event.details) == {"why": "test"}


def test_read_audits_are_written_by_the_services(app):
    actor = _actor("auditor", branch_code="HO-000")
    rows, _next = audit_query.search(db.session, actor, audit_query.parse_filters({}))
    db.session.commit()
    [event] = audit_events("audit.search")
    assert json.loads(event.details)["shown"] == len(rows)
    row = audit_query.view(db.session, actor, event.seq)
    db.session.commit()
    assert row.seq == event.seq and audit_events("audit.view")[-1].outcome == "success"
    with pytest.raises(NotFound) as refused:
        audit_query.view(db.session, actor, 10**9)
    db.session.rollback()
    audit.record_refusal(db.session, actor, refused.value.audit)
    db.session.commit()
    assert audit_events("audit.view")[-1].reason_code == "not_found_or_out_of_scope"


def test_approval_list_refusal_is_written_by_the_service(app):
    actor = _actor("teller")
    with pytest.raises(DomainError):
        boundary.perform(actor, overview.pending_approvals)
    db.session.rollback()
    [event] = audit_events("approval.list")
    assert event.outcome == "denied" and event.reason_code == "not_permitted"


def test_staff_api_actions_are_told_apart_from_console_actions(app, client):
    wallet_no = make_wallet()
    customer_no = get_wallet(wallet_no).customer.customer_no
    handle = make_staff("teller")
    token = client.post("/api/v1/tokens", json={"employee_no": handle.employee_no, "password": handle.password,
                                                "totp_code": totp_code(handle)}).get_json()["token"]
    response = client.post(f"/api/v1/customers/{customer_no}/cases", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201
    [by_api] = audit_events("case.open")
    assert json.loads(by_api.details or "{}").get("interface") == "api"
    boundary.perform(Actor.for_staff(db.session.get(Staff, handle.id)), cases.open_case, get_wallet(wallet_no).customer)
    console = audit_events("case.open")[-1]
    assert "interface" not in json.loads(console.details or "{}")
