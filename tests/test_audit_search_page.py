"""The auditor's search page at its query's speed (issue #14 part 5): every search still audited, and
a page of results costs a bounded number of statements (no reload per row after the commit)."""
import json
import re

from sqlalchemy import event

from console.extensions import db
from console.services import audit
from console.services.actor import Actor

from .conftest import audit_events


def _events(n):
    actor = Actor(kind="staff", staff_id=99, employee_no="T9", role="teller", branch_code="BJ-001", channel="counter")
    for i in range(n):
        audit.record(db.session, actor, "wallet.unlock", customer_ref="C000000001", details={"i": i})
    audit.record(db.session, Actor.system(), "wallet.locked", reason_code="too_many_failures", customer_ref="<b>&")
    db.session.commit()


def test_every_search_is_audited_and_a_page_reads_two_statements(app, client, login_as):
    _events(120)
    login_as("auditor", branch_code="HO-000")
    statements = []

    def seen(_conn, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        pages, reads = [], []
        for url in ("/audit/events", None, "/audit/events?branch=BJ-001&action=wallet.unlock"):
            url = url or re.search(r'href="(/audit/events\?before=\d+[^"]*)"', pages[0]).group(1).replace("&amp;", "&")
            statements.clear()
            response = client.get(url)
            assert response.status_code == 200
            pages.append(response.get_data(as_text=True))
            # The session (with its staff member and branch) and the page; the search's own event is
            # written (audit_intake), chained (audit_chain_head, audit_event) and may be checkpointed.
            reads.append([s for s in statements if s.lstrip().upper().startswith("SELECT")
                          and not re.search(r"audit_intake|audit_chain_head|audit_checkpoint", s)])
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert [len(r) for r in reads] == [2, 2, 2], reads
    searches = audit_events("audit.search")
    assert len(searches) == 3
    assert [json.loads(e.details)["shown"] for e in searches] == [50, 50, 50]
    assert json.loads(searches[2].details)["filter"] == {"action": "wallet.unlock", "branch": "BJ-001"}
    assert json.loads(searches[1].details)["before"] is not None
    # Rows keep their words, links and escaping.
    assert "&lt;b&gt;&amp;" in pages[0] and "(失败次数过多)" in pages[0] and "too_many_failures" not in pages[0]
    assert re.search(r'<td data-label="[^"]+"><a href="/audit/events/\d+"><code>\d+</code></a></td>', pages[0])
