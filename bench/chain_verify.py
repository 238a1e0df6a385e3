"""Chain verification rate against plain hashlib over the same canonical bytes, same run.

    .venv/bin/python bench/chain_verify.py [--events 50000] [--postgres URL]
"""
from __future__ import annotations

import argparse
import hashlib
import time

import _common


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--postgres")
    args = parser.parse_args()
    _common.quiet_alembic()
    with _common.scratch_app(args.postgres) as app:
        from console.extensions import db
        from console.models.audit import AuditEvent
        from console.services import audit
        from console.services.actor import Actor

        actor = Actor(kind="staff", staff_id=7, employee_no="T1001", role="teller", branch_code="BJ-001",
                      source_ip="10.0.0.1", session_id="abcd", channel="counter")
        start = time.perf_counter()
        for i in range(args.events):
            audit.record(db.session, actor, "wallet.unlock", reason_code="forgot_password", customer_ref="C000000001",
                         before={"lock_kind": "temporary"}, after={"lock_kind": None}, details={"i": i})
            if i % 1000 == 999:
                db.session.commit()
        db.session.commit()
        write_s = time.perf_counter() - start

        start = time.perf_counter()
        report = audit.verify_chain(db.session)
        verify_s = time.perf_counter() - start
        assert report.intact and report.count == args.events

        rows = [{k: getattr(e, k) for k in audit.CHAINED_FIELDS}
                for e in db.session.query(AuditEvent).order_by(AuditEvent.seq)]
        blobs = [(r["prev_hash"].encode(), audit.canonical(r)) for r in rows]
        start = time.perf_counter()
        for prev, body in blobs:
            hashlib.sha256(prev + body).hexdigest()
        raw_s = time.perf_counter() - start
        backend = db.engine.dialect.name
        print(f"{backend}: {args.events} events appended in {write_s:.1f} s ({args.events / write_s:,.0f}/s, "
              f"1,000 per commit)")
        print(f"{'plain hashlib over the same bytes':<36}{args.events / raw_s:>12,.0f} events/s   baseline")
        print(f"{'flask audit verify (read + check)':<36}{args.events / verify_s:>12,.0f} events/s   "
              f"{raw_s / verify_s:.3f} x baseline")


if __name__ == "__main__":
    main()
