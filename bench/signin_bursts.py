"""Concurrent sign-in bursts: consistency with the recorded order, "busy" answers, and time.

    .venv/bin/python bench/signin_bursts.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/signin_bursts.py --bursts 100           # SQLite file database

Each burst is 20 simultaneous sign-ins on a fresh wallet, 19 wrong and the right password at
position 1..20 in turn, with the production wait (WALLET_CLAIM_WAIT_SECONDS). Every burst is
replayed in login_attempt.seq order with the sequential rules (tests/faults/test_signin_bursts.py)
and must match the answers. Baseline, measured in the same run: the same 20 attempts one after
another from one thread.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import _common

PASSWORD = "Spring-rain-2468"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bursts", type=int, default=100)
    parser.add_argument("--postgres", help="admin URL; a scratch database is created and dropped")
    args = parser.parse_args()

    _common.quiet_alembic()
    from datetime import date

    from console.demo import demo_resident_id
    from console.extensions import db
    from console.services import customers, wallet_signin
    from console.services.actor import Actor
    from tests.faults.test_signin_bursts import burst, replay

    with _common.scratch_app(args.postgres) as app:
        limit = app.config["WALLET_LOCKOUT_THRESHOLD"]
        backend = db.engine.dialect.name

        def new_wallet(i: int) -> str:
            customer = customers.create_customer(
                db.session, Actor.operator(), name="基准", id_type="resident_id",
                id_number=demo_resident_id(date(1980, 1, 1), i % 1000), mobile=str(13800000000 + i))
            wallet_no = customers.open_wallet(db.session, Actor.operator(), customer, password=PASSWORD).wallet_no
            db.session.commit()
            return wallet_no

        durations, sequential, busy, checked, ok_then_locked, consistent = [], [], 0, [], 0, 0
        for i in range(args.bursts):
            position = i % 20
            passwords = ["wrong-password"] * 20
            passwords[position] = PASSWORD
            wallet_no = new_wallet(2 * i)
            started = time.perf_counter()
            answers = burst(app, wallet_no, passwords)
            durations.append(time.perf_counter() - started)
            busy += sum(1 for a in answers if not isinstance(a, Exception) and a[0] == "busy")
            try:
                order = replay(answers, position, limit, allow_busy=True)
                consistent += 1
                checked.append(order["checked"])
                ok_then_locked += order["right_result"] in wallet_signin.SUCCESS_RESULTS
            except AssertionError as exc:
                print(f"burst {i}: NOT consistent: {exc}")
            # Baseline: the same attempts one by one.
            wallet_no = new_wallet(2 * i + 1)
            started = time.perf_counter()
            for password in passwords:
                wallet_signin.authenticate(db.session, wallet_no, password, commit=db.session.commit,
                                           source_ip="198.51.100.9")
            sequential.append(time.perf_counter() - started)
            db.session.remove()
        wait = app.config["WALLET_CLAIM_WAIT_SECONDS"]

    def q(values, p):
        return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]

    print(f"database: {backend}, bursts: {args.bursts} x 20 attempts, wait {wait} s")
    print(f"consistent with the recorded order: {consistent}/{args.bursts}; 'busy' answers: {busy}; "
          f"right password answered ok before the lock: {ok_then_locked}; "
          f"passwords checked per burst: max {max(checked) if checked else '-'}")
    print(f"{'20 attempts one by one (baseline)':<36} p50 {q(sequential, 50):6.2f} s  p95 {q(sequential, 95):6.2f} s")
    print(f"{'20 attempts at once':<36} p50 {q(durations, 50):6.2f} s  p95 {q(durations, 95):6.2f} s  "
          f"{statistics.median(durations) / statistics.median(sequential):5.2f} x baseline")
    return 0 if consistent == args.bursts else 1


if __name__ == "__main__":
    sys.exit(main())
