"""Receipts: Chinese text, embedded font, QR to the check page, byte-identical re-render, copies."""
import hashlib
import io
import json
import re
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest
from pypdf import PdfReader
from console.extensions import db
from console.models.service import Receipt
from console.models.staff import Staff
from console.pdf.fonts import CANDIDATES
from console.services import cases, operations, receipts, verification
from console.adapters.registry import LocalRegistry
from console.services.actor import Actor

from .conftest import (ID_NUMBERS, audit_events, get_wallet, make_staff, make_wallet, post_form, sign_in,
                       sign_in_wallet, tamper)

FONT_INSTALLED = any(__import__("os").path.exists(p) for p in CANDIDATES)


def _closed_case():
    wallet_no = make_wallet(name="李娜")
    for _ in range(5):
        sign_in_wallet(wallet_no, "wrong-password")
    teller = make_staff("teller")
    actor = Actor.for_staff(db.session.get(Staff, teller.id), channel="counter")
    wallet = get_wallet(wallet_no)
    case = cases.open_case(db.session, actor, wallet.customer)
    db.session.commit()
    verification.verify_at_counter(db.session, actor, case, id_type="resident_id", id_number=ID_NUMBERS[wallet_no],
                                   photo_matches=True, registry=LocalRegistry(db.session))
    db.session.commit()
    operations.perform(db.session, actor, case, wallet, "unlock", reason_code="locked_after_wrong_passwords")
    db.session.commit()
    receipt = receipts.close_and_issue(db.session, actor, case)
    db.session.commit()
    return receipt, teller, actor


def test_receipt_pdf_text_digest_and_rerender(app):
    receipt, _teller, _actor = _closed_case()
    pdf = receipts.render(receipt)
    assert hashlib.sha256(pdf).hexdigest() == receipt.pdf_sha256  # byte-identical re-render
    if __import__("os").environ.get("RECEIPT_SAMPLE"):
        open(__import__("os").environ["RECEIPT_SAMPLE"], "wb").write(pdf)
    text_ = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    wallet_no = receipt.case.customer.wallets[0].wallet_no
    staff = receipt.case.staff
    for needle in ("业务回单", "Service receipt", receipt.receipt_no, receipt.case.case_no, "解锁钱包",
                   "Wallet unlocked", "李*", receipt.case.customer.id_number_masked, receipt.last_event_hash,
                   "客户签字", receipts.mask_wallet_no(wallet_no), staff.name, staff.employee_no, "接下来",
                   "What happens next", "原登录密码", "客服热线", app.config["HOTLINE"]):
        assert needle in text_, needle
    assert ID_NUMBERS[wallet_no] not in text_ and wallet_no not in text_.replace(" ", "")
    # Plain words first; the audit references (sequence numbers, digest, address) are the small print.
    assert text_.index("您办理的业务") < text_.index("接下来") < text_.index("审计参考") < text_.index(
        receipt.last_event_hash)
    issue = audit_events("receipt.issue")[0]
    assert json.loads(issue.details)["pdf_sha256"] == receipt.pdf_sha256
    unlock = [e for e in audit_events("wallet.unlock") if e.outcome == "success"][0]
    assert str(unlock.seq) in text_


@pytest.mark.skipif(not shutil.which("pdffonts") or not FONT_INSTALLED, reason="needs poppler-utils and fonts-wqy-microhei")
def test_font_is_embedded(app, tmp_path):
    receipt, _t, _a = _closed_case()
    path = tmp_path / "r.pdf"
    path.write_bytes(receipts.render(receipt))
    listing = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True).stdout
    cjk = [line for line in listing.splitlines() if "TrueType" in line]
    assert cjk and all(" yes " in line for line in cjk), listing


@pytest.mark.skipif(not shutil.which("pdftoppm"), reason="needs poppler-utils")
def test_qr_decodes_to_the_check_address(app, client, tmp_path):
    import zxingcpp
    from PIL import Image

    receipt, _t, _a = _closed_case()
    path = tmp_path / "r.pdf"
    path.write_bytes(receipts.render(receipt))
    subprocess.run(["pdftoppm", "-r", "150", "-png", "-singlefile", str(path), str(tmp_path / "page")], check=True)
    found = zxingcpp.read_barcodes(Image.open(tmp_path / "page.png"))
    urls = [b.text for b in found]
    assert urls == [receipts.check_url(receipt.receipt_no)]
    address = urlsplit(urls[0])
    assert f"{address.scheme}://{address.netloc}" == app.config["PUBLIC_BASE_URL"]  # configured, not 127.0.0.1
    page = client.get(f"{address.path}?{address.query}").get_data(as_text=True)
    assert "与本行防篡改审计日志一致" in page and receipt.receipt_no in page
    assert "李" not in page  # nothing personal on the public page
    # The check page lists what the receipt lists: the same lines and audit sequence numbers.
    lines = receipts.receipt_data(receipt)["operations"]
    assert [int(n) for n in re.findall(r"<td><code>(\d+)</code></td>", page)] == [line["seq"] for line in lines]
    assert all(line["label_zh"] in page for line in lines)
    assert f"本受理单末笔审计事件</dt><dd><code>{receipt.last_event_seq}</code>" in page


def test_check_page_refuses_without_the_code_and_notices_tampering(app, client):
    receipt, _t, _a = _closed_case()
    assert client.get(f"/receipts/check/{receipt.receipt_no}").status_code == 404
    assert client.get(f"/receipts/check/{receipt.receipt_no}?c=0000000000000000").status_code == 404
    address = urlsplit(receipts.check_url(receipt.receipt_no))
    url = f"{address.path}?{address.query}"
    seq = audit_events("receipt.issue")[0].seq
    tamper(f"UPDATE audit_event SET details = '{{}}' WHERE seq = {seq}")
    assert "不一致" in client.get(url).get_data(as_text=True)


def test_reprints_are_marked_copies_and_audited(app, client):
    receipt, teller, _a = _closed_case()
    sign_in(client, teller)
    page = f"/desk/cases/{receipt.case.case_no}"
    assert client.get(f"/desk/receipts/{receipt.receipt_no}.pdf").status_code == 405  # printing is a POST
    first = post_form(client, f"/desk/receipts/{receipt.receipt_no}.pdf", {}, token_from=page)
    assert first.status_code == 200 and first.mimetype == "application/pdf"
    assert hashlib.sha256(first.data).hexdigest() == receipt.pdf_sha256
    second = post_form(client, f"/desk/receipts/{receipt.receipt_no}.pdf", {}, token_from=page)
    copy_text = PdfReader(io.BytesIO(second.data)).pages[0].extract_text()
    assert "副本" in copy_text and "COPY" in copy_text
    assert [e.action for e in audit_events() if e.action.startswith("receipt.") and e.action != "receipt.issue"] == [
        "receipt.print", "receipt.reprint"]


def test_other_branch_cannot_print(app, client):
    receipt, _t, _a = _closed_case()
    other = make_staff("teller", branch_code="SH-002")
    sign_in(client, other)
    response = post_form(client, f"/desk/receipts/{receipt.receipt_no}.pdf", {}, token_from="/desk/")
    assert response.status_code == 404
    assert audit_events("receipt.view")[-1].outcome == "denied"
    assert db.session.get(Receipt, receipt.id).prints == 0
