"""Self-service recovery: does the start take as long whether or not the details match a wallet?

    .venv/bin/python bench/recovery_enumeration.py                      # SQLite file database
    .venv/bin/python bench/recovery_enumeration.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Starts are sent over HTTP (a threaded WSGI server on 127.0.0.1, keep-alive) in a shuffled mix of
four kinds: a wallet number whose ID number matches (an SMS code is sent), the same wallet with
another customer's ID number, a wallet number nobody has, and a matching mobile. Each start is
timed by the client. The figures are medians and the 10th/90th percentiles per kind, and each
kind's median against the matching start's (the baseline, measured in the same run). A
difference within the spread of the baseline itself (its own p10–p90) tells an attacker nothing.
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import quiet_alembic, scratch_app  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=60, help="starts of each kind")
    parser.add_argument("--postgres", help="admin URL; a scratch database is created and dropped")
    args = parser.parse_args()
    quiet_alembic()
    import logging
    import threading
    from datetime import date

    from werkzeug.serving import make_server

    from console.demo import demo_resident_id
    from console.extensions import db
    from console.services import customers, wallet_credentials
    from console.services.actor import Actor

    overrides = {"RISK_RECOVERY_SOURCES": 10**6, "LIMIT_OTP_PER_CUSTOMER": "1000000 per minute"}
    with scratch_app(args.postgres, **overrides) as app:
        actor = Actor.operator()
        ids = [demo_resident_id(date(1980, 1, 1), n) for n in (7, 8)]
        people = []
        for n, id_number in enumerate(ids):
            customer = customers.create_customer(db.session, actor, name="基准", id_type="resident_id",
                                                 id_number=id_number, mobile=f"1380000000{n}")
            wallet = customers.open_wallet(db.session, actor, customer, password="Spring-rain-2468")
            wallet_credentials.set_security_questions(db.session, actor, wallet,
                                                      [("mother_birthplace", "杭州"), ("first_school", "实验小学")])
            people.append((wallet.wallet_no, id_number, f"1380000000{n}"))
        db.session.commit()
        db.session.remove()
        (wallet_no, id_number, mobile), (_other_wallet, other_id, _m) = people
        kinds = {
            "matching wallet number": {"wallet_no": wallet_no, "id_number": id_number},
            "wallet number, wrong ID number": {"wallet_no": wallet_no, "id_number": other_id},
            "no such wallet number": {"wallet_no": "99999999999999", "id_number": id_number},
            "matching mobile": {"mobile": mobile, "id_number": id_number},
        }
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        headers = {"Authorization": f"Bearer {app.config['WALLET_SERVICE_KEY']}", "Content-Type": "application/json"}
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
        order = [k for k in kinds for _ in range(args.rounds)]
        random.Random(7).shuffle(order)
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for i, kind in enumerate(order):
            body = json.dumps({**kinds[kind], "client_ip": "198.51.100.9", "device_id": f"bench-{i % 2}"})
            start = time.perf_counter()
            conn.request("POST", "/api/wallet/v1/recovery", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            times[kind].append((time.perf_counter() - start) * 1000)
            assert response.status == 202, response.status
        server.shutdown()
        base = times["matching wallet number"]
        base_median = statistics.median(base)
        deciles = statistics.quantiles(base, n=10)
        print(f"database: {db.engine.dialect.name}, {args.rounds} starts of each kind, shuffled")
        print(f"{'start':<34}{'median ms':>10}{'p10':>8}{'p90':>8}   vs matching")
        for kind, values in times.items():
            q = statistics.quantiles(values, n=10)
            print(f"{kind:<34}{statistics.median(values):>10.2f}{q[0]:>8.2f}{q[-1]:>8.2f}   "
                  f"{statistics.median(values) / base_median:>5.2f} x")
        print(f"baseline's own spread (p10-p90): {deciles[0]:.2f}-{deciles[-1]:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
