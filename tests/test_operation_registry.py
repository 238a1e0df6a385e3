"""Wallet operations as a registry: every operation declares every part; everything that lists
operations reads the registry; a made-up operation is picked up everywhere without touching any
other module; and a failure inside an operation's execution leaves neither change nor event."""
from __future__ import annotations

import re
import string
from dataclasses import replace

import pytest
from babel.messages.pofile import read_po
from flask_babel import force_locale
from sqlalchemy import func, select

from console import ROOT, policy
from console.adapters.registry import LocalRegistry
from console.api.staff_openapi import openapi_document
from console.extensions import db
from console.i18n_marker import N_
from console.models.audit import AuditEvent
from console.models.customer import SecurityQuestion
from console.models.notification import Notification
from console.models.staff import Staff
from console import permissions as P
from console.permissions import ALL_PERMISSIONS
from console.services import audit_dashboard, cases, notifications, operations, receipts, verification
from console.services.actor import Actor
from console.services.cases import refusal
from console.services.errors import DomainError
from console.services.operations import registry
from console.web.desk_labels import OPERATION_HELP, OPERATION_LABELS

from .conftest import ID_NUMBERS, audit_events, get_wallet, make_staff, make_wallet

PO = ROOT / "console" / "translations" / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"
OPERATIONS = registry.all_operations()
SMS_FIELDS = {"bank": "某银行", "hotline": "95588", "time": "2026-01-01 09:00", "branch": "测试支行"}


def _translated() -> dict[str, str]:
    with open(PO, "rb") as fh:
        return {m.id: m.string for m in read_po(fh) if m.id and m.string and "fuzzy" not in m.flags}


def _openapi_enum() -> list[str]:
    document = openapi_document()
    body = document["paths"]["/cases/{case_no}/operations"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    if "$ref" in schema:  # the request body's model, in components/schemas
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema["properties"]["operation"]["enum"]


# --- completeness -------------------------------------------------------------------------------


def test_the_registry_has_the_operations_of_design_section_3():
    """In this order on the case page; a new operation may come anywhere among them."""
    design = ["unlock", "reset_password", "reset_questions", "reset_2fa", "place_hold", "release_hold",
              "release_freeze"]
    assert [code for code in registry.codes() if code in design] == design


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.code)
def test_every_operation_declares_every_part(op):
    assert re.fullmatch(r"[a-z][a-z0-9_]{1,23}", op.code)  # fits Approval.operation (24 characters)
    assert op.permission in ALL_PERMISSIONS
    assert op.request_permission is None or op.request_permission in ALL_PERMISSIONS
    if op.verification is not None:  # None: protective, needs no verification
        assert set(op.verification) == set(registry.CHANNELS)
        for strengths in op.verification.values():
            assert strengths and strengths <= {"strong", "medium"}
    for rule in (op.needs_approval, op.applies, op.change):
        assert callable(rule)
    assert isinstance(op.counts_as_reset, bool)
    # The SMS: its own kind, and a text that formats with the fields the engine fills in.
    assert op.sms_kind and op.sms_kind not in notifications.TEMPLATES
    fields = {field for _text, field, _spec, _conv in string.Formatter().parse(op.sms_template) if field}
    assert {"bank", "hotline"} <= fields <= set(SMS_FIELDS)
    assert op.sms_template.format(**SMS_FIELDS).startswith("【某银行】")
    # Labels: non-empty, and the screen's translated into Chinese.
    translated = _translated()
    for msgid in (op.label, op.help):
        assert msgid.strip() and translated.get(msgid, "").strip(), f"no Chinese for {msgid!r}"
    zh, en = op.receipt_label
    assert zh.strip() and en.strip()


def test_codes_positions_and_sms_kinds_are_unique():
    for attribute in ("code", "position", "sms_kind", "receipt_label"):
        values = [getattr(op, attribute) for op in OPERATIONS]
        assert len(set(values)) == len(values), attribute


def test_everything_that_lists_operations_reads_the_registry(app):
    assert _openapi_enum() == registry.codes()
    assert list(operations.RULES) == registry.codes()
    assert audit_dashboard.reset_actions() == tuple(op.action for op in OPERATIONS if op.counts_as_reset)
    for op in OPERATIONS:
        assert receipts.action_label(op.action) == op.receipt_label
        assert notifications.template(op.sms_kind) == op.sms_template
    assert list(OPERATION_LABELS) == list(OPERATION_HELP) == registry.codes()
    translated = _translated()
    with force_locale("zh_CN"):
        for op in OPERATIONS:
            assert str(OPERATION_LABELS[op.code]) == translated[op.label]
            assert str(OPERATION_HELP[op.code]) == translated[op.help]
    with force_locale("en"):
        assert str(OPERATION_LABELS["unlock"]) == "Unlock the wallet"


# --- a made-up operation ------------------------------------------------------------------------


def _made_up_change(session, actor, case, wallet, *, reason_code, verification_id, now) -> None:
    wallet.must_change_password = True


MADE_UP = registry.Operation(  # requires a new password at the next sign-in
    code="made_up_for_tests", position=10_000, permission=P.CREDENTIALS_RESET,
    verification={"counter": registry.STRONG_OR_MEDIUM, "phone": registry.STRONG_OR_MEDIUM},
    needs_approval=registry.no_approval, applies=lambda wallet: not wallet.must_change_password,
    change=_made_up_change, sms_kind="made_up_for_tests",
    sms_template="【{bank}】您的数字钱包已于{time}在{branch}设置为下次登录须修改密码。如非本人办理，请立即致电{hotline}。",
    label=N_("A made-up operation (tests only)"), help=N_("Makes the customer choose a new password."),
    receipt_label=("下次登录须改密", "New password required"), counts_as_reset=True,
)


def _actor(handle, channel="counter") -> Actor:
    return Actor.for_staff(db.session.get(Staff, handle.id), channel=channel)


def _counter_case(role="teller", wallet_no=None):
    wallet_no = wallet_no or make_wallet()
    actor = _actor(make_staff(role))
    case = cases.open_case(db.session, actor, get_wallet(wallet_no).customer)
    db.session.commit()
    return actor, case, wallet_no


def _verify_at_counter(actor, case, wallet_no):
    proof = verification.verify_at_counter(db.session, actor, case, id_type="resident_id",
                                           id_number=ID_NUMBERS[wallet_no], photo_matches=True,
                                           registry=LocalRegistry(db.session))
    db.session.commit()
    assert proof.status == "passed", proof.failure_reason
    return proof


def _row(rows, code):
    return next(r for r in rows if r.operation == code)


def test_a_made_up_operation_is_picked_up_everywhere(app, monkeypatch):
    monkeypatch.setitem(registry.REGISTRY, MADE_UP.code, MADE_UP)
    monkeypatch.setitem(app.config, "DASHBOARD_REPEATED_RESETS", 1)
    policy.rebuild(app)
    actor, case, wallet_no = _counter_case()

    # The case page's read model, before and after the verification it needs.
    row = _row(operations.availability(db.session, actor, case), MADE_UP.code)
    assert (row.state, row.reason, row.needs_approval) == ("needs_verification", "verification_missing_or_expired",
                                                            False)
    proof = _verify_at_counter(actor, case, wallet_no)
    row = _row(operations.availability(db.session, actor, case, proof), MADE_UP.code)
    assert (row.state, row.reason) == ("available", None) and row.wallet.wallet_no == wallet_no
    # The staff API's enum, the desk's words (in English until its translation is added).
    assert MADE_UP.code in _openapi_enum()
    with force_locale("zh_CN"):
        assert str(OPERATION_LABELS[MADE_UP.code]) == "A made-up operation (tests only)"

    # Run it: its event, its SMS, its receipt line, the dashboard's reset lists.
    result = operations.perform(db.session, actor, case, get_wallet(wallet_no), MADE_UP.code,
                                reason_code="customer_request")
    db.session.commit()
    assert result.status == "done" and get_wallet(wallet_no).must_change_password
    event = audit_events("wallet.made_up_for_tests")[-1]
    assert event.outcome == "success" and event.case_ref == case.case_no and event.verification_id == proof.id
    sms = db.session.scalars(select(Notification).where(Notification.kind == MADE_UP.sms_kind)).all()
    assert len(sms) == 1 and "下次登录须修改密码" in notifications.message_text(sms[0])
    receipt = receipts.close_and_issue(db.session, actor, case)
    db.session.commit()
    lines = receipts.receipt_data(receipt)["operations"]
    assert ("下次登录须改密", "New password required") in [(line["label_zh"], line["label_en"]) for line in lines]
    auditor = Actor.for_staff(db.session.get(Staff, make_staff("auditor", branch_code="HO-000").id))
    assert "wallet.made_up_for_tests" in audit_dashboard.reset_actions()
    assert (case.customer.customer_no, 1) in [tuple(r) for r in audit_dashboard.build(db.session, auditor)["repeated"]]
    # It no longer applies once done: the case page leaves it out.
    case2 = cases.open_case(db.session, actor, get_wallet(wallet_no).customer)
    db.session.commit()
    assert MADE_UP.code not in [r.operation for r in operations.availability(db.session, actor, case2)]


def test_the_scratch_operation_is_gone_afterwards(app):
    assert MADE_UP.code not in registry.REGISTRY and MADE_UP.code not in _openapi_enum()


# --- the read model -----------------------------------------------------------------------------


class _Proof:
    def __init__(self, strength):
        self.strength, self.id = strength, None


def test_availability_says_what_each_actor_may_do_and_why_not(app):
    teller, case, wallet_no = _counter_case("teller")
    rows = {r.operation: r for r in operations.availability(db.session, teller, case, None)}
    # Not applicable to an unlocked, unfrozen wallet without a hold: left out.
    assert {"reset_password", "reset_questions", "reset_2fa", "place_hold"} <= set(rows)
    assert not {"unlock", "release_hold", "release_freeze"} & set(rows)
    assert (rows["place_hold"].state, rows["place_hold"].reason) == ("available", None)
    assert (rows["reset_password"].state, rows["reset_password"].reason) == ("needs_verification",
                                                                             "verification_missing_or_expired")
    # At a counter, resetting 2FA needs the document: a medium verification is too weak.
    rows = {r.operation: r for r in operations.availability(db.session, teller, case, _Proof("medium"))}
    assert (rows["reset_2fa"].state, rows["reset_2fa"].reason) == ("needs_verification", "verification_too_weak")
    assert rows["reset_password"].state == "available"
    rows = {r.operation: r for r in operations.availability(db.session, teller, case, _Proof("strong"))}
    assert all(rows[code].state == "available" and not rows[code].needs_approval
               for code in ("reset_password", "reset_questions", "reset_2fa", "place_hold"))
    # An agent by phone may only file the 2FA reset for approval.
    agent = _actor(make_staff("agent", branch_code="CC-95588"), "phone")
    phone_case = cases.open_case(db.session, agent, get_wallet(wallet_no).customer)
    db.session.commit()
    rows = {r.operation: r for r in operations.availability(db.session, agent, phone_case, _Proof("medium"))}
    assert rows["reset_2fa"].state == "available" and rows["reset_2fa"].needs_approval
    # An auditor may start none of them: every operation shows, refused, even those that do not apply.
    auditor = _actor(make_staff("auditor", branch_code="HO-000"))
    rows = operations.availability(db.session, auditor, case, None)
    assert {r.operation for r in rows} == set(registry.codes())
    assert {(r.state, r.reason) for r in rows} == {("not_allowed", "not_permitted")}


# --- a failure inside an operation's execution --------------------------------------------------


def _counts():
    return (db.session.scalar(select(func.count()).select_from(AuditEvent)),
            db.session.scalar(select(func.count()).select_from(Notification)),
            db.session.scalar(select(func.count()).select_from(SecurityQuestion)))


def _refuse_after_changing(session, actor, case, wallet, *, reason_code, verification_id, now):
    session.query(SecurityQuestion).filter(SecurityQuestion.wallet_id == wallet.id).delete()
    wallet.must_change_password = True
    session.flush()
    raise refusal("wallet.reset_questions", "not_applicable", case_ref=case.case_no)


def _outbox_broken(*args, **kwargs):
    raise RuntimeError("the outbox insert failed")


@pytest.mark.parametrize("where, error", [("in_the_change", DomainError),
                                          ("after_the_change_and_its_event", RuntimeError)])
def test_a_failure_inside_execute_leaves_neither_change_nor_event(app, monkeypatch, where, error):
    actor, case, wallet_no = _counter_case("supervisor")
    if where == "in_the_change":  # the operation changes the wallet, then refuses
        monkeypatch.setitem(registry.REGISTRY, "reset_questions",
                            replace(registry.get("reset_questions"), change=_refuse_after_changing))
    else:  # the change is flushed and its event queued; queuing the customer's SMS fails
        monkeypatch.setattr(notifications, "queue_sms", _outbox_broken)
    before = _counts()
    with pytest.raises(error):
        operations.execute(db.session, actor, case, get_wallet(wallet_no), "reset_questions",
                           reason_code="forgot_security_answers", note=None, verification_id=None)
    db.session.rollback()
    assert _counts() == before
    wallet = get_wallet(wallet_no)
    assert len(wallet.security_questions) == 2 and not wallet.must_change_password
    assert audit_events("wallet.reset_questions") == []
