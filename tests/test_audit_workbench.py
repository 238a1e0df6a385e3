"""Auditor workbench: search scopes and filters, detail, exports, dashboard, checkpoints."""
import csv
import hashlib
import io
import json
import re
import tracemalloc

import pytest
from pypdf import PdfReader
from sqlalchemy import text

from console import policy
from console.extensions import db
from console.models.audit import ChainHead
from console.services import audit, audit_export, audit_query, checkpoints
from console.services.actor import Actor

from .conftest import audit_events, tamper


def _events(n, **kw):
    actor = Actor(kind="staff", staff_id=99, employee_no=kw.pop("employee_no", "T9"), role=kw.pop("role", "teller"),
                  branch_code=kw.pop("branch", "BJ-001"), channel="counter")
    for i in range(n):
        audit.record(db.session, actor, kw.get("action", "wallet.unlock"), outcome=kw.get("outcome", "success"),
                     customer_ref=kw.get("customer", "C000000001"), details={"i": i})
    db.session.commit()


def test_auditor_searches_by_filters_with_keyset_pages(app, client, login_as):
    _events(60)
    _events(3, action="wallet.reset_password", outcome="denied", branch="SH-002", employee_no="T8")
    login_as("auditor", branch_code="HO-000")
    page = client.get("/audit/events").get_data(as_text=True)
    seqs = [int(s) for s in re.findall(r"/audit/events/(\d+)\"", page)]
    assert len(seqs) == 50 and seqs == sorted(seqs, reverse=True)
    older = re.search(r'href="(/audit/events\?before=\d+[^"]*)"', page).group(1)
    rest = [int(s) for s in re.findall(r"/audit/events/(\d+)\"", client.get(older.replace("&amp;", "&")).get_data(as_text=True))]
    assert rest and max(rest) < min(seqs)
    denied = client.get("/audit/events?outcome=denied&branch=SH-002&action=wallet.").get_data(as_text=True)
    assert len(re.findall(r"/audit/events/(\d+)\"", denied)) == 3


@pytest.mark.parametrize("query", ["start=2026-13-01", "start=2026-02-01&end=2026-01-01", "role=wizard",
                                   "wallet=abc", "actor=<script>", "before=xyz", "outcome=maybe"])
def test_wrong_filters_get_a_clear_message_never_a_500(app, client, login_as, query):
    login_as("auditor", branch_code="HO-000")
    response = client.get(f"/audit/events?{query}")
    body = response.get_data(as_text=True)
    if "before" in query:  # a page cursor that is not a number: a clear 400, not an ignored value
        assert response.status_code == 400 and "请求中的数字无效" in body
    else:
        assert response.status_code == 200 and "筛选条件无效" in body


def test_supervisor_sees_own_branch_and_teller_own_cases(app, client, login_as):
    _events(2, branch="BJ-001")
    _events(2, branch="SH-002")
    login_as("supervisor", branch_code="SH-002")
    page = client.get("/audit/events?action=wallet.unlock").get_data(as_text=True)
    assert len(re.findall(r"/audit/events/(\d+)\"", page)) == 2
    bj_seq = audit_events("wallet.unlock")[0].seq
    assert client.get(f"/audit/events/{bj_seq}").status_code == 404
    assert audit_events("audit.view")[-1].outcome == "denied"


def test_teller_reads_only_events_of_own_cases(app, client, login_as):
    _events(3)
    handle = login_as("teller")
    page = client.get("/audit/events").get_data(as_text=True)
    assert "没有符合条件的事件" in page
    assert client.get("/audit/dashboard").status_code == 403
    assert handle


def test_event_detail_shows_states_and_chain_position(app, client, login_as):
    audit.record(db.session, Actor.system(), "wallet.locked", before={"lock_kind": None}, after={"lock_kind": "temporary"})
    db.session.commit()
    login_as("auditor", branch_code="HO-000")
    seq = audit_events("wallet.locked")[0].seq
    page = client.get(f"/audit/events/{seq}").get_data(as_text=True)
    assert "temporary" in page and "校验一致" in page and audit_events("wallet.locked")[0].hash in page


def test_csv_and_jsonl_exports_are_complete_and_audited(app, client, login_as):
    _events(25)
    login_as("auditor", branch_code="HO-000")
    csv_response = client.get("/audit/export.csv?action=wallet.unlock")
    body = csv_response.get_data()
    rows = [dict(zip(audit_export.COLUMNS, r)) for r in list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))[1:]]
    assert len(rows) == 25 and rows[0]["action"] == "wallet.unlock" and rows[0]["hash"]
    event = audit_events("audit.export")[-1]
    details = json.loads(event.details)
    assert details["rows"] == 25 and details["sha256"] == hashlib.sha256(body).hexdigest()
    assert details["filter"] == {"action": "wallet.unlock"} and details["format"] == "csv"
    jsonl = client.get("/audit/export.jsonl?action=wallet.unlock").get_data(as_text=True).splitlines()
    assert len(jsonl) == 25 and json.loads(jsonl[0])["seq"] == int(rows[0]["seq"])


def test_pdf_report_export(app, client, login_as):
    _events(120)
    login_as("auditor", branch_code="HO-000")
    response = client.get("/audit/export.pdf?action=wallet.unlock")
    reader = PdfReader(io.BytesIO(response.data))
    assert len(reader.pages) >= 3
    first = reader.pages[0].extract_text()
    assert "审计日志报告" in first and "action=wallet.unlock" in first and "第 1 页" in first
    details = json.loads(audit_events("audit.export")[-1].details)
    assert details["rows"] == 120 and details["sha256"] == hashlib.sha256(response.data).hexdigest()


def test_pdf_report_splits_into_volumes(app, client, login_as):
    app.config["PDF_REPORT_ROWS_PER_VOLUME"] = 40
    policy.rebuild(app)
    _events(100)
    login_as("auditor", branch_code="HO-000")
    first = client.get("/audit/export.pdf?action=wallet.unlock")
    third = client.get("/audit/export.pdf?action=wallet.unlock&volume=3")
    assert first.headers["X-More-Volumes"] == "yes" and third.headers["X-More-Volumes"] == "no"
    assert json.loads(audit_events("audit.export")[-1].details)["rows"] == 20


@pytest.mark.sqlite_only
def test_hundred_thousand_event_export_runs_in_flat_memory(app, backend):
    """Streamed exports hold one batch at a time: memory does not grow with the row count."""
    def insert(n, start):
        rows = [{"seq": start + i, "occurred_at": "2026-11-25 10:00:00.000000", "actor_type": "system",
                 "channel": "system", "action": "bulk.event", "outcome": "success", "chain_version": 1,
                 "prev_hash": "0" * 64, "hash": "1" * 64} for i in range(n)]
        db.session.execute(text(
            "INSERT INTO audit_event (seq, occurred_at, actor_type, channel, action, outcome, chain_version, "
            "prev_hash, hash) VALUES (:seq, :occurred_at, :actor_type, :channel, :action, :outcome, "
            ":chain_version, :prev_hash, :hash)"), rows)
        db.session.commit()

    def peak_for(total):
        actor = Actor(kind="staff", role="auditor", staff_id=1, employee_no="U1", branch_code="HO-000")
        filters = audit_query.parse_filters({"action": "bulk.event"})
        result = {}
        tracemalloc.start()
        count = sum(1 for _ in audit_export.lines(db.session, actor, filters, "csv", result))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert count == total + 1 and result["rows"] == total
        return peak

    insert(10_000, 1)
    small = peak_for(10_000)
    insert(90_000, 10_001)
    large = peak_for(100_000)
    assert large < small * 2.5, (small, large)  # ten times the rows, not ten times the memory


def test_dashboard_shows_charts_and_exceptions(app, client, login_as):
    _events(4, action="wallet.reset_password", customer="C000000042")
    _events(2, action="access.denied", outcome="denied")
    audit.record(db.session, Actor(kind="staff", employee_no="S1", role="supervisor", branch_code="BJ-001"),
                 "approval.decide", outcome="denied", reason_code="self_approval")
    db.session.commit()
    login_as("auditor", branch_code="HO-000")
    page = client.get("/audit/dashboard").get_data(as_text=True)
    assert "<svg" in page and "<script" not in page.split("<main", 1)[1]  # charts drawn without a script
    assert "C000000042" in page  # repeated resets of one customer
    assert "本人提交的申请" in page and "self_approval" not in page  # the reason in words, not its code
    assert "/audit/events?outcome=denied" in page


def test_checkpoint_then_tail_truncation_is_caught(app, runner):
    _events(10)
    assert runner.invoke(args=["audit", "checkpoint"]).exit_code == 0
    _events(2)
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0
    # Cut the chain back to 8 events and rewrite the head to match: only the checkpoint notices.
    last = db.session.execute(text("SELECT hash FROM audit_event WHERE seq = 8")).scalar()
    tamper("DELETE FROM audit_event WHERE seq > 8", f"UPDATE audit_chain_head SET seq = 8, hash = '{last}'")
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1 and "BROKEN at sequence 9" in result.output and "checkpoint" in result.output


def test_forged_checkpoint_signature_is_caught(app):
    _events(3)
    row = checkpoints.create_checkpoint(db.session)
    db.session.commit()
    tamper(f"UPDATE audit_checkpoint SET seq = 2 WHERE id = {row.id}", table="audit_checkpoint")
    report = audit.verify_chain(db.session)
    assert not report.intact and "invalid signature" in report.reason


def test_edit_covered_by_checkpoint_names_the_seq(app):
    _events(5)
    checkpoints.create_checkpoint(db.session)
    db.session.commit()
    tamper("UPDATE audit_event SET outcome = 'failed' WHERE seq = 3")
    report = audit.verify_chain(db.session)
    assert (report.intact, report.first_bad_seq) == (False, 3)


def test_checkpoint_table_is_append_only(app):
    _events(1)
    checkpoints.create_checkpoint(db.session)
    db.session.commit()
    from sqlalchemy.exc import DatabaseError

    with pytest.raises(DatabaseError, match="append-only"):
        db.session.execute(text("DELETE FROM audit_checkpoint"))
        db.session.commit()
    db.session.rollback()


def test_chain_page_lists_checkpoints_and_serves_the_public_key(app, client, login_as, runner):
    runner.invoke(args=["audit", "checkpoint"])
    login_as("auditor", branch_code="HO-000")
    page = client.get("/audit/chain").get_data(as_text=True)
    assert "签名检查点" in page and checkpoints.key_id() in page
    pem = client.get("/audit/public-key.pem").get_data(as_text=True)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert db.session.get(ChainHead, 1).seq >= 1


def test_read_only_audit_browser_for_auditors(app, client, login_as):
    _events(3)
    login_as("auditor", branch_code="HO-000")
    listing = client.get("/audit/browse/audit_browser_events/")
    assert listing.status_code == 200 and "wallet.unlock" in listing.get_data(as_text=True)
    seq = audit_events("wallet.unlock")[0].seq
    assert client.get(f"/audit/browse/audit_browser_events/details/?id={seq}").status_code == 200
    assert client.get(f"/audit/browse/audit_browser_events/edit/?id={seq}").status_code in (302, 403, 404)
    assert client.get("/audit/browse/audit_browser_events/new/").status_code in (302, 403, 404)
