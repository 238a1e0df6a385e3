"""Wallet sign-in API throughput against raw argon2id verification on the same cores.

    .venv/bin/python bench/wallet_signin.py                      # SQLite file database
    .venv/bin/python bench/wallet_signin.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Both figures are measured in the same run with the same number of threads. The API runs in a
threaded WSGI server on 127.0.0.1 and is called over HTTP with keep-alive; the lockout
threshold is raised for the wrong-password phase so every request pays the full path (claim,
commit, argon2 check, attempt log, risk evaluation, commit) instead of the cheap refusal.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

PASSWORD = "Spring-rain-2468"


def raw_argon2(threads: int, seconds: float) -> float:
    from console.passwords import hasher

    stored = hasher.hash(PASSWORD)
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def work(i):
        while time.perf_counter() < stop:
            hasher.verify(stored, PASSWORD)
            counts[i] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return sum(counts) / (time.perf_counter() - start)


def api_rate(port: int, key: str, wallet_no: str, password: str, threads: int, seconds: float) -> tuple[float, dict]:
    stop = time.perf_counter() + seconds
    counts, results = [0] * threads, {}
    lock = threading.Lock()
    body = json.dumps({"wallet_no": wallet_no, "password": password, "client_ip": "198.51.100.9"})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def work(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.perf_counter() < stop:
            conn.request("POST", "/api/wallet/v1/sign-in", body=body, headers=headers)
            response = conn.getresponse()
            result = json.loads(response.read()).get("result", f"http {response.status}")
            with lock:
                results[result] = results.get(result, 0) + 1
            counts[i] += 1
        conn.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return sum(counts) / (time.perf_counter() - start), results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--postgres", help="admin URL; a scratch database is created and dropped")
    args = parser.parse_args()

    scratch = None
    if args.postgres:
        scratch = f"bc_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{scratch}"'))
        url = make_url(args.postgres).set(database=scratch).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"

    from console import create_app
    from console.extensions import db

    app = create_app("testing", {"DATABASE_URL": url, "WALLET_LOCKOUT_THRESHOLD": 10**9,
                                 "RISK_FREEZE_MIN_FAILURES": 10**9})
    try:
        with app.app_context():
            from flask_migrate import upgrade

            from console.demo import demo_resident_id
            from console.services import customers
            from console.services.actor import Actor
            from datetime import date

            upgrade()
            customer = customers.create_customer(db.session, Actor.operator(), name="基准", id_type="resident_id",
                                                 id_number=demo_resident_id(date(1980, 1, 1), 7),
                                                 mobile="13800000000")
            wallet_no = customers.open_wallet(db.session, Actor.operator(), customer, password=PASSWORD).wallet_no
            db.session.commit()
            db.session.remove()
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        key = app.config["WALLET_SERVICE_KEY"]
        print(f"database: {make_url(url).get_backend_name()}, threads: {args.threads}, "
              f"{args.seconds:.0f} s per phase, cores: {os.cpu_count()}")
        raw = raw_argon2(args.threads, args.seconds)
        right, right_results = api_rate(server.server_port, key, wallet_no, PASSWORD, args.threads, args.seconds)
        wrong, wrong_results = api_rate(server.server_port, key, wallet_no, "wrong-password", args.threads, args.seconds)
        server.shutdown()
        print(f"{'raw argon2id verify':<34}{raw:>9.1f} /s   baseline")
        print(f"{'wallet API sign-in, right password':<34}{right:>9.1f} /s   {right / raw:>5.2f} x baseline   {right_results}")
        print(f"{'wallet API sign-in, wrong password':<34}{wrong:>9.1f} /s   {wrong / raw:>5.2f} x baseline   {wrong_results}")
    finally:
        with app.app_context():
            db.engine.dispose()
        if scratch:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
            admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
