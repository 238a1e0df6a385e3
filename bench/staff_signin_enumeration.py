"""Can the sign-in form confirm an employee number by its timing? (issue #11 part 4)

Times POST /auth/login for an unknown number (the baseline, measured in the same run), a real
account with a wrong password, a locked account (with its right password) and an account of an
inactive branch. The attempts are interleaved round-robin so drift hits every case alike. Each
answer must be the same page; the ratio to the baseline should be ~1.00.

    .venv/bin/python bench/staff_signin_enumeration.py [--runs 30] [--postgres URL]
"""
from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta

import _common

PASSWORD = "Correct-horse-42"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--postgres")
    args = parser.parse_args()
    _common.quiet_alembic()
    with _common.scratch_app(args.postgres, WTF_CSRF_ENABLED=False) as app:
        from sqlalchemy import update

        from console.extensions import db
        from console.models.staff import Branch, Staff
        from console.passwords import hash_password
        from console.timeutil import utcnow

        branches = {code: Branch(code=code, name=code, kind="branch", active=code != "OFF-1")
                    for code in ("BJ-1", "OFF-1")}
        db.session.add_all(branches.values())
        hashed = hash_password(PASSWORD)
        for number, code in (("T100", "BJ-1"), ("T200", "BJ-1"), ("T300", "OFF-1")):
            db.session.add(Staff(employee_no=number, name=number, role="teller", branch=branches[code],
                                 active=True, password_hash=hashed, must_change_password=False,
                                 created_at=utcnow(), session_generation=1, failed_signins=0))
        db.session.commit()
        cases = {
            "unknown number": ("N999", "Wrong-pass-123"),
            "wrong password": ("T100", "Wrong-pass-123"),
            "locked account": ("T200", PASSWORD),
            "inactive branch": ("T300", PASSWORD),
        }
        client = app.test_client()
        times: dict[str, list[float]] = {name: [] for name in cases}
        bodies: dict[str, set] = {name: set() for name in cases}
        for i in range(args.runs + 2):  # the first two rounds warm up and are not counted
            for name, (number, password) in cases.items():
                # Outside the timing: keep T100 below the lock and T200 locked.
                db.session.execute(update(Staff).where(Staff.employee_no == "T100").values(failed_signins=0, locked_until=None))
                db.session.execute(update(Staff).where(Staff.employee_no == "T200")
                                   .values(failed_signins=5, locked_until=utcnow() + timedelta(hours=1)))
                db.session.commit()
                start = time.perf_counter()
                response = client.post("/auth/login", data={"employee_no": number, "password": password})
                elapsed = time.perf_counter() - start
                if i >= 2:
                    times[name].append(elapsed)
                    page = response.get_data(as_text=True).replace(number, "N")
                    bodies[name].add((response.status_code, _strip_nonce(page)))
        baseline = statistics.median(times["unknown number"])
        print(f"{db.engine.dialect.name}: POST /auth/login, {args.runs} runs each, medians")
        for name, values in times.items():
            print(f"  {name:16s} {statistics.median(values) * 1000:7.1f} ms  "
                  f"(p10 {_pct(values, 10) * 1000:6.1f}, p90 {_pct(values, 90) * 1000:6.1f})  "
                  f"ratio to unknown {statistics.median(values) / baseline:5.2f}")
        distinct = set().union(*bodies.values())
        print(f"  distinct answers across all cases: {len(distinct)} (1 means identical)")


def _strip_nonce(page: str) -> str:
    import re

    return re.sub(r'nonce="[^"]*"', "", page)


def _pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


if __name__ == "__main__":
    main()
