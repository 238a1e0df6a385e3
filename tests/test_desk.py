"""Service desk flows through the pages: find, verify, operate, approve, close."""
import json
import re

from console.extensions import db
from console.models.customer import Customer
from console.models.notification import Notification
from console.models.service import Approval, Case, Receipt
from console.services.notifications import message_text

from .conftest import (ID_NUMBERS, WALLET_PASSWORD, audit_events, get_wallet, make_staff, make_wallet, post_form,
                       sign_in, sign_in_wallet)


def _open_case(client, wallet_no):
    page = post_form(client, "/desk/search", {"kind": "wallet_no", "id_type": "resident_id", "value": wallet_no},
                     token_from="/desk/").get_data(as_text=True)
    customer_no = re.search(r"/desk/customers/(C\d+)", page).group(1)
    response = post_form(client, f"/desk/customers/{customer_no}/cases", {}, token_from=f"/desk/customers/{customer_no}")
    assert response.status_code == 302
    return response.headers["Location"].rsplit("/", 1)[1]


def _operate(client, case_no, wallet_no, operation, reason="locked_after_wrong_passwords"):
    wallet = get_wallet(wallet_no)
    prefix = f"w{wallet.id}-{operation}"
    return post_form(client, f"/desk/cases/{case_no}/wallets/{wallet.id}/{operation}",
                     {f"{prefix}-reason_code": reason, f"{prefix}-note": "客户到柜台", f"{prefix}-confirm": "y"},
                     token_from=f"/desk/cases/{case_no}", follow=True)


def test_search_is_exact_post_only_and_audited_masked(app, client, login_as):
    wallet_no = make_wallet(mobile="13912345678")
    login_as("teller")
    id_number = ID_NUMBERS[wallet_no]
    for kind, value in (("mobile", "139 1234 5678"), ("id_number", id_number.lower()), ("wallet_no", wallet_no)):
        found = post_form(client, "/desk/search", {"kind": kind, "id_type": "resident_id", "value": value},
                          token_from="/desk/")
        assert found.status_code == 303 and value not in found.headers["Location"]  # one match: opened at once
        page = client.get(found.headers["Location"]).get_data(as_text=True)
        assert "139****5678" in page and "13912345678" not in page and id_number not in page
    partial = post_form(client, "/desk/search", {"kind": "mobile", "id_type": "resident_id", "value": "1391234"},
                        token_from="/desk/").get_data(as_text=True)
    assert "手机号码" in partial  # a clear message, no fuzzy search
    searches = audit_events("customer.search")
    assert len(searches) == 3  # the malformed one changed nothing
    assert all("13912345678" not in e.details and id_number not in e.details for e in searches)
    assert json.loads(searches[0].details)["query"] == "139****5678"
    assert client.get("/desk/search").status_code == 405


def test_teller_unlocks_a_locked_wallet_after_counter_verification(app, client, login_as):
    wallet_no = make_wallet()
    for _ in range(5):
        sign_in_wallet(wallet_no, "wrong-password")
    assert get_wallet(wallet_no).lock_kind == "temporary"
    login_as("teller")
    case_no = _open_case(client, wallet_no)
    # Without a verification the unlock is refused, audited, and nothing changes.
    wallet = get_wallet(wallet_no)
    refused = post_form(client, f"/desk/cases/{case_no}/wallets/{wallet.id}/unlock",
                        {f"w{wallet.id}-unlock-reason_code": "forgot_password", f"w{wallet.id}-unlock-confirm": "y"},
                        token_from=f"/desk/cases/{case_no}", follow=True).get_data(as_text=True)
    assert "请先核实客户身份" in refused
    assert audit_events("wallet.unlock")[-1].outcome == "denied"
    assert get_wallet(wallet_no).lock_kind == "temporary"
    # A wrong document fails.
    wrong = post_form(client, f"/desk/cases/{case_no}/verify/counter",
                      {"id_type": "resident_id", "id_number": "11010519491231002X", "photo_matches": "y"},
                      token_from=f"/desk/cases/{case_no}", follow=True).get_data(as_text=True)
    assert "证件与客户档案不符" in wrong
    # The right one, with the photo attested, passes.
    ok = post_form(client, f"/desk/cases/{case_no}/verify/counter",
                   {"id_type": "resident_id", "id_number": ID_NUMBERS[wallet_no], "photo_matches": "y"},
                   token_from=f"/desk/cases/{case_no}", follow=True).get_data(as_text=True)
    assert "已通过证件核验身份" in ok
    done = _operate(client, case_no, wallet_no, "unlock").get_data(as_text=True)
    assert "已办理" in done
    assert get_wallet(wallet_no).lock_kind is None
    assert sign_in_wallet(wallet_no, WALLET_PASSWORD).result == "ok"
    unlock = [e for e in audit_events("wallet.unlock") if e.outcome == "success"][0]
    assert unlock.case_ref == case_no and unlock.verification_id and unlock.channel == "counter"
    assert json.loads(unlock.before_state)["lock_kind"] == "temporary"
    assert db.session.query(Notification).filter_by(kind="wallet_unlocked").count() == 1
    # Close the case: the receipt record lists the operations with audit sequence numbers.
    post_form(client, f"/desk/cases/{case_no}/close", {}, token_from=f"/desk/cases/{case_no}")
    receipt = db.session.query(Receipt).one()
    summary = json.loads(receipt.summary)
    assert any(op["action"] == "wallet.unlock" and op["seq"] == unlock.seq for op in summary["operations"])
    assert audit_events("case.close")[0].receipt_no == receipt.receipt_no


def test_agent_resets_password_by_phone_and_the_customer_changes_it(app, client, login_as):
    wallet_no = make_wallet()
    login_as("agent", branch_code="CC-95588")
    case_no = _open_case(client, wallet_no)
    post_form(client, f"/desk/cases/{case_no}/verify/phone", {}, token_from=f"/desk/cases/{case_no}")
    code_sms = db.session.query(Notification).filter_by(kind="verification_code").one()
    code = re.search(r"验证码为(\d{6})", message_text(code_sms)).group(1)
    page = client.get(f"/desk/cases/{case_no}").get_data(as_text=True)
    asked = re.findall(r'name="answer_(\w+)"', page)
    answers = {"mother_birthplace": "杭州", "first_school": "实验小学"}
    checked = post_form(client, f"/desk/cases/{case_no}/verify/phone/check",
                        {"code": code, **{f"answer_{c}": answers[c] for c in asked}},
                        token_from=f"/desk/cases/{case_no}", follow=True).get_data(as_text=True)
    assert "已通过电话核验身份" in checked
    done = _operate(client, case_no, wallet_no, "reset_password", reason="forgot_password").get_data(as_text=True)
    assert "已办理" in done
    temp_sms = db.session.query(Notification).filter_by(kind="temporary_password").one()
    temporary = re.search(r"临时密码为(\w{12})", message_text(temp_sms)).group(1)
    assert temporary not in done  # staff never see it
    assert all(temporary not in (e.details or "") + (e.after_state or "") for e in audit_events())
    assert sign_in_wallet(wallet_no, temporary).result == "must_change_password"
    from console.services import wallet_credentials, wallet_signin
    from console.services.actor import Actor

    outcome = wallet_signin.authenticate(db.session, wallet_no, temporary, commit=db.session.commit,
                                         source_ip="198.51.100.3", purpose="change_password")
    wallet_credentials.change_password(db.session, Actor(kind="service", channel="wallet"), outcome.wallet,
                                       "Autumn-leaf-9753", used_temporary=True)
    db.session.commit()
    assert sign_in_wallet(wallet_no, "Autumn-leaf-9753").result == "ok"
    assert sign_in_wallet(wallet_no, WALLET_PASSWORD).result == "invalid_credentials"
    assert sign_in_wallet(wallet_no, temporary).result == "invalid_credentials"


def test_three_failed_verifications_flag_the_customer_for_phone(app, client, login_as):
    wallet_no = make_wallet()
    login_as("agent", branch_code="CC-95588")
    for _ in range(3):
        case_no = _open_case(client, wallet_no)
        post_form(client, f"/desk/cases/{case_no}/verify/phone", {}, token_from=f"/desk/cases/{case_no}")
        for _try in range(3):
            post_form(client, f"/desk/cases/{case_no}/verify/phone/check", {"code": "000000"},
                      token_from=f"/desk/cases/{case_no}")
    case_no = _open_case(client, wallet_no)
    page = post_form(client, f"/desk/cases/{case_no}/verify/phone", {}, token_from=f"/desk/cases/{case_no}",
                     follow=True).get_data(as_text=True)
    assert "电话渠道不予办理" in page
    assert audit_events("verification.phone")[-1].reason_code == "customer_flagged_counter_only"


def test_phone_2fa_reset_needs_another_supervisor_and_runs_once(app, login_as):
    wallet_no = make_wallet()
    maker_client, checker_client = app.test_client(), app.test_client()
    maker = make_staff("supervisor", branch_code="CC-95588")
    checker = make_staff("supervisor", branch_code="CC-95588")
    sign_in(maker_client, maker)
    case_no = _open_case(maker_client, wallet_no)
    post_form(maker_client, f"/desk/cases/{case_no}/verify/phone", {}, token_from=f"/desk/cases/{case_no}")
    code = re.search(r"验证码为(\d{6})", message_text(
        db.session.query(Notification).filter_by(kind="verification_code").one())).group(1)
    post_form(maker_client, f"/desk/cases/{case_no}/verify/phone/check",
              {"code": code, "answer_mother_birthplace": "杭州", "answer_first_school": "实验小学"},
              token_from=f"/desk/cases/{case_no}")
    page = _operate(maker_client, case_no, wallet_no, "reset_2fa", reason="new_phone").get_data(as_text=True)
    assert "主管" in page and get_wallet(wallet_no).active_binding is not None
    approval = db.session.query(Approval).one()
    # The maker cannot approve their own request, even as a supervisor.
    own = post_form(maker_client, f"/desk/approvals/{approval.id}", {"decision": "approve", "note": "ok"},
                    follow=True).get_data(as_text=True)
    assert "不能审批" in own
    assert audit_events("approval.decide")[-1].reason_code == "self_approval"
    # A second request for the same customer and operation is refused while one is pending.
    again = _operate(maker_client, case_no, wallet_no, "reset_2fa", reason="new_phone").get_data(as_text=True)
    assert "已有一笔" in again
    # Another supervisor approves without a note: refused; with a note: executed once.
    sign_in(checker_client, checker)
    queue = checker_client.get("/desk/approvals").get_data(as_text=True)
    assert "重置双重认证设备绑定" in queue and f"/desk/approvals/{approval.id}" in queue
    post_form(checker_client, f"/desk/approvals/{approval.id}", {"decision": "approve", "note": ""})
    db.session.expire_all()
    assert db.session.get(Approval, approval.id).status == "pending"
    post_form(checker_client, f"/desk/approvals/{approval.id}", {"decision": "approve", "note": "已电话回访核实"})
    db.session.expire_all()
    row = db.session.get(Approval, approval.id)
    assert row.status == "executed" and row.checker_id == checker.id
    assert get_wallet(wallet_no).active_binding is None
    resets = [e for e in audit_events("wallet.reset_2fa") if e.outcome == "success"]
    assert len(resets) == 1 and resets[0].approval_id == approval.id
    again = post_form(checker_client, f"/desk/approvals/{approval.id}", {"decision": "approve", "note": "again"},
                      token_from="/desk/approvals", follow=True)
    assert len([e for e in audit_events("wallet.reset_2fa") if e.outcome == "success"]) == 1
    assert again.status_code == 200


def test_other_branch_objects_are_404_and_audited(app, client, login_as):
    wallet_no = make_wallet()
    owner = app.test_client()
    teller = make_staff("teller", branch_code="BJ-001")
    sign_in(owner, teller)
    case_no = _open_case(owner, wallet_no)
    login_as("teller", branch_code="SH-002")
    assert client.get(f"/desk/cases/{case_no}").status_code == 404
    assert client.get("/desk/cases/K00000000000000").status_code == 404
    denied = audit_events("case.view")
    assert denied and denied[-1].outcome == "denied"


def test_supervisor_reveals_a_field_with_a_reason(app, client, login_as):
    make_wallet(mobile="13712345678")
    login_as("supervisor")
    customer_no = db.session.query(Customer).one().customer_no
    page = client.get(f"/desk/customers/{customer_no}").get_data(as_text=True)
    assert "13712345678" not in page and "137****5678" in page
    shown = post_form(client, f"/desk/customers/{customer_no}/reveal", {"field": "mobile", "reason": "客户要求核对"},
                      token_from=f"/desk/customers/{customer_no}").get_data(as_text=True)
    assert "13712345678" in shown
    event = audit_events("customer.reveal")[0]
    assert "13712345678" not in event.details and "客户要求核对" in event.details


def test_teller_cannot_reveal(app, client, login_as):
    make_wallet()
    login_as("teller")
    customer_no = db.session.query(Customer).one().customer_no
    response = post_form(client, f"/desk/customers/{customer_no}/reveal", {"field": "mobile", "reason": "just curious"},
                         token_from=f"/desk/customers/{customer_no}")
    assert response.status_code == 403


def test_case_pages_never_show_full_identifiers(app, client, login_as):
    wallet_no = make_wallet(mobile="13612345678")
    login_as("teller")
    case_no = _open_case(client, wallet_no)
    page = client.get(f"/desk/cases/{case_no}").get_data(as_text=True)
    assert "13612345678" not in page and ID_NUMBERS[wallet_no] not in page
    assert client.get(f"/desk/cases/{case_no}").headers["Cache-Control"] == "no-store"
    assert db.session.query(Case).one().channel == "counter"


def test_every_state_changing_form_carries_a_one_time_token(app, client, login_as):
    wallet_no = make_wallet()
    login_as("teller")
    case_no = _open_case(client, wallet_no)
    customer_no = get_wallet(wallet_no).customer.customer_no
    for url in (f"/desk/customers/{customer_no}", f"/desk/cases/{case_no}"):
        page = client.get(url).get_data(as_text=True)
        forms = re.findall(r'<form method="post" action="(/desk/[^"]+)"[^>]*>(.*?)</form>', page, re.S)
        assert forms
        for action, body in forms:
            if action.endswith("/reveal"):
                continue  # answers with a page of customer data, which is never kept
            tokens = re.findall(r'name="form_token" value="([^"]+)"', body)
            assert len(tokens) == 1 and "." in tokens[0], action
