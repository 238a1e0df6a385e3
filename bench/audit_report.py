"""A 10,000-row audit PDF report: time and peak memory, against the same rows as streamed CSV.

    .venv/bin/python bench/audit_report.py [--rows 10000]
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

import _common
from sqlalchemy import text


def measure(fn):
    """Time a run without tracing (tracemalloc slows Python code many times over), then trace a
    second run for the peak of Python allocations."""
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    _common.quiet_alembic()
    with _common.scratch_app(PDF_REPORT_ROWS_PER_VOLUME=10**9) as app:
        from console.extensions import db
        from console.services import audit_export, audit_query
        from console.services.actor import Actor

        rows = [{"seq": i, "occurred_at": "2026-11-25 06:00:00.000000", "actor_type": "staff",
                 "actor_employee_no": f"T{1000 + i % 50}", "actor_role": "teller", "actor_branch": "BJ-001",
                 "channel": "counter", "action": "wallet.unlock", "outcome": "success",
                 "reason_code": "forgot_password", "customer_ref": f"C{i:09d}", "case_ref": f"K2026112500{i:04d}",
                 "chain_version": 1, "prev_hash": "0" * 64, "hash": "1" * 64} for i in range(1, args.rows + 1)]
        db.session.execute(text(
            "INSERT INTO audit_event (seq, occurred_at, actor_type, actor_employee_no, actor_role, actor_branch, "
            "channel, action, outcome, reason_code, customer_ref, case_ref, chain_version, prev_hash, hash) VALUES "
            "(:seq, :occurred_at, :actor_type, :actor_employee_no, :actor_role, :actor_branch, :channel, :action, "
            ":outcome, :reason_code, :customer_ref, :case_ref, :chain_version, :prev_hash, :hash)"), rows)
        db.session.commit()
        actor = Actor(kind="staff", role="auditor", staff_id=1, employee_no="U1", branch_code="HO-000")
        filters = audit_query.parse_filters({"action": "wallet.unlock"})
        (csv_bytes, _), csv_s, csv_peak = measure(
            lambda: (sum(len(line) for line in audit_export.lines(db.session, actor, filters, "csv", {})), None))
        (pdf, count, _more), pdf_s, pdf_peak = measure(lambda: audit_export.pdf_volume(db.session, actor, filters, 1))
        print(f"rows: {count}, PDF {len(pdf) / 1024 / 1024:.2f} MiB, CSV {csv_bytes / 1024 / 1024:.2f} MiB")
        print(f"{'streamed CSV export':<28}{csv_s:>7.2f} s  peak {csv_peak / 1024 / 1024:>6.1f} MiB   baseline")
        print(f"{'PDF report (canvas)':<28}{pdf_s:>7.2f} s  peak {pdf_peak / 1024 / 1024:>6.1f} MiB   "
              f"{pdf_s / csv_s:.1f} x time, {pdf_peak / max(csv_peak, 1):.1f} x memory")


if __name__ == "__main__":
    main()
