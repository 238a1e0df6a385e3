"""Chain verification rate against plain hashlib over the same canonical bytes, same run (issue #14).

    .venv/bin/python bench/chain_verify.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres \
        [--events 1000000] [--workers 2]
    .venv/bin/python bench/chain_verify.py --events 50000            # SQLite

The chain is built the way the sequencer builds it (chain version 2: one canonical line per
event, hashed with its predecessor's hash inside), written with COPY, and the chain head set.
Then it times ``audit.verify_chain`` (what ``flask audit verify`` runs) with one and with
``--workers`` processes, plain ``hashlib.sha256`` over the same lines in one process (the least
any verifier must do), and the command itself as an auditor runs it: ``flask audit verify`` in a
new process (testing configuration, no checkpoints or anchors in the bench database), start-up and
its own audit event included.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import _common

ACTIONS = ("wallet.unlock", "wallet.reset_password", "verify.phone", "case.open", "case.close", "receipt.issue")


def build_lines(n: int) -> tuple[list[bytes], str]:
    """n chained events as their canonical lines (with the hash appended, COPY's text format)."""
    from console import audit_verifier

    start = datetime.now(timezone.utc) - timedelta(hours=1)
    prev = audit_verifier.GENESIS_HASH
    lines = []
    for i in range(1, n + 1):
        row = {
            "seq": i, "occurred_at": start + timedelta(microseconds=i * 3), "actor_type": "staff",
            "actor_id": 7 + i % 40, "actor_employee_no": f"T{1001 + i % 40}", "actor_role": "teller",
            "actor_branch": f"BJ-{i % 12:03d}", "source_ip": "10.0.0.1", "session_id": "abcd1234",
            "channel": "counter", "action": ACTIONS[i % len(ACTIONS)], "outcome": "success",
            "reason_code": "forgot_password", "customer_ref": f"C{i % 50000:09d}", "case_ref": f"K{i // 5:08d}",
            "verification_id": None, "approval_id": None, "receipt_no": None,
            "before_state": '{"lock_kind":"temporary"}', "after_state": '{"lock_kind":null}',
            "details": json.dumps({"n": i, "note": "电子钱包解锁"}, ensure_ascii=False), "chain_version": 2,
            "prev_hash": prev,
        }
        line = audit_verifier.encode_v2(row)
        prev = hashlib.sha256(line).hexdigest()
        lines.append(line + b"\t" + prev.encode())
    return lines, prev


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--workers", default="2", help="comma-separated worker counts to time (1 is always timed)")
    parser.add_argument("--postgres")
    args = parser.parse_args()
    _common.quiet_alembic()
    with _common.scratch_app(args.postgres) as app:
        from sqlalchemy import text

        from console import audit_verifier
        from console.extensions import db
        from console.services import audit

        t0 = time.perf_counter()
        lines, head = build_lines(args.events)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if db.engine.dialect.name == "postgresql":
            conn = db.session.connection().connection.driver_connection
            columns = ", ".join(audit.CHAINED_FIELDS + ("hash",))
            with conn.cursor() as cur, cur.copy(f"COPY audit_event ({columns}) FROM STDIN") as copy:
                for k in range(0, len(lines), 10_000):
                    copy.write(b"\n".join(lines[k:k + 10_000]) + b"\n")
        else:
            from console.models.audit import AuditEvent

            rows = []
            for line in lines:
                body, _, digest = line.rpartition(b"\t")
                row = audit_verifier.decode_v2(body)
                row["occurred_at"] = datetime.fromisoformat(row["occurred_at"])
                row["hash"] = digest.decode()
                rows.append(row)
            for k in range(0, len(rows), 5000):
                db.session.execute(AuditEvent.__table__.insert(), rows[k:k + 5000])
        db.session.execute(text("UPDATE audit_chain_head SET seq = :s, hash = :h WHERE id = 1"),
                           {"s": args.events, "h": head})
        db.session.commit()
        load_s = time.perf_counter() - t0
        db.session.remove()

        bodies = [line[:-65] for line in lines]
        t0 = time.perf_counter()
        for body in bodies:
            hashlib.sha256(body).hexdigest()
        raw_s = time.perf_counter() - t0

        timings = {}
        for workers in sorted({1, *(int(w) for w in args.workers.split(","))}):
            best = None
            for _ in range(2):
                t0 = time.perf_counter()
                report = audit.verify_chain(db.session, workers=workers)
                elapsed = time.perf_counter() - t0
                db.session.rollback()
                assert report.intact and report.count == args.events, report
                best = elapsed if best is None else min(best, elapsed)
            timings[workers] = best

        command = None
        if db.engine.dialect.name == "postgresql":
            env = {**os.environ, "CONSOLE_ENV": "testing", "FLASK_APP": "wsgi.py",
                   "CONSOLE_DATABASE_URL": db.engine.url.render_as_string(hide_password=False)}
            for _ in range(2):
                t0 = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "flask", "audit", "verify"], env=env,
                                      cwd=_common.ROOT, capture_output=True, text=True)
                elapsed = time.perf_counter() - t0
                assert done.returncode == 0, done.stdout + done.stderr
                command = elapsed if command is None else min(command, elapsed)

        backend = db.engine.dialect.name
        n = args.events
        print(f"{backend}: {n:,} events (chain version 2), built in {build_s:.1f} s, loaded in {load_s:.1f} s")
        print(f"{'plain hashlib.sha256 over the same lines (1 process)':<58}{n / raw_s:>12,.0f} events/s "
              f"{raw_s:>6.2f} s   baseline")
        for workers, elapsed in timings.items():
            print(f"{f'audit.verify_chain, read + check, {workers} process(es)':<58}{n / elapsed:>12,.0f} events/s "
                  f"{elapsed:>6.2f} s   {raw_s / elapsed:.2f} x baseline")
        if command is not None:
            print(f"{'flask audit verify, a new process (default workers)':<58}{n / command:>12,.0f} events/s "
                  f"{command:>6.2f} s   {raw_s / command:.2f} x baseline")


if __name__ == "__main__":
    main()
