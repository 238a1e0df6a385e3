"""Malformed input is a clear 4xx everywhere, never a 5xx (issue #11 parts 2 and 3).

Every route of the URL map, every method, gets a NUL byte in a path parameter, the query, a form
field and a JSON field, ids beyond 2^63, and JSON nested 5,000 deep, sent by a role that may use
the route. Then the targeted cases: formula cells in the CSV export, malformed case, receipt and
customer numbers recorded escaped, and CR/LF in ``next``.
"""
import csv
import io
import json

import pytest

from console.web import inputs

from .conftest import audit_events, csrf_token, make_staff, post_form, sign_in, totp_code

HUGE = str(2**63 + 1)  # beyond BIGINT, so beyond every Integer column too
DEEP = "[" * 5000 + "]" * 5000
SAMPLES = {"CaseNoConverter": "K20240101000001", "ReceiptNoConverter": "R20240101000001",
           "CustomerNoConverter": "C000000001", "BoundedIntConverter": "1", "SeqConverter": "1"}
# Sent last: they end the signed-in session or the API token the rest of the walk uses.
ENDS_SESSION = {"auth.logout", "staff_api.revoke_token"}
FIELDS = ("q", "query", "note", "reason", "employee_no", "password", "code", "wallet_no", "id_number", "search",
          "lang", "next", "decision", "field", "answer_1", "answer_2")


def _route_table(app):
    """(endpoint, method, rule, {param: converter name}) for every route but static files."""
    table = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.endswith("static"):
            continue
        params = {name: type(conv).__name__ for name, conv in rule._converters.items()}
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            table.append((rule.endpoint, method, rule, params))
    table.sort(key=lambda row: (row[0] in ENDS_SESSION, row[0]))
    return table


def _build(rule, params, override=None):
    values = {name: SAMPLES.get(kind, "x") for name, kind in params.items()}
    if "fmt" in values:
        values["fmt"] = "csv"
    if "export_type" in values:
        values["export_type"] = "csv"
    values.update(override or {})
    # Build by hand: the converters would refuse to build a malformed value.
    url = rule.rule
    for name, kind in params.items():
        url = url.replace(f"<{name}>", values[name])
        for prefix in ("int", "seq", "case_no", "receipt_no", "customer_no", "path", "string"):
            url = url.replace(f"<{prefix}:{name}>", values[name])
    return url


class Callers:
    """One signed-in client per role, reused by the whole walk (sign-ins are slow)."""

    def __init__(self, app):
        self.app = app
        self.clients, self.tokens, self.headers = {}, {}, {}
        self.handles = {}
        for role, branch in (("teller", "BJ-001"), ("auditor", "HO-000"), ("admin", "HO-000"),
                             ("supervisor", "BJ-001")):
            client = app.test_client()
            handle = make_staff(role, branch_code=branch)
            assert sign_in(client, handle).status_code == 200
            self.clients[role] = client
            self.handles[role] = handle
            self.tokens[role] = csrf_token(client, "/")
        api = app.test_client()
        teller_api = make_staff("teller")
        response = api.post("/api/v1/tokens", json={"employee_no": teller_api.employee_no,
                                                    "password": teller_api.password,
                                                    "totp_code": totp_code(teller_api)})
        assert response.status_code == 201, response.get_json()
        self.clients["api"] = api
        self.headers["api"] = {"Authorization": f"Bearer {response.get_json()['token']}"}
        self.clients["wallet"] = app.test_client()
        self.headers["wallet"] = {"Authorization": f"Bearer {app.config['WALLET_SERVICE_KEY']}"}
        self.clients["anonymous"] = app.test_client()

    def who(self, url):
        if url.startswith("/api/v1"):
            return "api"
        if url.startswith("/api/wallet"):
            return "wallet"
        if url.startswith("/admin"):
            return "admin"
        if url.startswith("/audit"):
            return "auditor"
        if url.startswith("/desk/approvals"):
            return "supervisor"
        return "teller"

    def send(self, method, url, *, form=None, body=None, content_type=None, role=None):
        role = role or self.who(url)
        headers = dict(self.headers.get(role, {}))
        headers["Idempotency-Key"] = f"k-{abs(hash((method, url, body, str(form))))}"
        if form is not None and role in self.tokens:
            form = {"csrf_token": self.tokens[role], **form}
        return self.clients[role].open(url, method=method, data=form if form is not None else body,
                                       content_type=content_type, headers=headers)


def _variants(rule, params, method):
    """(label, url, kwargs) of the malformed requests for one route and method."""
    base = _build(rule, params)
    yield "plain", base, {}
    for name, kind in params.items():
        if kind in ("BoundedIntConverter", "SeqConverter"):
            yield f"huge {name}", _build(rule, params, {name: HUGE}), {}
        elif kind != "PathConverter":
            yield f"NUL in {name}", _build(rule, params, {name: "R%00"}), {}
            yield f"formula in {name}", _build(rule, params, {name: "=HYPERLINK(%22http:evil.ex%22)"}), {}
    yield "NUL in query", base + "?q=x%00&search=%00&c=x%00", {}
    yield "huge query", base + f"?before={HUGE}&after={HUGE}&id={HUGE}&page={HUGE}&volume={HUGE}&days={HUGE}", {}
    yield "huge id", base + f"?id={HUGE}&volume={HUGE}&days={HUGE}", {}
    yield "negative query", base + "?page=-1&page_size=-5&before=-1&id=-1&volume=-3&days=-2", {}
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        yield "NUL in form", base, {"form": {name: "T1001\x00" for name in FIELDS}}
        yield "NUL in JSON", base, {"body": json.dumps({name: "T1001\x00" for name in FIELDS}),
                                    "content_type": "application/json"}
        yield "deep JSON", base, {"body": DEEP, "content_type": "application/json"}
        yield "deep JSON object", base, {"body": '{"a":' * 5000 + "1" + "}" * 5000,
                                         "content_type": "application/json"}


def test_no_route_answers_5xx_to_malformed_input(app):
    callers = Callers(app)
    failures, sent = [], 0
    for endpoint, method, rule, params in _route_table(app):
        for label, url, kwargs in _variants(rule, params, method):
            response = callers.send(method, url, **kwargs)
            sent += 1
            if response.status_code >= 500:
                failures.append((endpoint, method, label, url[:80], response.status_code))
    assert failures == [], "\n".join(map(str, failures))
    assert sent > 300


def test_anonymous_malformed_input_is_a_4xx(app, client):
    # Sign-in, token issuing and the public receipt check, without signing in.
    assert post_form(client, "/auth/login", {"employee_no": "T1001\x00", "password": "x"}).status_code == 400
    response = client.post("/api/v1/tokens", data=DEEP, content_type="application/json")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "malformed_json"
    response = client.post("/api/v1/tokens", json={"employee_no": "T1001\u0000", "password": "x", "totp_code": "1"})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_characters"
    assert client.get("/receipts/check/R%00?c=x").status_code == 400
    assert client.get("/receipts/check/R20240101000001?c=x%00").status_code == 400
    assert client.get("/receipts/check/'%3D1?c=x").status_code == 404
    # Guarded pages still send an anonymous caller to sign in first, whatever the reference.
    for url in ("/desk/cases/x", f"/desk/approvals/{HUGE}", f"/audit/events/{HUGE}"):
        response = client.get(url)
        assert response.status_code == 302 and "/auth/login" in response.headers["Location"], url
    assert client.get("/api/v1/cases/x").status_code == 401
    assert audit_events("access.denied") == []  # anonymous probes are not staff actions


def test_text_areas_keep_newlines_but_no_nul():
    assert not inputs.CONTROL_IN_TEXT.search("line one\r\nline two\tend")
    assert inputs.CONTROL_IN_TEXT.search("a\x00b") and inputs.CONTROL_STRICT.search("a\nb")
    assert inputs.has_control_characters({"a": [{"b": ["ok", "x\x00"]}]})
    assert not inputs.has_control_characters({"note": "two\nlines"})
    assert inputs.has_control_characters({"k\x01": 1})
    assert inputs.json_depth('{"a": "[[[[", "b": [[1]]}') == 3


def test_language_switch_with_crlf_in_next_redirects_home(client):
    token = csrf_token(client)
    response = client.post("/auth/language", data={"lang": "en", "next": "/audit/events\r\nSet-Cookie: x=1",
                                                   "csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    response = client.post("/auth/language", data={"lang": "zh_CN", "next": "/audit/events", "csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == "/audit/events"


def _denied_details():
    return [json.loads(event.details) for event in audit_events("access.denied")]


def test_malformed_references_are_refused_and_recorded_escaped(app, client, login_as):
    teller = login_as("teller")
    for url, parameter in (("/desk/cases/=HYPERLINK(%22http:evil.ex%22)", "case_no"),
                           ("/desk/customers/C12%0A", None),  # a control character: refused up front
                           ("/desk/customers/@SUM(1)", "customer_no"),
                           ("/desk/approvals/2147483648", "approval_id")):
        response = client.get(url)
        assert response.status_code in (400, 404), url
    receipt = post_form(client, "/desk/receipts/-2+3.pdf", {}, token_from="/desk/")
    assert receipt.status_code == 404
    details = _denied_details()
    assert [d["parameter"] for d in details] == ["case_no", "customer_no", "approval_id", "receipt_no"]
    assert details[0]["value"] == "'=HYPERLINK(\"http:evil.ex\")'"
    events = audit_events("access.denied")
    assert all(e.outcome == "denied" and e.reason_code == "malformed_reference"
               and e.actor_employee_no == teller.employee_no and e.case_ref is None for e in events)
    assert all(len(d["value"]) <= 64 for d in details)
    # Nothing else reached a service: no case.view refusal with the raw value.
    assert audit_events("case.view") == []


def test_oversized_audit_ids_and_cursors_are_4xx_and_audited(app, client, login_as):
    login_as("auditor", branch_code="HO-000")
    assert client.get(f"/audit/events/{HUGE}").status_code == 404
    assert client.get(f"/audit/events/{2**63 - 1}").status_code == 404  # in range: an ordinary miss
    assert client.get(f"/audit/events?before={HUGE}").status_code == 400
    assert client.get("/audit/events?before=abc").status_code == 400
    assert client.get("/audit/events?before=5").status_code == 200
    assert [d["kind"] for d in _denied_details()] == ["seq"]
    assert [e.reason_code for e in audit_events("audit.view")] == ["not_found_or_out_of_scope"]


def test_api_malformed_input_is_json_4xx(app, client):
    handle = make_staff("teller")
    token = client.post("/api/v1/tokens", json={"employee_no": handle.employee_no, "password": handle.password,
                                                "totp_code": totp_code(handle)}).get_json()["token"]
    auth = {"Authorization": f"Bearer {token}", "Idempotency-Key": "malformed-1"}
    response = client.get("/api/v1/cases/K1%2B1", headers=auth)
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    response = client.post(f"/api/v1/approvals/{HUGE}/decision", json={"decision": "approve"}, headers=auth)
    assert response.status_code == 404
    response = client.post("/api/v1/customers/search", data=DEEP, content_type="application/json",
                           headers={**auth, "Idempotency-Key": "malformed-2"})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "malformed_json"
    details = _denied_details()
    assert [(d["parameter"], d["value"]) for d in details] == [("case_no", "'K1+1'"), ("approval_id", f"'{HUGE}'")]
    wallet = client.post("/api/wallet/v1/sign-in", data=DEEP, content_type="application/json",
                         headers={"Authorization": f"Bearer {app.config['WALLET_SERVICE_KEY']}",
                                  "Idempotency-Key": "malformed-3"})
    assert wallet.status_code == 400 and wallet.get_json()["error"]["code"] == "malformed_json"


def test_csv_export_neutralises_formula_cells(app, client, login_as):
    from console.extensions import db
    from console.services import audit
    from console.services.actor import Actor

    # A denied access with a formula in its path, and an event whose case reference is one
    # (as recorded before shapes were checked), then the auditor's export.
    login_as("auditor", branch_code="HO-000")
    assert client.get('/desk/cases/=HYPERLINK("http:evil.ex")').status_code == 403
    audit.record(db.session, Actor.operator(), "case.view", outcome="denied", reason_code="not_found_or_other_branch",
                 case_ref='=HYPERLINK("http:evil.ex")', customer_ref="+1", details={"note": "@x"})
    db.session.commit()
    body = client.get("/audit/export.csv").get_data(as_text=True).removeprefix("\ufeff")  # the byte order mark
    rows = list(csv.reader(io.StringIO(body)))
    cells = [cell for row in rows for cell in row]
    assert len(rows) > 3
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert "'=HYPERLINK(\"http:evil.ex\")" in cells and "'+1" in cells
    assert all(line.startswith('"') for line in body.splitlines())  # every field quoted
    # JSON Lines keeps the value as data: a JSON string, not a spreadsheet cell.
    jsonl = client.get("/audit/export.jsonl").get_data(as_text=True).splitlines()
    assert any(json.loads(line)["case_ref"] == '=HYPERLINK("http:evil.ex")' for line in jsonl)


@pytest.mark.parametrize("value, expected", [("=1+1", "'=1+1"), ("-5", "'-5"), ("@a", "'@a"), ("\tx", "'\tx"),
                                             ("plain", "plain"), (5, 5), (None, None)])
def test_csv_cell(value, expected):
    from console.services.audit_export import csv_cell

    assert csv_cell(value) == expected
