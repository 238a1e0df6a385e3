"""Wallet sign-in API throughput against raw argon2id verification on the same cores.

    .venv/bin/python bench/wallet_signin.py                      # SQLite file database
    .venv/bin/python bench/wallet_signin.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/wallet_signin.py --processes 2 --postgres postgresql+psycopg://...   # as deployed

With ``--processes N`` the API runs as deployed (gunicorn, N gthread workers, production settings,
Redis for the rate-limit counters) and raw argon2id runs in N processes; the client keeps N
requests in flight (``--clients``), as many as the baseline's verifications at once. ``--wallets K`` spreads the sign-ins over K
wallets (1: every request on the same wallet, the worst case for the lockout engine's ordering).

Both figures are measured in the same run with the same number of threads. The baseline is the
check the API makes (``console.passwords.verify_password``: at most one thread per core on a
hash's lanes); argon2-cffi's own ``PasswordHasher.verify`` (a thread per lane) is measured beside
it, in every round. The API runs in a
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

from _common import machine_busy  # noqa: E402

PASSWORD = "Spring-rain-2468"


def _checker(how: str):
    """``console``: the check the API makes (console.passwords.verify_password, at most one thread
    per core); ``library``: argon2-cffi's own ``PasswordHasher.verify`` (one thread per lane)."""
    from console.passwords import hasher, verify_password

    check = verify_password if how == "console" else hasher.verify

    def checked(stored: str, password: str) -> None:
        if not check(stored, password):
            raise SystemExit(f"the {how} check refused the right password")

    return checked


def raw_argon2(threads: int, seconds: float, how: str = "console") -> float:
    from console.passwords import hasher

    stored, check = hasher.hash(PASSWORD), _checker(how)
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def work(i):
        while time.perf_counter() < stop:
            check(stored, PASSWORD)
            counts[i] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return sum(counts) / (time.perf_counter() - start)


def _verify_for(seconds: float, how: str = "console") -> int:
    from console.passwords import hasher

    stored, check = hasher.hash(PASSWORD), _checker(how)
    stop, count = time.perf_counter() + seconds, 0
    while time.perf_counter() < stop:
        check(stored, PASSWORD)
        count += 1
    return count


def raw_argon2_processes(pool, processes: int, seconds: float, how: str = "console") -> float:
    """Verifications per second of ``processes`` processes of ``pool`` (started and warmed up before)."""
    start = time.perf_counter()
    counts = pool.starmap(_verify_for, [(seconds, how)] * processes)
    return sum(counts) / (time.perf_counter() - start)


def api_rate(port: int, key: str, wallet_nos: list[str], password: str, threads: int,
             seconds: float) -> tuple[float, dict]:
    stop = time.perf_counter() + seconds
    counts, results = [0] * threads, {}
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def work(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps({"wallet_no": wallet_nos[i % len(wallet_nos)], "password": password,
                           "client_ip": "198.51.100.9"})
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
    parser.add_argument("--processes", type=int, help="run the API under gunicorn with this many workers")
    parser.add_argument("--wallets", type=int, default=1, help="spread the sign-ins over this many wallets")
    parser.add_argument("--rounds", type=int, default=3, help="with --processes: rounds of alternated phases")
    parser.add_argument("--clients", type=int, help="with --processes: requests in flight (default: one per process, "
                                                      "as many as raw argon2id runs at once)")
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
            wallet_nos = []
            for n in range(args.wallets):
                customer = customers.create_customer(db.session, Actor.operator(), name="基准",
                                                     id_type="resident_id",
                                                     id_number=demo_resident_id(date(1980, 1, 1), 7 + n),
                                                     mobile=f"138{n:08d}")
                wallet_nos.append(customers.open_wallet(db.session, Actor.operator(), customer,
                                                        password=PASSWORD).wallet_no)
            db.session.commit()
            db.session.remove()
        key = app.config["WALLET_SERVICE_KEY"]
        if args.processes:
            return _as_deployed(args, url, wallet_nos)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(f"database: {make_url(url).get_backend_name()}, threads: {args.threads}, "
              f"{args.seconds:.0f} s per phase, cores: {os.cpu_count()}, wallets: {args.wallets}")
        raw = raw_argon2(args.threads, args.seconds)
        library = raw_argon2(args.threads, args.seconds, "library")
        right, right_results = api_rate(server.server_port, key, wallet_nos, PASSWORD, args.threads, args.seconds)
        wrong, wrong_results = api_rate(server.server_port, key, wallet_nos, "wrong-password", args.threads,
                                        args.seconds)
        server.shutdown()
        print(f"{'raw argon2id verify':<34}{raw:>9.1f} /s   baseline (the API's check)")
        print(f"{'argon2-cffi PasswordHasher.verify':<34}{library:>9.1f} /s   {library / raw:>5.2f} x baseline")
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


def _as_deployed(args, url: str, wallet_nos: list[str]) -> int:
    """gunicorn with ``args.processes`` workers and production settings, against raw argon2id in as
    many processes, measured in the same run."""
    from tests.nodes import Node, node_env

    env = node_env(url, "redis://127.0.0.1:6379/15", CONSOLE_WORKERS=str(args.processes),
                   CONSOLE_WALLET_LOCKOUT_THRESHOLD=str(10**9), CONSOLE_RISK_FREEZE_MIN_FAILURES=str(10**9),
                   CONSOLE_LOG_LEVEL="WARNING")
    node = Node(env)
    try:
        node.wait_ready()
        key = env["CONSOLE_WALLET_SERVICE_KEY"]
        clients = args.clients or args.processes
        print(f"database: {make_url(url).get_backend_name()}, gunicorn workers: {args.processes}, "
              f"client connections: {clients}, {args.seconds:.0f} s per phase, cores: {os.cpu_count()}, "
              f"wallets: {args.wallets}")
        api_rate(node.port, key, wallet_nos, PASSWORD, clients, 1.0)  # warm the workers up
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(args.processes)
        pool.map(_verify_for, [0.5] * args.processes)  # started, imported and warm before anything is measured
        # Alternate the phases, round after round: whatever else the machine is doing weighs on
        # both sides of each ratio alike.
        rows = []
        for round_ in range(args.rounds):
            cpu = machine_busy()
            raw = raw_argon2_processes(pool, args.processes, args.seconds)
            raw_cpu, cpu = machine_busy() - cpu, machine_busy()
            right, right_results = api_rate(node.port, key, wallet_nos, PASSWORD, clients, args.seconds)
            right_cpu, cpu = machine_busy() - cpu, machine_busy()
            wrong, wrong_results = api_rate(node.port, key, wallet_nos, "wrong-password", clients, args.seconds)
            wrong_cpu = machine_busy() - cpu
            library = raw_argon2_processes(pool, args.processes, args.seconds, "library")
            # CPU seconds per operation, every process included.
            per = (raw_cpu / (raw * args.seconds), right_cpu / sum(right_results.values()),
                   wrong_cpu / sum(wrong_results.values()))
            rows.append((raw, right, wrong, *per, library))
            print(f"round {round_ + 1}: raw {raw:.1f}/s (argon2-cffi's verify {library:.1f}/s), right {right:.1f}/s "
                  f"({right / raw:.2f} x), wrong {wrong:.1f}/s ({wrong / raw:.2f} x); CPU ms per operation: "
                  f"raw {per[0] * 1000:.0f}, right {per[1] * 1000:.0f}, wrong {per[2] * 1000:.0f}")
        pool.close()
    finally:
        node.stop()
    import statistics

    def median(values):
        return statistics.median(list(values))

    raw = median(r[0] for r in rows)
    print(f"{'raw argon2id verify':<34}{raw:>9.1f} /s   baseline ({args.processes} processes, the API's check; "
          f"median of rounds)")
    print(f"{'argon2-cffi PasswordHasher.verify':<34}{median(r[6] for r in rows):>9.1f} /s   "
          f"{median(r[6] / r[0] for r in rows):>5.2f} x baseline ({args.processes} processes, a thread per lane)")
    for name, i in (("right password", 1), ("wrong password", 2)):
        print(f"{'wallet API sign-in, ' + name:<34}{median(r[i] for r in rows):>9.1f} /s   "
              f"{median(r[i] / r[0] for r in rows):>5.2f} x baseline (median of the rounds' ratios; "
              f"{median(r[i] / r[6] for r in rows):.2f} x argon2-cffi's verify);   "
              f"CPU per operation {median(r[i + 3] / r[3] for r in rows):.3f} x raw's, so "
              f"{median(r[3] / r[i + 3] for r in rows):.2f} x raw's throughput on a saturated machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
