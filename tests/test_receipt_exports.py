"""The auditor's exports read as the screen does (issue #12 part 6): the CSV opens in a spreadsheet
with its Chinese intact (UTF-8 byte order mark), labelled headers that keep their codes, and the
Beijing time beside the stored UTC; the PDF report's columns never collide and show words, not codes."""
import csv
import hashlib
import io
import json

import pytest
from pypdf import PdfReader
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth

from console import timeutil
from console.extensions import db
from console.pdf import report
from console.pdf.fonts import cjk_font
from console.pdf.text import fit
from console.services import audit, audit_export
from console.services.actor import Actor

from .conftest import audit_events


def _events(n=3):
    actor = Actor(kind="staff", employee_no="T1001", role="teller", branch_code="BJ-001", channel="counter")
    for _ in range(n):
        audit.record(db.session, actor, "wallet.unlock", customer_ref="C000000007",
                     reason_code="locked_after_wrong_passwords")
    db.session.commit()


def test_csv_has_a_bom_labelled_headers_and_beijing_time_beside_utc(app, client, login_as):
    _events()
    login_as("auditor", branch_code="HO-000")
    body = client.get("/audit/export.csv?action=wallet.unlock").get_data()
    assert body.startswith(b"\xef\xbb\xbf")  # UTF-8 byte order mark: a spreadsheet reads the Chinese right
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    header, first = rows[0], dict(zip(audit_export.COLUMNS, rows[1]))
    assert header[:3] == ["审计序号 [seq]", "时间（UTC） [occurred_at]", "时间（北京时间） [occurred_at_local]"]
    assert all(cell.endswith(f"[{code}]") for cell, code in zip(header, audit_export.COLUMNS))
    event = audit_events("wallet.unlock")[0]
    assert first["occurred_at"].endswith("Z")
    assert first["occurred_at_local"] == timeutil.format_local(event.occurred_at, "%Y-%m-%d %H:%M:%S")
    assert first["action"] == "wallet.unlock"  # the data stay codes
    details = json.loads(audit_events("audit.export")[-1].details)
    assert details["sha256"] == hashlib.sha256(body).hexdigest()  # of the file as saved, the mark included


def test_csv_headers_follow_the_readers_language(app):
    assert audit_export.csv_header()[1] == "Time (UTC) [occurred_at]"
    jsonl = audit_export.COLUMNS  # the JSON Lines export carries the local time too
    assert "occurred_at_local" in jsonl


def test_report_columns_fit_their_headings_and_never_overlap():
    font, _embedded = cjk_font()
    boxes = report.column_boxes()
    width, _height = report.PAGE
    assert sum(w for _zh, _en, w in report.COLUMNS) * mm == pytest.approx(width - 2 * report.MARGIN)
    for (zh, en, _w), (x, usable) in zip(report.COLUMNS, boxes):
        assert stringWidth(zh, font, report.HEAD_ZH) <= usable, zh
        assert stringWidth(en, font, report.HEAD_EN) <= usable, en
    for (x, usable), (next_x, _u) in zip(boxes, boxes[1:]):
        assert x + usable < next_x  # a gap between every two columns
        long_value = fit("主管（授权员）" * 5, font, report.BODY, usable)
        assert stringWidth(long_value, font, report.BODY) <= usable and long_value.endswith("…")


def test_report_shows_words_for_codes(app, client, login_as):
    _events()
    login_as("auditor", branch_code="HO-000")
    pdf = client.get("/audit/export.pdf?action=wallet.unlock").data
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "解锁钱包" in text and "柜员" in text and "柜面" in text and "成功" in text
    assert "时间（北京）" in text and "Time (Beijing)" in text
