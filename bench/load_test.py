"""Mixed-workload load test: two gunicorn nodes against one PostgreSQL and one Redis, with
1,000,000 audit events and 100,000 customers, and the same workload on a single node in the
same run. Reports throughput and p50/p95/p99 per operation.

    .venv/bin/python bench/load_test.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Operations (weights): wallet sign-in through the wallet API (right password 80 %, wrong 20 %),
staff search through the staff API, a counter visit through the staff API (open case, verify the
ID document, unlock a locked wallet), and an auditor's search page in the console.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import _common

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, text  # noqa: E402

from tests.nodes import Browser, Node, node_env  # noqa: E402

PASSWORD = "Spring-rain-2468"
WEIGHTS = {"wallet_signin": 50, "staff_search": 25, "counter_unlock": 10, "audit_search": 15}
AUDIT_FILL = """
INSERT INTO audit_event (seq, occurred_at, actor_type, actor_id, actor_employee_no, actor_role, actor_branch,
                         channel, action, outcome, customer_ref, chain_version, prev_hash, hash)
SELECT g, now() - ((CAST(:n AS bigint) - g) * interval '2 seconds'), 'staff', g % 500, 'T' || (1000 + g % 500),
       (array['teller','agent','supervisor'])[1 + g % 3], (array['BJ-001','SH-002','CC-95588'])[1 + g % 3],
       'counter', (array['wallet.unlock','customer.view','customer.search','wallet.reset_password'])[1 + g % 4],
       CASE WHEN g % 20 = 0 THEN 'denied' ELSE 'success' END, 'C' || lpad((g % 100000)::text, 9, '0'),
       1, repeat('0', 64), repeat('1', 64)
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) g
"""


def load_data(app, customers_n: int, events_n: int):
    """Bulk-load customers, wallets, registry entries and audit events; returns what the workload needs."""
    from console import crypto
    from console.demo import demo_resident_id
    from console.extensions import db
    from console.identity import mask_id_number, mask_mobile
    from console.models.customer import Customer, Wallet
    from console.models.service import RegistryEntry
    from console.models.staff import Branch, Staff
    from console.passwords import hash_password
    from console.services.customers import document_index, mobile_index
    from console.timeutil import utcnow

    start = time.perf_counter()
    for lo in range(1, events_n + 1, 200_000):
        db.session.execute(text(AUDIT_FILL), {"n": events_n, "lo": lo, "hi": min(lo + 199_999, events_n)})
        db.session.commit()
    db.session.execute(text("UPDATE audit_chain_head SET seq = :n, hash = (SELECT hash FROM audit_event WHERE seq = :n)"), {"n": events_n})
    db.session.commit()
    events_s = time.perf_counter() - start

    start = time.perf_counter()
    now = utcnow()
    hashed = hash_password(PASSWORD)  # one hash for every wallet: the load is the checks, not the set-up
    people = []
    for chunk in range(0, customers_n, 5000):
        customer_rows, registry_rows = [], []
        for i in range(chunk, min(chunk + 5000, customers_n)):
            born = date(1960, 1, 1) + timedelta(days=i % 15000)
            id_number = demo_resident_id(born, i % 1000, region=f"{110100 + i // 1000 % 900:06d}")
            mobile = f"139{i:08d}"
            customer_rows.append({
                "customer_no": f"C{i:09d}", "name": f"客户{i}", "id_type": "resident_id",
                "id_number_enc": crypto.encrypt(id_number, context="customer.id_number"),
                "id_number_index": document_index("resident_id", id_number), "id_number_masked": mask_id_number(id_number),
                "id_expires_on": date(2036, 1, 1), "birth_date": born,
                "mobile_enc": crypto.encrypt(mobile, context="customer.mobile"), "mobile_index": mobile_index(mobile),
                "mobile_masked": mask_mobile(mobile), "created_at": now})
            registry_rows.append({"id_number_index": document_index("resident_id", id_number), "name": f"客户{i}",
                                  "status": "valid"})
            people.append((f"C{i:09d}", id_number))
        db.session.execute(insert(Customer), customer_rows)
        db.session.execute(insert(RegistryEntry), registry_rows)
        db.session.commit()
    ids = dict(db.session.execute(text("SELECT customer_no, id FROM customer")).all())
    wallets = []
    for chunk in range(0, customers_n, 5000):
        rows = []
        for i in range(chunk, min(chunk + 5000, customers_n)):
            wallet_no = f"0031{i:012d}"
            locked = i % 10 == 0  # one wallet in ten waits at the counter for an unlock
            rows.append({"wallet_no": wallet_no, "customer_id": ids[f"C{i:09d}"], "tier": 4, "status": "active",
                         "created_at": now, "password_hash": hashed, "password_set_at": now,
                         "must_change_password": False, "failed_count": 5 if locked else 0,
                         "lock_kind": "until_unlock" if locked else None, "locked_at": now if locked else None})
            wallets.append((wallet_no, locked))
        db.session.execute(insert(Wallet), rows)
        db.session.commit()
    branch = Branch(code="BJ-001", name="北京西城支行", kind="branch", active=True)
    head = Branch(code="HO-000", name="总行", kind="head_office", active=True)
    import pyotp

    secrets_by_role = {}
    for role, emp, br in (("teller", "T1001", branch), ("auditor", "U4001", head)):
        secret = pyotp.random_base32()
        staff = Staff(employee_no=emp, name=emp, role=role, branch=br, active=True,
                      password_hash=hash_password("Correct-horse-42"), must_change_password=False,
                      created_at=now, session_generation=1, failed_signins=0)
        db.session.add(staff)
        db.session.flush()
        staff.totp_secret_enc = crypto.encrypt(secret, context=f"staff.totp:{staff.id}")
        secrets_by_role[role] = (emp, secret)
    db.session.commit()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    print(f"loaded {events_n:,} audit events in {events_s:.0f} s, {customers_n:,} customers and wallets in "
          f"{time.perf_counter() - start:.0f} s")
    return people, wallets, secrets_by_role


class Workload:
    def __init__(self, urls, people, wallets, secrets_by_role, wallet_key):
        import pyotp

        self.urls, self.people, self.wallet_key = urls, people, wallet_key
        self.unlocked = [w for w, locked in wallets if not locked]
        self.locked = [i for i, (_w, locked) in enumerate(wallets) if locked]
        self.lock = threading.Lock()
        self.timings = defaultdict(list)
        self.errors = defaultdict(int)
        emp, secret = secrets_by_role["teller"]
        status, _h, body = Browser().request(urls[0] + "/api/v1/tokens", json_body={
            "employee_no": emp, "password": "Correct-horse-42", "totp_code": pyotp.TOTP(secret).now()})
        assert status == 201, body
        self.token = json.loads(body)["token"]
        emp, secret = secrets_by_role["auditor"]
        self.auditor = Browser()
        self.auditor.post_form(urls[0], "/auth/login", {"employee_no": emp, "password": "Correct-horse-42"})
        step = int(time.time()) // 30 + 1  # the teller used this window's code
        status, _h, _b = self.auditor.post_form(urls[0], "/auth/totp", {"code": pyotp.TOTP(secret).at(step * 30)})
        assert status == 302, status

    def api(self, url, path, body):
        return Browser().request(url + path, json_body=body if body is not None else {},
                                 headers={"Authorization": f"Bearer {self.token}"})

    def run_one(self, rng: random.Random, url: str) -> None:
        op = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        start = time.perf_counter()
        ok = True
        if op == "wallet_signin":
            wallet = rng.choice(self.unlocked)
            password = PASSWORD if rng.random() < 0.8 else "wrong-password"
            status, _h, _b = Browser().request(url + "/api/wallet/v1/sign-in", json_body={
                "wallet_no": wallet, "password": password, "client_ip": f"198.51.{rng.randrange(256)}.{rng.randrange(256)}"},
                headers={"Authorization": f"Bearer {self.wallet_key}"})
            ok = status == 200
        elif op == "staff_search":
            wallet = rng.choice(self.unlocked)
            status, _h, _b = self.api(url, "/api/v1/customers/search", {"kind": "wallet_no", "value": wallet})
            ok = status == 200
        elif op == "counter_unlock":
            with self.lock:
                index = self.locked.pop() if self.locked else None
            if index is None:
                return
            customer_no, id_number = self.people[index]
            status, _h, body = self.api(url, f"/api/v1/customers/{customer_no}/cases", None)
            if status == 201:
                case_no = json.loads(body)["case_no"]
                status, _h, _b = self.api(url, f"/api/v1/cases/{case_no}/verifications/counter",
                                          {"id_type": "resident_id", "id_number": id_number, "photo_matches": True})
                status, _h, _b = self.api(url, f"/api/v1/cases/{case_no}/operations", {
                    "wallet_no": f"0031{index:012d}", "operation": "unlock", "reason_code": "forgot_password"})
            ok = status == 200
        else:
            filters = rng.choice(["", "?branch=SH-002", "?action=wallet.", "?outcome=denied",
                                  f"?customer=C{rng.randrange(100000):09d}"])
            status, _h, _b = self.auditor.request(url + "/audit/events" + filters)
            ok = status == 200
        elapsed = (time.perf_counter() - start) * 1000
        with self.lock:
            self.timings[op].append(elapsed)
            if not ok:
                self.errors[op] += 1

    def run(self, urls, threads: int, seconds: float) -> float:
        self.timings.clear()
        self.errors.clear()
        deadline = time.perf_counter() + seconds

        def worker(n):
            rng = random.Random(n)
            i = 0
            while time.perf_counter() < deadline:
                self.run_one(rng, urls[(n + i) % len(urls)])
                i += 1

        start = time.perf_counter()
        pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return time.perf_counter() - start


def table(title: str, workload: Workload, elapsed: float) -> str:
    lines = [f"### {title}", "", "| operation | requests | errors | throughput /s | p50 ms | p95 ms | p99 ms |",
             "|---|---|---|---|---|---|---|"]
    total = 0
    for op in WEIGHTS:
        samples = sorted(workload.timings.get(op, []))
        if not samples:
            continue
        total += len(samples)
        q = statistics.quantiles(samples, n=100) if len(samples) > 1 else [samples[0]] * 99
        lines.append(f"| {op} | {len(samples)} | {workload.errors.get(op, 0)} | {len(samples) / elapsed:.1f} | "
                     f"{q[49]:.0f} | {q[94]:.0f} | {q[98]:.0f} |")
    lines.append(f"| all | {total} | {sum(workload.errors.values())} | {total / elapsed:.1f} | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", required=True)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    _common.quiet_alembic()
    with _common.scratch_app(args.postgres) as app:
        from console.extensions import db

        people, wallets, secrets_by_role = load_data(app, args.customers, args.events)
        url = db.engine.url.render_as_string(hide_password=False)
        env = node_env(url, args.redis, CONSOLE_WORKERS="2", CONSOLE_THREADS="4")
        nodes = [Node(env), Node(env)]
        try:
            for node in nodes:
                node.wait_ready(timeout=120)
            from base64 import urlsafe_b64encode

            workload = Workload([n.url for n in nodes], people, wallets, secrets_by_role,
                                urlsafe_b64encode(b"w" * 32).decode())
            two = workload.run([n.url for n in nodes], args.threads, args.seconds)
            report_two = table(f"Two nodes ({args.threads} client threads, {args.seconds:.0f} s)", workload, two)
            one = workload.run([nodes[0].url], args.threads, args.seconds)
            report_one = table(f"One node ({args.threads} client threads, {args.seconds:.0f} s)", workload, one)
        finally:
            for node in nodes:
                node.stop()
        print(report_two)
        print()
        print(report_one)


if __name__ == "__main__":
    main()
