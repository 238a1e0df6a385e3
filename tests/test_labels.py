"""Every code labelled (issue #12 part 4): no code the console stores reaches a page without its words.

The demo (console/demo.py) is seeded, staff of every role work through it (a counter case with a
slip, a phone case with a wrong code, a request left for a supervisor, a case closed without
action, a refused attempt), and the main pages of every role are read as a person sees them: no
action name, outcome, role, channel, status, actor kind or reason code may show as text.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from flask_babel import force_locale

from console import boundary, codes, demo
from console.extensions import db
from console.models.audit import AuditEvent
from console.models.customer import Wallet
from console.models.notification import Notification
from console.models.staff import BranchKind
from console.services.actor import Actor
from console.services.notifications import message_text
from console.web import labels
from console.web.desk_labels import APPROVAL_STATES, REASON_LABELS
from console.web.roles import ROLE_LABELS

from .conftest import StaffHandle, post_form, sign_in

pytestmark = pytest.mark.sqlite_only

CASE_STATUSES = ("open", "closed")
APPROVAL_STATUSES = ("pending", "approved", "rejected", "expired", "executed")


def known_codes() -> set[str]:
    return {*codes.ROLES, *codes.OUTCOMES, *codes.CHANNELS, *codes.ACTOR_KINDS, *codes.audit_actions(),
            *codes.REASON_CODES, *codes.CUSTOMER_FAILURES, *codes.VERIFICATION_SLIPS, codes.INPUT_ERROR,
            *codes.VERIFICATION_STRENGTHS, *codes.VERIFICATION_METHODS, *CASE_STATUSES, *APPROVAL_STATUSES,
            *labels.AUDIT_REASON_LABELS, *(kind.value for kind in BranchKind), "rate_limited"}


class _Text(HTMLParser):
    """The text a person reads: no markup, scripts, styles or attributes; the raw record of an audit
    event (its JSON, shown as stored) is left out."""

    def __init__(self):
        super().__init__()
        self.parts, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        if self._skip or tag in ("script", "style") or (tag == "pre" and "json" in (dict(attrs).get("class") or "")):
            self._skip += 1

    def handle_endtag(self, tag):
        if self._skip and tag in ("script", "style", "pre"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(parser.parts)


def leaked_codes(html: str) -> set[str]:
    text = visible_text(html)
    words = {w.strip(".") for w in re.findall(r"[A-Za-z0-9_.]+", text)} | set(re.findall(r"[A-Za-z0-9_.]+", text))
    return words & known_codes()


def test_every_code_has_words(app):
    with app.test_request_context(), force_locale("zh_CN"):
        for action in codes.audit_actions():
            assert labels.action_label(action) != action, action
        for mapping, values in ((labels.OUTCOME_LABELS, codes.OUTCOMES), (labels.CHANNEL_LABELS, codes.CHANNELS),
                                (ROLE_LABELS, codes.ROLES), (labels.ACTOR_KIND_LABELS, codes.ACTOR_KINDS),
                                (labels.CASE_STATUS_LABELS, CASE_STATUSES), (APPROVAL_STATES, APPROVAL_STATUSES),
                                (labels.BRANCH_KIND_LABELS, [k.value for k in BranchKind])):
            assert set(values) <= set(mapping), set(values) - set(mapping)
        for code in (*codes.REASON_CODES, *codes.CUSTOMER_FAILURES, codes.INPUT_ERROR):
            assert labels.reason_label(code) != code, code
        assert set(codes.REASON_CODES) <= set(REASON_LABELS)
        # Flask-Admin's role list is built before any request: lazy words, one per role, in Chinese when shown.
        assert [code for code, _words in labels.role_choices()] == list(codes.ROLES)
        assert [str(words) for _code, words in labels.role_choices()][:2] == ["柜员", "客服坐席"]
        assert dict(labels.branch_kind_choices())["call_centre"] == labels.BRANCH_KIND_LABELS["call_centre"]
        # The leak check itself: it finds a bare code, and not one inside a word or in an attribute.
        assert leaked_codes("<td>case.open</td><td>success</td>") == {"case.open", "success"}
        assert leaked_codes('<td title="success">成功</td><pre class="json">{"x": "teller"}</pre>') == set()


def test_demo_branch_names_have_no_english_inside():
    for _code, name, _kind in demo.DEMO_BRANCHES:
        assert not re.search(r"[A-Za-z]", name), name


def _handle(staff: demo.DemoStaff) -> StaffHandle:
    from console.models.staff import Staff

    row = db.session.query(Staff).filter_by(employee_no=staff.employee_no).one()
    handle = StaffHandle(row.id, staff.employee_no, staff.password, staff.totp_secret, staff.role, staff.branch_code)
    db.session.rollback()
    return handle


def _as(app, staff):
    client = app.test_client()
    sign_in(client, _handle(staff))
    return client


def _open(client, kind, value) -> str:
    found = post_form(client, "/desk/search", {"kind": kind, "id_type": "resident_id", "value": value},
                      token_from="/desk/")
    customer = found.headers["Location"]
    return post_form(client, customer + "/cases", {}, token_from=customer).headers["Location"].rsplit("/", 1)[1]


def _wallet_id(wallet_no) -> int:
    wallet_id = db.session.query(Wallet.id).filter_by(wallet_no=wallet_no).scalar()
    db.session.rollback()
    return wallet_id


def _operate(client, case_no, wallet_no, operation, reason):
    wallet_id = _wallet_id(wallet_no)
    prefix = f"w{wallet_id}-{operation}"
    return post_form(client, f"/desk/cases/{case_no}/wallets/{wallet_id}/{operation}",
                     {f"{prefix}-reason_code": reason, f"{prefix}-confirm": "y"}, token_from=f"/desk/cases/{case_no}")


def _close(client, case_no, **fields):
    return post_form(client, f"/desk/cases/{case_no}/close", fields, token_from=f"/desk/cases/{case_no}/close")


def test_no_code_reaches_a_page_of_any_role(app):
    data = boundary.perform(Actor.operator(), demo.seed, commit=boundary.commit_now)
    staff = {s.employee_no: s for s in data.staff}
    wallets = {w.state: w for w in data.wallets}
    mobiles = {name: mobile for name, _born, mobile, _state in demo.DEMO_CUSTOMERS}
    pages: dict[str, list[str]] = {}

    # A teller: a slip, then the document; unlock; a note; close; print. A hold, and its release
    # filed for a supervisor; a case closed without action. A refused reveal.
    teller = _as(app, staff["T1001"])
    locked = wallets["locked_until_unlock"]
    case_no = _open(teller, "wallet_no", locked.wallet_no)
    for number in (locked.id_number[:-1] + ("1" if locked.id_number[-1] != "1" else "2"), locked.id_number):
        post_form(teller, f"/desk/cases/{case_no}/verify/counter",
                  {"id_type": "resident_id", "id_number": number, "photo_matches": "y"}, token_from=f"/desk/cases/{case_no}")
    _operate(teller, case_no, locked.wallet_no, "unlock", "locked_after_wrong_passwords")
    post_form(teller, f"/desk/cases/{case_no}/notes", {"text": "客户到柜台"}, token_from=f"/desk/cases/{case_no}")
    open_case_page = teller.get(f"/desk/cases/{case_no}").get_data(as_text=True)
    close_page = teller.get(f"/desk/cases/{case_no}/close").get_data(as_text=True)
    _close(teller, case_no)
    receipt_no = re.search(r"R\d{14}", teller.get(f"/desk/cases/{case_no}").get_data(as_text=True)).group(0)
    post_form(teller, f"/desk/receipts/{receipt_no}.pdf", {}, token_from=f"/desk/cases/{case_no}")
    held = wallets["active_without_2fa"]
    hold_case = _open(teller, "wallet_no", held.wallet_no)
    post_form(teller, f"/desk/cases/{hold_case}/verify/counter",
              {"id_type": "resident_id", "id_number": held.id_number, "photo_matches": "y"},
              token_from=f"/desk/cases/{hold_case}")
    _operate(teller, hold_case, held.wallet_no, "place_hold", "suspected_fraud")
    _operate(teller, hold_case, held.wallet_no, "release_hold", "customer_request")
    empty_case = _open(teller, "wallet_no", wallets["locked_30_minutes"].wallet_no)
    empty_close_page = teller.get(f"/desk/cases/{empty_case}/close").get_data(as_text=True)
    _close(teller, empty_case, no_action_reason="enquiry_only")
    customer_no = re.search(r"C\d+", teller.get(f"/desk/cases/{case_no}").get_data(as_text=True)).group(0)
    post_form(teller, f"/desk/customers/{customer_no}/reveal", {"field": "mobile", "reason": "核对号码"},
              token_from=f"/desk/customers/{customer_no}")  # refused: a teller may not reveal (access.denied)
    pages["teller"] = [open_case_page, close_page, empty_close_page] + [
        teller.get(url).get_data(as_text=True) for url in (
            "/", "/desk/", f"/desk/customers/{customer_no}", f"/desk/cases/{case_no}", f"/desk/cases/{hold_case}",
            f"/desk/cases/{empty_case}", "/audit/events")]

    # An agent: a wrong code, then the right one; a password reset; close.
    agent = _as(app, staff["A2001"])
    caller = wallets["active"]
    phone_case = _open(agent, "mobile", mobiles[caller.name])
    post_form(agent, f"/desk/cases/{phone_case}/verify/phone", {}, token_from=f"/desk/cases/{phone_case}")
    code = re.search(r"验证码为(\d{6})", message_text(
        db.session.query(Notification).filter_by(kind="verification_code").order_by(Notification.id.desc()).first())).group(1)
    db.session.rollback()
    answers = dict(demo.DEMO_SECURITY_ANSWERS)
    for typed in (str((int(code) + 1) % 1_000_000).zfill(6), code):
        post_form(agent, f"/desk/cases/{phone_case}/verify/phone/check",
                  {"code": typed, **{f"answer_{q}": a for q, a in answers.items()}}, token_from=f"/desk/cases/{phone_case}")
    _operate(agent, phone_case, caller.wallet_no, "reset_password", "forgot_password")
    _close(agent, phone_case)
    pages["agent"] = [agent.get(url).get_data(as_text=True) for url in ("/", "/desk/", f"/desk/cases/{phone_case}")]

    # A supervisor of the branch, and the auditor: the audit trail, every event, the dashboard.
    supervisor = _as(app, staff["S3001"])
    pages["supervisor"] = [supervisor.get(url).get_data(as_text=True) for url in (
        "/", "/desk/approvals", "/audit/events", "/audit/events?outcome=denied", "/audit/events?action=wallet.",
        "/audit/dashboard")]
    auditor = _as(app, staff["U4001"])
    seqs = [seq for (seq,) in db.session.query(db.func.min(AuditEvent.seq)).group_by(AuditEvent.action,
                                                                                      AuditEvent.reason_code)]
    db.session.rollback()
    pages["auditor"] = [auditor.get(url).get_data(as_text=True) for url in (
        "/", "/audit/events", "/audit/events?role=teller", "/audit/events?channel=counter&outcome=denied",
        "/audit/dashboard?days=7", "/audit/chain", *(f"/audit/events/{seq}" for seq in seqs))]
    pages["admin"] = [_as(app, staff["M5001"]).get("/").get_data(as_text=True)]

    for role, shown in pages.items():
        for page in shown:
            title = re.search(r"<title>(.*?)</title>", page, re.S).group(1).strip()
            assert not leaked_codes(page), (role, title, leaked_codes(page))
    # The audit search names its actions in words: a labelled select, not a text box for "wallet.".
    events = pages["auditor"][1]
    assert '<select id="f-action" name="action"' in events and 'name="action" type="text"' not in events
    assert re.search(r'<option value="wallet\.">全部：钱包</option>', events)
    assert "解锁钱包" in events and "受理单已创建" in events
