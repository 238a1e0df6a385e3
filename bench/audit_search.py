"""Audit search latency on PostgreSQL with 1,000,000 events: the workbench (keyset) at page 1
and at a deep page, against Flask-Admin's stock list view (OFFSET + COUNT) over the same table.

    .venv/bin/python bench/audit_search.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""
from __future__ import annotations

import argparse
import statistics
import time

import _common
from sqlalchemy import text

FILL = """
INSERT INTO audit_event (seq, occurred_at, actor_type, actor_id, actor_employee_no, actor_role, actor_branch,
                         channel, action, outcome, customer_ref, chain_version, prev_hash, hash)
SELECT g, now() - ((CAST(:n AS bigint) - g) * interval '2 seconds'), 'staff', g % 500, 'T' || (1000 + g % 500),
       (array['teller','agent','supervisor'])[1 + g % 3], (array['BJ-001','SH-002','CC-95588'])[1 + g % 3],
       'counter', (array['wallet.unlock','customer.view','customer.search','wallet.reset_password','staff.signin'])[1 + g % 5],
       CASE WHEN g % 20 = 0 THEN 'denied' ELSE 'success' END, 'C' || lpad((g % 100000)::text, 9, '0'),
       1, repeat('0', 64), repeat('1', 64)
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) g
"""


def timed(fn, repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", required=True)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    _common.quiet_alembic()
    with _common.scratch_app(args.postgres) as app:
        from console.extensions import db
        from console.models.staff import Branch, Staff
        from console.passwords import hash_password
        from console.services import audit_query, staff_auth
        from console.services.actor import Actor
        from console.timeutil import utcnow

        start = time.perf_counter()
        for lo in range(1, args.events + 1, 200_000):
            db.session.execute(text(FILL), {"n": args.events, "lo": lo, "hi": min(lo + 199_999, args.events)})
            db.session.commit()
        db.session.execute(text("UPDATE audit_chain_head SET seq = :n"), {"n": args.events})
        db.session.commit()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE audit_event"))
        print(f"postgresql: {args.events:,} events loaded in {time.perf_counter() - start:.0f} s")

        branch = Branch(code="HO-000", name="总行", kind="head_office", active=True)
        staff = Staff(employee_no="U9", name="审计", role="auditor", branch=branch, active=True,
                      password_hash=hash_password("x" * 12), must_change_password=False, created_at=utcnow(),
                      session_generation=1, failed_signins=0)
        db.session.add_all([branch, staff])
        db.session.commit()
        actor = Actor.for_staff(staff)
        client = app.test_client()
        token, _row = staff_auth.start_session(db.session, staff, source_ip="127.0.0.1")
        db.session.commit()
        with client.session_transaction() as session:
            session["sid"] = token

        def get(url):
            def call():
                response = client.get(url)
                assert response.status_code == 200, (url, response.status_code)
            return call

        deep_before = 50_000  # about 19,000 pages of 50 below the newest event
        deep_page = (args.events - deep_before) // 50
        none = audit_query.parse_filters({})
        some = audit_query.parse_filters({"branch": "SH-002", "action": "wallet.unlock"})
        results = [
            ("workbench query, page 1", timed(lambda: audit_query.page(db.session, actor, none), args.repeat)),
            ("workbench query, page 1, 2 filters", timed(lambda: audit_query.page(db.session, actor, some), args.repeat)),
            ("workbench query, deep page", timed(lambda: audit_query.page(db.session, actor, none, before=deep_before),
                                                 args.repeat)),
            ("workbench page (HTTP), page 1", timed(get("/audit/events"), args.repeat)),
            ("workbench page (HTTP), deep page", timed(get(f"/audit/events?before={deep_before}"), args.repeat)),
            ("Flask-Admin list (HTTP), page 1", timed(get("/audit/browse/audit_browser_events/"), args.repeat)),
            ("Flask-Admin list (HTTP), deep page", timed(get(f"/audit/browse/audit_browser_events/?page={deep_page}"),
                                                         args.repeat)),
        ]
        baseline = dict(results)["Flask-Admin list (HTTP), page 1"]
        print(f"median of {args.repeat} runs; deep page = {deep_page:,} pages in")
        for name, ms in results:
            print(f"{name:<38}{ms:>9.1f} ms   {ms / baseline:>6.2f} x Flask-Admin page 1")


if __name__ == "__main__":
    main()
