"""Verification measures the customer, not the operator (issue #12 part 1).

A teller's or agent's slip (a check-digit typo, the photo not attested, a code or an answer left
out) is shown on its field with what was typed kept, audited as an input error, and never becomes
a failed verification, a failure in the 24-hour count or a line on the receipt. A well-formed
document that does not match is still a customer failure. A verification belongs to one case: a
new case verifies again or adopts an earlier one visibly (its log and its receipt).
"""
from __future__ import annotations

import io
import json
import re
from datetime import date, timedelta

import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from console import boundary, faults
from console.adapters.registry import LocalRegistry
from console.demo import demo_resident_id
from console.extensions import db
from console.models.audit import AuditEvent
from console.models.notification import Notification
from console.models.service import Case, Receipt, Verification
from console.models.staff import Staff
from console.services import cases, receipts, verification
from console.services.actor import Actor
from console.services.errors import InvalidInput, NotAllowed
from console.services.notifications import message_text

from .conftest import ID_NUMBERS, audit_events, get_wallet, make_staff, make_wallet, post_form, sign_in


def _typo(number: str) -> str:
    """The same number with another check character: well formed, but its check digit is wrong."""
    return number[:17] + ("0" if number[17] != "0" else "1")


def _open_case(client, wallet_no) -> str:
    customer_no = get_wallet(wallet_no).customer.customer_no
    db.session.rollback()
    response = post_form(client, f"/desk/customers/{customer_no}/cases", {},
                         token_from=f"/desk/customers/{customer_no}")
    assert response.status_code == 302, response.status_code
    return response.headers["Location"].rsplit("/", 1)[1]


def _verify(client, case_no, number, photo=True, follow=False):
    data = {"id_type": "resident_id", "id_number": number}
    if photo:
        data["photo_matches"] = "y"
    return post_form(client, f"/desk/cases/{case_no}/verify/counter", data, token_from=f"/desk/cases/{case_no}",
                     follow=follow)


def _unlock(client, case_no, wallet_no):
    wallet = get_wallet(wallet_no)
    prefix = f"w{wallet.id}-unlock"
    db.session.rollback()
    return post_form(client, f"/desk/cases/{case_no}/wallets/{wallet.id}/unlock",
                     {f"{prefix}-reason_code": "locked_after_wrong_passwords", f"{prefix}-confirm": "y"},
                     token_from=f"/desk/cases/{case_no}", follow=True).get_data(as_text=True)


def _close(client, case_no) -> Receipt:
    response = post_form(client, f"/desk/cases/{case_no}/close", {"no_action_reason": "enquiry_only"},
                         token_from=f"/desk/cases/{case_no}/close")  # the reason counts only if nothing was done
    assert response.status_code == 302
    db.session.expire_all()
    return db.session.scalar(select(Receipt).join(Case).where(Case.case_no == case_no))


def _receipt_text(receipt: Receipt) -> str:
    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(receipts.render(receipt))).pages)


def _verifications(customer_id=None) -> list[Verification]:
    db.session.expire_all()
    query = select(Verification).order_by(Verification.id)
    if customer_id is not None:
        query = query.where(Verification.customer_id == customer_id)
    return list(db.session.scalars(query))


def _lock(wallet_no):
    from .conftest import sign_in_wallet

    for _ in range(5):
        sign_in_wallet(wallet_no, "wrong-password")


# --- counter slips ---------------------------------------------------------------------------------


def test_a_check_digit_typo_and_a_missing_photo_tick_do_not_count_against_the_customer(app, client):
    wallet_no = make_wallet(name="李娜")
    _lock(wallet_no)
    customer_id = get_wallet(wallet_no).customer_id
    teller = make_staff("teller")
    sign_in(client, teller)
    case_no = _open_case(client, wallet_no)
    right = ID_NUMBERS[wallet_no]
    typo = _typo(right)

    # A check-digit typo: on its field, in Chinese, tied to it, with what was typed kept; a 422.
    page = _verify(client, case_no, typo)
    assert page.status_code == 422
    html = page.get_data(as_text=True)
    assert "身份证号码校验位错误" in html
    number_input = re.search(r'<input[^>]*name="id_number"[^>]*>', html).group(0)
    assert 'aria-describedby="id_number-error"' in number_input and 'aria-invalid="true"' in number_input
    assert f'value="{typo}"' in number_input  # what was typed is kept
    assert re.search(r'<p class="error" id="id_number-error">身份证号码校验位错误', html)

    # The right number, the photo not attested: the box's own error, the number kept.
    page = _verify(client, case_no, right, photo=False)
    assert page.status_code == 422
    html = page.get_data(as_text=True)
    assert "请核对证件照片与客户本人，然后勾选此项。" in html
    assert re.search(r'<input[^>]*aria-describedby="photo_matches-error"[^>]*>', html)
    assert f'value="{right}"' in html

    # Neither is a verification, a failure in the 24-hour count, or a flag.
    assert _verifications(customer_id) == []
    assert verification.failed_recently(db.session, customer_id) == 0
    assert not verification.is_flagged(db.session, customer_id)
    customer_page = client.get(f"/desk/customers/{get_wallet(wallet_no).customer.customer_no}").get_data(as_text=True)
    db.session.rollback()
    assert "身份核验失败" not in customer_page

    # Each is audited on its own as an input error, naming the slip (masked; never the full number).
    slips = [e for e in audit_events("verification.counter") if e.reason_code == "input_error"]
    assert [(e.outcome, json.loads(e.details)["code"], json.loads(e.details)["field"]) for e in slips] == [
        ("denied", "id_checksum", "id_number"), ("denied", "photo_not_attested", "photo_matches")]
    assert all(e.case_ref == case_no and e.verification_id is None for e in slips)
    assert all(right not in e.details and typo not in e.details for e in slips)

    # The right document, attested, passes; the case log says what the slips were.
    done = _verify(client, case_no, right, follow=True).get_data(as_text=True)
    assert "已通过证件核验身份" in done
    assert "录入有误，不计入客户核验失败" in done
    assert "已办理" in _unlock(client, case_no, wallet_no)
    receipt = _close(client, case_no)

    # The receipt lists the passed verification and the unlock: no slip, nothing "failed".
    summary = json.loads(receipt.summary)["operations"]
    assert [(op["action"], op["outcome"]) for op in summary] == [("verification.counter", "success"),
                                                                 ("wallet.unlock", "success")]
    lines = receipts.receipt_data(receipt)["operations"]
    assert [(line["label_zh"], line["outcome_zh"]) for line in lines] == [("柜面证件核验", "成功"), ("解锁钱包", "成功")]
    text = _receipt_text(receipt)
    assert "未通过" not in text and "Failed" not in text


def test_both_slips_at_once_are_shown_on_both_fields(app, client):
    wallet_no = make_wallet()
    sign_in(client, make_staff("teller"))
    case_no = _open_case(client, wallet_no)
    html = _verify(client, case_no, _typo(ID_NUMBERS[wallet_no]), photo=False).get_data(as_text=True)
    assert 'id="id_number-error"' in html and 'id="photo_matches-error"' in html
    event = [e for e in audit_events("verification.counter") if e.reason_code == "input_error"][-1]
    assert json.loads(event.details)["problems"] == {"id_number": "id_checksum", "photo_matches": "photo_not_attested"}
    assert _verifications() == []


def test_a_well_formed_mismatching_document_still_counts(app, client):
    wallet_no = make_wallet()
    customer_id = get_wallet(wallet_no).customer_id
    sign_in(client, make_staff("teller"))
    case_no = _open_case(client, wallet_no)
    someone_else = demo_resident_id(date(1990, 7, 1), 321)
    assert someone_else != ID_NUMBERS[wallet_no]
    page = _verify(client, case_no, someone_else, follow=True).get_data(as_text=True)
    assert "证件与客户档案不符" in page
    rows = _verifications(customer_id)
    assert [(r.status, r.failure_reason) for r in rows] == [("failed", "document_mismatch")]
    assert verification.failed_recently(db.session, customer_id) == 1
    event = audit_events("verification.counter")[-1]
    assert event.outcome == "failed" and event.reason_code == "document_mismatch"
    receipt = _close(client, case_no)
    assert [(line["label_zh"], line["outcome_zh"]) for line in receipts.receipt_data(receipt)["operations"]] == [
        ("柜面证件核验", "未通过")]


def _counter_actor(handle) -> Actor:
    return Actor.for_staff(db.session.get(Staff, handle.id), channel="counter")


def _service_case(actor, wallet_no, channel=None) -> Case:
    case = cases.open_case(db.session, actor, get_wallet(wallet_no).customer)
    db.session.commit()
    return case


def test_three_real_failures_flag_the_customer_and_slips_never_do(app):
    wallet_no = make_wallet()
    customer_id = get_wallet(wallet_no).customer_id
    actor = _counter_actor(make_staff("teller"))
    case = _service_case(actor, wallet_no)
    right = ID_NUMBERS[wallet_no]
    registry = LocalRegistry(db.session)
    slips = [(_typo(right), True), ("1101051985", True), (right[:6] + "19851340" + right[14:], True), (right, False)]
    for _round in range(2):
        for number, photo in slips:
            with pytest.raises(InvalidInput):
                boundary.perform(actor, verification.verify_at_counter, case, id_type="resident_id", id_number=number,
                                 photo_matches=photo, registry=registry)
    assert _verifications(customer_id) == []
    assert verification.failed_recently(db.session, customer_id) == 0 and not verification.is_flagged(db.session,
                                                                                                     customer_id)
    assert len([e for e in audit_events("verification.counter") if e.reason_code == "input_error"]) == 8
    others = [demo_resident_id(date(1970 + i, 1, 2), 500 + i) for i in range(3)]
    for number in others:
        row = boundary.perform(actor, verification.verify_at_counter, case, id_type="resident_id", id_number=number,
                               photo_matches=True, registry=registry)
        assert row.status == "failed" and row.failure_reason == "document_mismatch"
    assert verification.failed_recently(db.session, customer_id) == 3
    assert verification.is_flagged(db.session, customer_id)


def test_an_expired_document_is_refused_without_counting(app):
    wallet_no = make_wallet()
    customer = get_wallet(wallet_no).customer
    customer.id_expires_on = date.today() - timedelta(days=1)
    db.session.commit()
    actor = _counter_actor(make_staff("teller"))
    case = _service_case(actor, wallet_no)
    with pytest.raises(InvalidInput) as refused:
        boundary.perform(actor, verification.verify_at_counter, case, id_type="resident_id",
                         id_number=ID_NUMBERS[wallet_no], photo_matches=True, registry=LocalRegistry(db.session))
    assert refused.value.message == "document_expired" and refused.value.details["field"] == "id_number"
    assert _verifications() == []
    assert json.loads(audit_events("verification.counter")[-1].details)["code"] == "document_expired"


def test_the_customers_own_number_under_another_document_type_is_a_slip(app):
    wallet_no = make_wallet()
    actor = _counter_actor(make_staff("teller"))
    case = _service_case(actor, wallet_no)
    registry = LocalRegistry(db.session)
    with pytest.raises(InvalidInput) as refused:
        boundary.perform(actor, verification.verify_at_counter, case, id_type="passport",
                         id_number=ID_NUMBERS[wallet_no], photo_matches=True, registry=registry)
    assert (refused.value.message, refused.value.details["field"]) == ("document_type_mismatch", "id_type")
    assert _verifications() == []
    # Another document altogether does not match the customer: that counts.
    row = boundary.perform(actor, verification.verify_at_counter, case, id_type="passport", id_number="E12345678",
                           photo_matches=True, registry=registry)
    assert (row.status, row.failure_reason) == ("failed", "document_mismatch")


def test_every_slip_has_words_in_chinese(app):
    from flask_babel import force_locale

    from console import codes
    from console.web.desk_labels import VERIFICATION_SLIPS

    assert set(VERIFICATION_SLIPS) == set(codes.VERIFICATION_SLIPS)
    assert not set(codes.VERIFICATION_SLIPS) & set(codes.CUSTOMER_FAILURES)
    with app.test_request_context(), force_locale("zh_CN"):
        for code in codes.VERIFICATION_SLIPS:
            assert re.search(r"[\u4e00-\u9fff]", VERIFICATION_SLIPS[code]), code


def test_a_registry_outage_is_a_failed_check_but_not_counted_against_the_customer(app):
    class Down:
        name = "down"

        def check(self, *args):
            return "unavailable"

    wallet_no = make_wallet()
    customer_id = get_wallet(wallet_no).customer_id
    actor = _counter_actor(make_staff("teller"))
    case = _service_case(actor, wallet_no)
    for _ in range(3):
        row = boundary.perform(actor, verification.verify_at_counter, case, id_type="resident_id",
                               id_number=ID_NUMBERS[wallet_no], photo_matches=True, registry=Down())
        assert row.failure_reason == "registry_unavailable"
    assert verification.failed_recently(db.session, customer_id) == 0


# --- phone slips -----------------------------------------------------------------------------------


def test_the_right_code_with_an_answer_left_out_is_a_slip_the_code_stays_usable(app, client):
    wallet_no = make_wallet()
    customer_id = get_wallet(wallet_no).customer_id
    sign_in(client, make_staff("agent", branch_code="CC-95588"))
    case_no = _open_case(client, wallet_no)
    post_form(client, f"/desk/cases/{case_no}/verify/phone", {}, token_from=f"/desk/cases/{case_no}")
    code = re.search(r"验证码为(\d{6})", message_text(
        db.session.query(Notification).filter_by(kind="verification_code").one())).group(1)
    db.session.rollback()
    page = client.get(f"/desk/cases/{case_no}").get_data(as_text=True)
    asked = re.findall(r'name="answer_(\w+)"', page)
    answers = {"mother_birthplace": "杭州", "first_school": "实验小学"}
    # The second answer left out: its field says so; the code and the first answer are kept.
    slip = post_form(client, f"/desk/cases/{case_no}/verify/phone/check",
                     {"code": code, f"answer_{asked[0]}": answers[asked[0]], f"answer_{asked[1]}": "  "},
                     token_from=f"/desk/cases/{case_no}")
    assert slip.status_code == 422
    html = slip.get_data(as_text=True)
    assert "请录入客户对该安全问题的回答。" in html
    assert f'aria-describedby="answer_{asked[1]}-error"' in html and f'id="answer_{asked[1]}-error"' in html
    assert f'value="{code}"' in html and f'value="{answers[asked[0]]}"' in html
    pending = _verifications(customer_id)[0]
    assert pending.status == "pending" and pending.code_tries == 0 and pending.code_hash is not None
    event = audit_events("verification.phone")[-1]
    assert (event.outcome, event.reason_code, json.loads(event.details)["code"]) == ("denied", "input_error",
                                                                                     "answer_missing")
    assert event.verification_id == pending.id
    # A code of the wrong format is a slip too.
    assert post_form(client, f"/desk/cases/{case_no}/verify/phone/check", {"code": "12 34"},
                     token_from=f"/desk/cases/{case_no}").status_code == 422
    assert _verifications(customer_id)[0].code_tries == 0
    # Then the same code with both answers passes: nothing was counted.
    checked = post_form(client, f"/desk/cases/{case_no}/verify/phone/check",
                        {"code": code, **{f"answer_{c}": answers[c] for c in asked}},
                        token_from=f"/desk/cases/{case_no}", follow=True).get_data(as_text=True)
    assert "已通过电话核验身份" in checked
    assert verification.failed_recently(db.session, customer_id) == 0


# --- one verification, one case; adoption ---------------------------------------------------------


def _verified_then_new_case(client, wallet_no):
    """A teller verifies in a first case, closes it, and opens a second for the same customer."""
    first = _open_case(client, wallet_no)
    assert "已通过证件核验身份" in _verify(client, first, ID_NUMBERS[wallet_no], follow=True).get_data(as_text=True)
    _close(client, first)
    second = _open_case(client, wallet_no)
    return first, second


def test_a_new_case_does_not_silently_use_an_earlier_verification(app, client):
    wallet_no = make_wallet()
    _lock(wallet_no)
    teller = make_staff("teller")
    sign_in(client, teller)
    first, second = _verified_then_new_case(client, wallet_no)
    page = client.get(f"/desk/cases/{second}").get_data(as_text=True)
    assert f"沿用受理单 {first} 的身份核验（有效至" in page  # offered, not applied
    assert "身份已核实" not in page
    refused = _unlock(client, second, wallet_no)
    assert "请先核实客户身份" in refused
    assert get_wallet(wallet_no).lock_kind == "temporary"
    assert audit_events("wallet.unlock")[-1].outcome == "denied"
    db.session.expire_all()
    case = db.session.scalar(select(Case).where(Case.case_no == second))
    actor = _counter_actor(teller)
    assert verification.valid_verification(db.session, actor, case) is None
    assert verification.adoptable_verification(db.session, actor, case).case.case_no == first
    db.session.rollback()
    receipt = _close(client, second)
    assert [(op["action"], op["outcome"]) for op in json.loads(receipt.summary)["operations"]] == [
        ("wallet.unlock", "denied")]  # no verification in this case, and none borrowed


def test_adoption_is_audited_on_the_new_case_and_shows_in_its_log_and_receipt(app, client):
    wallet_no = make_wallet(name="李娜")
    _lock(wallet_no)
    sign_in(client, make_staff("teller"))
    first, second = _verified_then_new_case(client, wallet_no)
    source = _verifications()[0]
    page = client.get(f"/desk/cases/{second}").get_data(as_text=True)
    offered = re.search(r'name="verification_id" value="(\d+)"', page).group(1)
    assert int(offered) == source.id
    adopted = post_form(client, f"/desk/cases/{second}/verify/adopt", {"verification_id": offered},
                        token_from=f"/desk/cases/{second}", follow=True).get_data(as_text=True)
    assert f"本受理单已沿用受理单 {first} 的身份核验" in adopted
    assert f"沿用自受理单 {first}" in adopted  # beside "verified until"
    assert f"沿用受理单 {first} 的身份核验（核验编号 {source.id}）" in adopted  # in the case log

    rows = _verifications()
    assert len(rows) == 2
    row = rows[1]
    assert row.case.case_no == second and row.status == "passed" and row.strength == source.strength
    assert row.expires_at == source.expires_at  # never extended
    assert verification.adoption_source(row) == {"case_no": first, "verification_id": source.id,
                                                  "origin_verification_id": source.id}
    event = audit_events("verification.adopt")[-1]
    assert event.case_ref == second and event.outcome == "success" and event.verification_id == row.id
    details = json.loads(event.details)
    assert details["source_case"] == first and details["source_verification_id"] == source.id

    # The operation runs on the adopted verification; the receipt shows where it came from.
    assert "已办理" in _unlock(client, second, wallet_no)
    unlock = [e for e in audit_events("wallet.unlock") if e.outcome == "success"][-1]
    assert unlock.case_ref == second and unlock.verification_id == row.id
    receipt = _close(client, second)
    summary = json.loads(receipt.summary)["operations"]
    assert [op["action"] for op in summary] == ["verification.adopt", "wallet.unlock"]
    lines = receipts.receipt_data(receipt)["operations"]
    assert (lines[0]["label_zh"], lines[0]["label_en"]) == (f"沿用受理单 {first} 的身份核验",
                                                            f"Verification carried over from case {first}")
    text = _receipt_text(receipt)
    assert f"沿用受理单 {first} 的身份核验" in text and "Verification carried over" in text


def test_adoption_is_refused_for_someone_elses_an_expired_or_a_second_one(app):
    wallet_no = make_wallet()
    teller, colleague = make_staff("teller"), make_staff("teller")
    actor, other = _counter_actor(teller), _counter_actor(colleague)
    registry = LocalRegistry(db.session)
    earlier = _service_case(other, wallet_no)
    theirs = boundary.perform(other, verification.verify_at_counter, earlier, id_type="resident_id",
                              id_number=ID_NUMBERS[wallet_no], photo_matches=True, registry=registry)
    case = _service_case(actor, wallet_no)
    assert verification.adoptable_verification(db.session, actor, case) is None  # a colleague's is not offered
    with pytest.raises(NotAllowed):
        boundary.perform(actor, verification.adopt_verification, case, theirs.id)
    assert audit_events("verification.adopt")[-1].reason_code == "verification_not_adoptable"
    mine_case = _service_case(actor, wallet_no)
    mine = boundary.perform(actor, verification.verify_at_counter, mine_case, id_type="resident_id",
                            id_number=ID_NUMBERS[wallet_no], photo_matches=True, registry=registry)
    boundary.perform(actor, verification.adopt_verification, case, mine.id)
    with pytest.raises(NotAllowed):  # the case has one now
        boundary.perform(actor, verification.adopt_verification, case, mine.id)
    assert audit_events("verification.adopt")[-1].reason_code == "already_verified"
    # Once expired, nothing is offered and nothing can be adopted.
    later = _service_case(actor, wallet_no)
    from console import timeutil

    timeutil.set_offset(timedelta(minutes=16))
    assert verification.adoptable_verification(db.session, actor, later) is None
    with pytest.raises(NotAllowed):
        boundary.perform(actor, verification.adopt_verification, later, mine.id)
    assert db.session.scalar(select(func.count()).select_from(Verification).where(
        Verification.case_id == later.id)) == 0
    assert len([e for e in audit_events("verification.adopt") if e.outcome == "success"]) == 1


def test_a_failure_in_the_middle_of_adoption_leaves_nothing(app, client):
    wallet_no = make_wallet()
    sign_in(client, make_staff("teller"))
    first, second = _verified_then_new_case(client, wallet_no)
    source = _verifications()[0]
    events_before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    db.session.rollback()

    def crash(_name):
        raise RuntimeError("the worker fails after the new case's verification was written")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    with faults.installed("verification.adopt", crash):
        failed = post_form(client, f"/desk/cases/{second}/verify/adopt", {"verification_id": str(source.id)},
                           token_from=f"/desk/cases/{second}")
    assert failed.status_code == 500
    assert [r.id for r in _verifications()] == [source.id]
    assert audit_events("verification.adopt") == []
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == events_before
    # Tried again, it works.
    db.session.rollback()
    done = post_form(client, f"/desk/cases/{second}/verify/adopt", {"verification_id": str(source.id)},
                     token_from=f"/desk/cases/{second}", follow=True).get_data(as_text=True)
    assert f"本受理单已沿用受理单 {first} 的身份核验" in done
    assert len(audit_events("verification.adopt")) == 1
