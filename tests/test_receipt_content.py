"""What a customer reads on the receipt (issue #12 part 6): next steps with the policy's numbers,
pinned at issue so a reprint is the same paper; the QR code's address from PUBLIC_BASE_URL, which
production requires; text wrapped without splitting words or identifiers."""
import hashlib
import io

import pytest
from pypdf import PdfReader

from config import LOCAL_RUN_ADDRESS, ConfigError, load_config
from console.extensions import db
from console.models.staff import Staff
from console.pdf.text import size_to_fit, wrap
from console.services import cases, operations, receipts, verification
from console.adapters.registry import LocalRegistry
from console.services.actor import Actor

from .conftest import ID_NUMBERS, get_wallet, make_staff, make_wallet
from .test_config import PROD_ENV


def _text(pdf: bytes) -> str:
    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def _reset_password_receipt():
    wallet_no = make_wallet(name="王芳", mobile="13812345678")
    teller = make_staff("teller")
    actor = Actor.for_staff(db.session.get(Staff, teller.id), channel="counter")
    case = cases.open_case(db.session, actor, get_wallet(wallet_no).customer)
    db.session.commit()
    proof = verification.verify_at_counter(db.session, actor, case, id_type="resident_id",
                                           id_number=ID_NUMBERS[wallet_no], photo_matches=True,
                                           registry=LocalRegistry(db.session))
    db.session.commit()
    assert proof.status == "passed", proof.failure_reason
    operations.perform(db.session, actor, case, get_wallet(wallet_no), "reset_password", reason_code="forgot_password")
    db.session.commit()  # (an event is sequenced when it commits; the receipt lists committed events)
    receipt = receipts.close_and_issue(db.session, actor, case)
    db.session.commit()
    return receipt


def test_next_steps_quote_the_policy_and_a_reprint_is_the_same_paper(app):
    app.config.update(TEMP_PASSWORD_HOURS=12, HOTLINE="95566", PUBLIC_BASE_URL="https://wallet.bank.example/console/")
    receipt = _reset_password_receipt()
    text = _text(receipts.render(receipt))
    for needle in ("重置登录密码", "Password reset", "138****5678", "12 小时内有效", "valid for 12 hours",
                   "客服热线 Hotline", "请致电客服热线 95566", "Call our hotline 95566", "https://wallet.bank.example/console/receipts/check/"):
        assert needle in text, needle
    assert "24 小时" not in text
    # Pinned at issue: a later change of the hotline, the policy or the address leaves the reprint alone.
    app.config.update(TEMP_PASSWORD_HOURS=48, HOTLINE="95500", PUBLIC_BASE_URL="https://elsewhere.example")
    assert hashlib.sha256(receipts.render(receipt)).hexdigest() == receipt.pdf_sha256


def _line(action, outcome="success", operation=None):
    return {"action": action, "outcome": outcome, "operation": operation}


def test_next_steps_say_what_happens_next(app):
    steps = receipts.next_steps([_line("verification.counter"), _line("wallet.unlock", operation="unlock")],
                                mobile="138****5678")
    assert steps[0][0].startswith("钱包已解锁") and "138****5678" in steps[-1][0]
    pending = receipts.next_steps([_line("verification.phone"), _line("approval.request", operation="reset_2fa")],
                                  mobile="138****5678")
    assert "须经主管审批" in pending[0][0] and "supervisor's approval" in pending[0][1]
    decided = receipts.next_steps([_line("approval.request", operation="release_hold"),
                                   _line("wallet.release_hold", operation="release_hold")], mobile="1")
    assert not any("须经主管审批" in zh for zh, _en in decided)
    failed = receipts.next_steps([_line("verification.counter", "failed")], mobile="1")
    assert failed == [receipts.VERIFICATION_FAILED]
    retried = receipts.next_steps([_line("verification.counter", "failed"), _line("verification.counter")],
                                  mobile="1")
    assert retried == [receipts.NOTHING_DONE]


@pytest.mark.parametrize("wallet_no, masked", [("0031123456789012", "0031 **** **** 9012"),
                                                ("12345678", "12****78"), ("", "")])
def test_wallet_numbers_are_masked_as_the_customer_recognises_them(wallet_no, masked):
    assert receipts.mask_wallet_no(wallet_no) == masked


def test_text_wraps_between_han_characters_never_inside_a_word_or_number():
    from console.pdf.fonts import cjk_font

    font, _ = cjk_font()
    zh = "临时登录密码将以短信发送至您的预留手机 138****5678，24 小时内有效，仅可使用一次；首次登录时须设置新密码。"
    en = "A temporary password is on its way by SMS to your registered mobile 138****5678. It is valid for 24 hours."
    for text in (zh, en):
        lines = wrap(text, font, 10, 120)
        assert len(lines) > 1 and "".join(lines).replace(" ", "") == text.replace(" ", "")
        assert all(not line.startswith(("，", "。", "；")) for line in lines)
        assert any("138****5678" in line for line in lines)  # the number is never cut
    assert all(w in " ".join(wrap(en, font, 10, 120)).split() for w in en.split())
    assert size_to_fit("a" * 200, "Courier", 6.5, 100) < 6.5


def test_production_requires_a_public_https_address(monkeypatch):
    for key, value in PROD_ENV.items():
        monkeypatch.setenv(key, value)
    assert load_config("production")["PUBLIC_BASE_URL"] == "https://console.bank.example"
    monkeypatch.delenv("CONSOLE_PUBLIC_BASE_URL")
    with pytest.raises(ConfigError, match="CONSOLE_PUBLIC_BASE_URL"):
        load_config("production")
    for bad in ("http://console.bank.example", "https://127.0.0.1:5000", "https://localhost", "console.bank.example",
                "https://console.bank.example/?x=1"):
        monkeypatch.setenv("CONSOLE_PUBLIC_BASE_URL", bad)
        with pytest.raises(ConfigError, match="CONSOLE_PUBLIC_BASE_URL must be the https:// address"):
            load_config("production")


def test_development_prints_the_address_it_runs_at(monkeypatch):
    import config

    monkeypatch.setattr(config, "_development_secrets", lambda: {})  # no keys file written by a test
    monkeypatch.delenv("CONSOLE_PUBLIC_BASE_URL", raising=False)
    assert load_config("development")["PUBLIC_BASE_URL"] == LOCAL_RUN_ADDRESS
    monkeypatch.setenv("CONSOLE_PUBLIC_BASE_URL", "https://wallet.bank.example")
    assert load_config("development")["PUBLIC_BASE_URL"] == "https://wallet.bank.example"
