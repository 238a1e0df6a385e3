"""A flow for a queue (issue #12 part 2): one match opens the customer, each step lands with the focus
on the next form, no reason chosen for staff unless the operation declares one, and closing asks
first with a summary, refuses an empty case without a reason, asks to tell the customer about a
request still waiting, then offers the receipt and the next customer."""
from __future__ import annotations

import re

from console import codes
from console.extensions import db
from console.models.service import Approval, Case, CaseNote, Receipt
from console.services.operations import registry

from .conftest import ID_NUMBERS, audit_events, get_wallet, make_wallet, post_form, sign_in_wallet


def _autofocused(page: str) -> list[str]:
    """The opening tags that carry ``autofocus`` (the browser focuses the first)."""
    return re.findall(r"<[a-z]+\b[^>]*\sautofocus\b[^>]*>", page)


def _open_case(client, wallet_no) -> str:
    found = post_form(client, "/desk/search", {"kind": "wallet_no", "id_type": "resident_id", "value": wallet_no},
                      token_from="/desk/")
    assert found.status_code == 303
    customer_page = client.get(found.headers["Location"]).get_data(as_text=True)
    assert _autofocused(customer_page)[0].startswith("<button")  # "open a case"
    opened = post_form(client, found.headers["Location"] + "/cases", {}, token_from=found.headers["Location"])
    return opened.headers["Location"].rsplit("/", 1)[1]


def _verify(client, case_no, wallet_no):
    return post_form(client, f"/desk/cases/{case_no}/verify/counter",
                     {"id_type": "resident_id", "id_number": ID_NUMBERS[wallet_no], "photo_matches": "y"},
                     token_from=f"/desk/cases/{case_no}")


def _operate(client, case_no, wallet_no, operation, **fields):
    wallet = get_wallet(wallet_no)
    prefix = f"w{wallet.id}-{operation}"
    db.session.rollback()
    data = {f"{prefix}-{name}": value for name, value in fields.items()}
    return post_form(client, f"/desk/cases/{case_no}/wallets/{wallet.id}/{operation}", data,
                     token_from=f"/desk/cases/{case_no}")


def test_a_counter_customer_from_search_to_next_customer_lands_on_each_next_form(app, client, login_as):
    wallet_no = make_wallet()
    for _ in range(5):
        sign_in_wallet(wallet_no, "wrong-password")
    login_as("teller")
    case_no = _open_case(client, wallet_no)
    page = client.get(f"/desk/cases/{case_no}").get_data(as_text=True)
    assert 'id="id_number"' in _autofocused(page)[0]

    verified = _verify(client, case_no, wallet_no)
    assert verified.headers["Location"] == f"/desk/cases/{case_no}#operate"
    page = client.get(f"/desk/cases/{case_no}").get_data(as_text=True)
    wallet_id = get_wallet(wallet_no).id
    # Unlock's reason is chosen for the teller (the wallet is locked after wrong passwords); the
    # focus waits on the confirmation, the one thing left to do.
    unlock = re.search(rf'<select[^>]*id="w{wallet_id}-unlock-reason_code"[^>]*>(.*?)</select>', page, re.S).group(1)
    assert '<option selected value="locked_after_wrong_passwords">' in unlock and unlock.count("selected") == 1
    assert f'id="w{wallet_id}-unlock-confirm"' in _autofocused(page)[0]

    done = _operate(client, case_no, wallet_no, "unlock", reason_code="locked_after_wrong_passwords", confirm="y")
    assert done.headers["Location"] == f"/desk/cases/{case_no}#close"
    page = client.get(f"/desk/cases/{case_no}").get_data(as_text=True)
    assert f'href="/desk/cases/{case_no}/close"' in _autofocused(page)[0]

    confirm = client.get(f"/desk/cases/{case_no}/close").get_data(as_text=True)
    assert "解锁钱包" in confirm and "核验证件" not in _autofocused(confirm)[0]
    assert 'type="submit"' in _autofocused(confirm)[0]  # nothing left to fill in: the button
    assert db.session.query(Receipt).count() == 0  # asking changes nothing

    closed = post_form(client, f"/desk/cases/{case_no}/close", {}, token_from=f"/desk/cases/{case_no}/close")
    assert closed.headers["Location"] == f"/desk/cases/{case_no}#receipt"
    page = client.get(f"/desk/cases/{case_no}").get_data(as_text=True)
    assert re.search(r"<button[^>]*autofocus[^>]*>打印业务回单</button>", page)
    assert re.search(r'<a [^>]*id="next-customer"[^>]*href="/desk/"[^>]*>下一位客户</a>', page)
    assert 'data-then-focus="next-customer"' in page  # printing opens a tab; the next customer is next here
    desk = client.get("/desk/").get_data(as_text=True)
    assert 'name="value"' in _autofocused(desk)[0]  # the search box


def test_a_phone_case_offers_the_next_customer_first(app, client, login_as):
    wallet_no = make_wallet()
    login_as("agent", branch_code="CC-95588")
    case_no = _open_case(client, wallet_no)
    page = client.get(f"/desk/cases/{case_no}").get_data(as_text=True)
    assert "发送验证码" in page and "autofocus" in re.search(r"<button[^>]*>发送验证码", page).group(0)
    sent = post_form(client, f"/desk/cases/{case_no}/verify/phone", {}, token_from=f"/desk/cases/{case_no}")
    assert sent.headers["Location"] == f"/desk/cases/{case_no}#verify"
    assert 'name="code"' in _autofocused(client.get(f"/desk/cases/{case_no}").get_data(as_text=True))[0]
    post_form(client, f"/desk/cases/{case_no}/close", {"no_action_reason": "customer_left"},
              token_from=f"/desk/cases/{case_no}/close")
    page = client.get(f"/desk/cases/{case_no}").get_data(as_text=True)
    assert 'id="next-customer"' in _autofocused(page)[0]  # nothing to print for a caller


def test_reasons_are_chosen_only_where_the_operation_declares_one(app, client, login_as):
    for op in registry.all_operations():
        assert op.default_reason is None or op.default_reason in codes.REASON_CODES, op.code
    assert registry.get("unlock").default_reason == "locked_after_wrong_passwords"
    assert registry.get("reset_password").default_reason == "forgot_password"
    assert registry.get("reset_2fa").default_reason is None  # a new phone or a lost one: the teller asks

    wallet_no = make_wallet()
    login_as("teller")
    case_no = _open_case(client, wallet_no)
    _verify(client, case_no, wallet_no)
    page = client.get(f"/desk/cases/{case_no}").get_data(as_text=True)
    wallet_id = get_wallet(wallet_no).id
    reset = re.search(rf'<select[^>]*id="w{wallet_id}-reset_password-reason_code"[^>]*>(.*?)</select>', page, re.S).group(1)
    assert '<option selected value="forgot_password">' in reset and 'value=""' not in reset
    two_fa = re.search(rf'<select[^>]*id="w{wallet_id}-reset_2fa-reason_code"[^>]*>(.*?)</select>', page, re.S).group(1)
    assert re.match(r'\s*<option selected value="">', two_fa) and two_fa.count("selected") == 1

    # Sent without a reason or the tick: back on its form, the note kept, nothing done.
    refused = _operate(client, case_no, wallet_no, "reset_2fa", reason_code="", note="客户换了新手机")
    html = refused.get_data(as_text=True)
    assert refused.status_code == 422
    assert f'id="w{wallet_id}-reset_2fa-reason_code-error"' in html and f'id="w{wallet_id}-reset_2fa-confirm-error"' in html
    assert "客户换了新手机</textarea>" in html
    assert f'id="w{wallet_id}-reset_2fa-reason_code"' in _autofocused(html)[0]
    assert get_wallet(wallet_no).active_binding is not None
    assert not [e for e in audit_events("wallet.reset_2fa") if e.outcome == "success"]


def test_an_empty_case_closes_only_with_a_reason_kept_as_a_note(app, client, login_as):
    wallet_no = make_wallet()
    login_as("teller")
    case_no = _open_case(client, wallet_no)
    confirm = client.get(f"/desk/cases/{case_no}/close").get_data(as_text=True)
    assert "未为客户办理任何业务" in confirm and 'id="no_action_reason"' in _autofocused(confirm)[0]
    refused = post_form(client, f"/desk/cases/{case_no}/close", {}, token_from=f"/desk/cases/{case_no}/close")
    assert refused.status_code == 422 and 'id="no_action_reason-error"' in refused.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.query(Case).one().status == "open" and db.session.query(Receipt).count() == 0
    assert not audit_events("case.close")

    closed = post_form(client, f"/desk/cases/{case_no}/close", {"no_action_reason": "enquiry_only", "note": "只问了限额"},
                       token_from=f"/desk/cases/{case_no}/close")
    assert closed.status_code == 302
    db.session.expire_all()
    assert db.session.query(Case).one().status == "closed"
    note = db.session.query(CaseNote).one()
    assert note.text.startswith("未办理业务即办结：客户仅咨询") and note.text.endswith("只问了限额")
    assert [e.action for e in audit_events()][-3:] == ["case.note", "case.close", "receipt.issue"]


def test_closing_with_a_request_waiting_asks_to_tell_the_customer(app, client, login_as):
    wallet_no = make_wallet()
    login_as("teller")
    case_no = _open_case(client, wallet_no)
    _verify(client, case_no, wallet_no)
    _operate(client, case_no, wallet_no, "place_hold", reason_code="suspected_fraud", confirm="y")
    filed = _operate(client, case_no, wallet_no, "release_hold", reason_code="customer_request", confirm="y")
    assert filed.status_code == 302
    assert db.session.query(Approval).one().status == "pending"
    db.session.rollback()
    confirm = client.get(f"/desk/cases/{case_no}/close").get_data(as_text=True)
    assert "等待主管审批" in confirm and 'id="pending_told"' in _autofocused(confirm)[0]
    refused = post_form(client, f"/desk/cases/{case_no}/close", {}, token_from=f"/desk/cases/{case_no}/close")
    assert refused.status_code == 422 and 'id="pending_told-error"' in refused.get_data(as_text=True)
    closed = post_form(client, f"/desk/cases/{case_no}/close", {"pending_told": "y"},
                       token_from=f"/desk/cases/{case_no}/close")
    assert closed.status_code == 302
    db.session.expire_all()
    assert db.session.query(Case).one().status == "closed" and db.session.query(CaseNote).count() == 0


def test_skip_link_current_page_and_keyboard_help(app, client, login_as):
    login_as("teller")
    page = client.get("/desk/").get_data(as_text=True)
    assert re.search(r'<a class="skip-link" href="#main">跳到主要内容</a>', page)
    assert '<main class="content" id="main" tabindex="-1">' in page
    assert re.search(r'<a href="/desk/" aria-current="page">业务受理</a>', page)
    assert 'aria-current="page">首页' not in page
    assert "按 / 键" in page and 'id="keyboard-help"' in page
    assert 'aria-current="page">首页' in client.get("/").get_data(as_text=True)
