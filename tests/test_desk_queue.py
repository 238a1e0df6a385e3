"""The desk at a queue (issue #12, first items): numbers as people read them out, the hotline's
default, and words that do not clash with a case's status."""
from __future__ import annotations

import re

from .conftest import make_staff, make_wallet, post_form, sign_in


def _grouped(number: str, sep: str) -> str:
    return sep.join(number[i:i + 4] for i in range(0, len(number), 4))


def test_a_wallet_number_with_spaces_or_dashes_is_found(app, client, login_as):
    wallet_no = make_wallet()
    login_as("teller")
    for typed in (_grouped(wallet_no, " "), _grouped(wallet_no, "-"), wallet_no.translate(
            str.maketrans("0123456789", "０１２３４５６７８９"))):  # full-width digits from a Chinese IME
        found = post_form(client, "/desk/search", {"kind": "wallet_no", "id_type": "resident_id", "value": typed},
                          token_from="/desk/")
        assert found.status_code == 303 and re.fullmatch(r"/desk/customers/C\d+", found.headers["Location"]), typed
    page = post_form(client, "/desk/search", {"kind": "wallet_no", "id_type": "resident_id", "value": "0031 x"},
                     token_from="/desk/").get_data(as_text=True)
    assert 'href="/desk/customers/' not in page and "钱包编号只包含数字" in page  # only digits, said clearly


def test_the_hotline_searches_by_mobile_first_and_the_counter_by_wallet(app, client, login_as):
    login_as("agent", branch_code="CC-001")
    page = client.get("/desk/").get_data(as_text=True)
    assert re.search(r'<option (selected value="mobile"|value="mobile" selected)', page)
    counter = app.test_client()
    sign_in(counter, make_staff("teller"))
    page = counter.get("/desk/").get_data(as_text=True)
    assert re.search(r'<option (selected )?value="wallet_no"( selected)?>', page)
    assert not re.search(r'<option (selected value="mobile"|value="mobile" selected)', page)


def test_several_matches_are_listed_with_a_button_that_says_view_customer(app, client, login_as):
    for name in ("张伟", "李娜"):  # two customers who gave the same mobile
        make_wallet(name=name, mobile="13800001111")
    login_as("teller")
    page = post_form(client, "/desk/search", {"kind": "mobile", "id_type": "resident_id", "value": "138 0000 1111"},
                     token_from="/desk/").get_data(as_text=True)
    assert len(re.findall(r'href="/desk/customers/C\d+">查看客户</a>', page)) == 2  # not 办理中 (a case status)
