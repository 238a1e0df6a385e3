"""The auditor's search page on PostgreSQL with 1,000,000 events: server time per request for page 1,
a deep page (keyset, ``before=``) and two filters, beside the raw query, and beside Flask-Admin's stock
list view (a plain ``ModelView`` over the same table, OFFSET + COUNT, registered in this bench's app
only) for the same pages.

    .venv/bin/python bench/audit_search.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres

It creates a scratch database, fills it with 1M plausible events (INSERT ... SELECT generate_series;
their hashes are not a valid chain: nothing here verifies it), signs an auditor in through a real
server-side session, and times each page in-process: "server" is the WSGI application's own time
(session lookup, permission check, query, the search's own audit event and its commit, rendering),
measured around ``app.wsgi_app``; "cpu" is this process's CPU time per request (on a shared machine
the wall time also holds the waits for the other processes). The workbench is timed in both audit
chain modes: "commit" (the default: the request also chains its event before it answers) and
"background" (a sequencer thread chains within AUDIT_SEQUENCER_INTERVAL).
"""
from __future__ import annotations

import argparse
import contextvars
import os
import statistics
import threading
import time

import _common
from sqlalchemy import event as sa_event
from sqlalchemy import text

FILL = """
INSERT INTO audit_event (seq, occurred_at, actor_type, actor_id, actor_employee_no, actor_role, actor_branch,
                         channel, action, outcome, reason_code, customer_ref, case_ref, chain_version, prev_hash, hash)
SELECT g, now() - ((CAST(:n AS bigint) - g) * interval '2 seconds'), 'staff', g % 500, 'T' || (1000 + g % 500),
       (array['teller','agent','supervisor'])[1 + g % 3], (array['BJ-001','SH-002','CC-95588'])[1 + g % 3],
       (array['counter','phone','console'])[1 + g % 3],
       (array['wallet.unlock','customer.view','customer.search','wallet.reset_password','staff.signin'])[1 + g % 5],
       CASE WHEN g % 20 = 0 THEN 'denied' ELSE 'success' END,
       CASE WHEN g % 20 = 0 THEN 'not_permitted' END, 'C' || lpad((g % 100000)::text, 9, '0'),
       CASE WHEN g % 7 = 0 THEN 'K' || lpad((g % 30000)::text, 8, '0') END,
       1, repeat('0', 64), repeat('1', 64)
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) g
"""
SLICE = 250_000
PAGE = 50
FILTERS = {"branch": "SH-002", "action": "wallet.unlock"}


def deep_before(events: int) -> int:
    """The deep page's keyset cursor: below seq 50,000 of 1M, i.e. about 19,000 pages of 50 from the newest."""
    return min(50_000, events // 20)


class Timed:
    """WSGI middleware: the application's own time per request (wall and this process's CPU)."""

    def __init__(self, app):
        self.app, self.wall, self.cpu = app, [], []

    def __call__(self, environ, start_response):
        wall, cpu = time.perf_counter(), time.process_time()
        body = self.app(environ, start_response)
        try:
            data = b"".join(body)
        finally:
            if hasattr(body, "close"):
                body.close()
        self.cpu.append((time.process_time() - cpu) * 1000)
        self.wall.append((time.perf_counter() - wall) * 1000)
        return [data]

    def reset(self):
        self.wall, self.cpu = [], []


def stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(round(0.95 * len(ordered))) - 1)]


def seed(db, n: int) -> float:
    start = time.perf_counter()
    for lo in range(1, n + 1, SLICE):
        db.session.execute(text(FILL), {"n": n, "lo": lo, "hi": min(lo + SLICE - 1, n)})
        db.session.commit()
    # The head names the last event (the head's guard wants an event with that hash there).
    db.session.execute(text("UPDATE audit_chain_head SET seq = :n, hash = repeat('1', 64), "
                            "updated_at = now() AT TIME ZONE 'UTC'"), {"n": n})
    db.session.commit()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE audit_event"))
    return time.perf_counter() - start


def stock_admin(app, db):
    """Flask-Admin's stock list over the same table: a plain ModelView, newest first, 50 a page,
    the two filtered columns as its stock filters, behind the same permission as the workbench."""
    from flask_admin import Admin
    from flask_admin.contrib.sqla import ModelView
    from flask_login import current_user

    from console.models.audit import AuditEvent
    from console.permissions import AUDIT_READ_ALL, can

    class StockAuditEvents(ModelView):
        can_create = can_edit = can_delete = False
        page_size = PAGE
        column_default_sort = ("seq", True)
        column_filters = ("actor_branch", "action")

        def is_accessible(self):
            return current_user.is_authenticated and can(current_user, AUDIT_READ_ALL)

    admin = Admin(app, name="bench", url="/bench-admin", endpoint="bench_admin")
    view = StockAuditEvents(AuditEvent, db, endpoint="bench_audit_events", url="/bench-admin/events")
    admin.add_view(view)
    return view


def stock_filter_args(view) -> str:
    """The stock list's URL arguments for "branch equals ..." and "action equals ..."."""
    wanted = {"actor_branch": FILTERS["branch"], "action": FILTERS["action"]}
    args = []
    for key, (_index, flt) in view._filter_args.items():
        column = getattr(getattr(flt, "column", None), "key", None)
        if type(flt).__name__ == "FilterEqual" and column in wanted:
            args.append(f"flt{len(args)}_{key}={wanted.pop(column)}")
    assert not wanted, f"no stock 'equals' filter for {wanted}"
    return "&".join(args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", required=True)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=60, help="timed requests per workbench page")
    parser.add_argument("--stock-requests", type=int, default=12, help="timed requests per Flask-Admin page")
    args = parser.parse_args()
    _common.quiet_alembic()
    with _common.scratch_app(args.postgres) as app:
        from console.extensions import db
        from console.models.audit import AuditEvent
        from console.models.staff import Branch, Staff
        from console.passwords import hash_password
        from console.services import audit_query, sequencer, staff_auth
        from console.services.actor import Actor
        from console.timeutil import utcnow

        stock = stock_admin(app, db)  # before the first request
        timed = Timed(app.wsgi_app)
        app.wsgi_app = timed

        print(f"postgresql: {args.events:,} events loaded in {seed(db, args.events):.0f} s")
        load_before = os.getloadavg()[0]
        branch = Branch(code="HO-000", name="总行", kind="head_office", active=True)
        staff = Staff(employee_no="U9", name="审计", role="auditor", branch=branch, active=True,
                      password_hash=hash_password("x" * 12), must_change_password=False, created_at=utcnow(),
                      session_generation=1, failed_signins=0)
        db.session.add_all([branch, staff])
        db.session.commit()
        actor = Actor.for_staff(staff)
        token, _row = staff_auth.start_session(db.session, staff, source_ip="127.0.0.1")
        db.session.commit()
        client = app.test_client()
        with client.session_transaction() as session:
            session["sid"] = token
        db.session.remove()

        statements: list[str] = []  # this thread's statements (not the background sequencer's)
        main_thread = threading.get_ident()
        sa_event.listen(db.engine, "before_cursor_execute",
                        lambda *a: statements.append(a[2]) if threading.get_ident() == main_thread else None)

        def get(url: str):
            # Each request in its own context, as in production (this script holds an app context,
            # whose ``g`` a request would otherwise share; tests/conftest.py IsolatedClient does the same).
            response = contextvars.Context().run(client.get, url)
            assert response.status_code == 200, (url, response.status_code)

        def serve(url: str, n: int, warm: int = 5) -> tuple[float, float, float, int]:
            for _ in range(warm):
                get(url)
            statements.clear()
            get(url)
            per_request = len(statements)
            timed.reset()
            for _ in range(n):
                get(url)
            median, p95 = stats(timed.wall)
            return median, p95, statistics.median(timed.cpu), per_request

        none, some = audit_query.parse_filters({}), audit_query.parse_filters(FILTERS)
        deep = deep_before(args.events)
        pages = {
            "page 1": ("/audit/events", none, None, "/bench-admin/events/"),
            "deep page": (f"/audit/events?before={deep}", none, deep,
                          f"/bench-admin/events/?page={(args.events - deep) // PAGE}"),
            "2 filters": ("/audit/events?" + "&".join(f"{k}={v}" for k, v in FILTERS.items()), some, None,
                          "/bench-admin/events/?" + stock_filter_args(stock)),
        }

        # The raw query: the page's SQL (audit_query.page's statement) on a pooled DBAPI connection.
        raw_ms = {}
        for name, (_url, filters, before, _stock) in pages.items():
            query = audit_query.build_query(db.session, actor, filters, columns=audit_query.LIST_COLUMNS)
            if before is not None:
                query = query.where(AuditEvent.seq < before)
            compiled = query.order_by(AuditEvent.seq.desc()).limit(PAGE + 1).compile(db.engine)
            sql, params = str(compiled), compiled.params
            raw = db.engine.raw_connection()
            try:
                cursor = raw.cursor()
                samples = []
                for i in range(args.requests + 5):
                    start = time.perf_counter()
                    cursor.execute(sql, params)
                    cursor.fetchall()
                    if i >= 5:
                        samples.append((time.perf_counter() - start) * 1000)
                raw.rollback()
            finally:
                raw.close()
            raw_ms[name] = statistics.median(samples)
        db.session.remove()

        results = {}
        for mode in ("commit", "background"):
            app.config["AUDIT_CHAIN_MODE"] = mode
            stop = threading.Event()
            thread = None
            if mode == "background":
                def chain_in_background():
                    with app.app_context():
                        sequencer.run(db.engine, interval=float(app.config.get("AUDIT_SEQUENCER_INTERVAL", 0.2)),
                                      stop=stop)
                thread = threading.Thread(target=chain_in_background, name="bench-sequencer", daemon=True)
                thread.start()
                # This process's one sequencer thread (so ensure_background starts no second one), stoppable.
                sequencer._thread, sequencer._thread_pid = thread, os.getpid()
            for name, (url, _filters, _before, _stock) in pages.items():
                results[(mode, name)] = serve(url, args.requests)
            if thread is not None:
                stop.set()
                sequencer._wake.set()
                thread.join(timeout=10)
                with app.app_context():
                    sequencer.chain_pending(db.engine)
        app.config["AUDIT_CHAIN_MODE"] = "commit"
        for name, (_url, _filters, _before, stock_url) in pages.items():
            results[("stock", name)] = serve(stock_url, args.stock_requests, warm=2)
        searches = db.session.scalar(text("SELECT count(*) FROM audit_event WHERE action = 'audit.search'"))
        db.session.remove()
        assert searches == 2 * len(pages) * (5 + 1 + args.requests), searches  # one per workbench request

        print(f"server time per request, median and p95 over {args.requests} requests "
              f"({args.stock_requests} for Flask-Admin); deep page = {(args.events - deep) // PAGE:,} "
              f"pages of {PAGE} in; 2 filters = branch {FILTERS['branch']} + action {FILTERS['action']}")
        header = (f"{'':44}{'median':>9}{'p95':>9}{'cpu':>8}{'SQL':>5}{'raw query':>11}"
                  f"{'x raw':>8}{'x Flask-Admin':>15}")
        print(header)
        for name in pages:
            stock_median = results[("stock", name)][0]
            print(f"{'raw query, ' + name:44}{raw_ms[name]:>9.2f}")
            for label, key in (("workbench, chain mode commit", "commit"),
                               ("workbench, chain mode background", "background"),
                               ("Flask-Admin stock list (OFFSET + COUNT)", "stock")):
                median, p95, cpu, per_request = results[(key, name)]
                print(f"{label + ', ' + name:44}{median:>9.2f}{p95:>9.2f}{cpu:>8.2f}{per_request:>5}"
                      f"{raw_ms[name]:>11.2f}{median / raw_ms[name]:>8.1f}{median / stock_median:>15.3f}")
        print(f"every workbench request wrote its audit.search event: {searches:,} of them; "
              f"load average before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
