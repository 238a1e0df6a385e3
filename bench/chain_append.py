"""Audited writes against the same writes without audit, 1/4/16 writers, same run (issue #14).

    .venv/bin/python bench/chain_append.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres \
        [--seconds 5] [--writers 1,4,16] [--rounds 2] [--sequencers 1]

Each writer is its own process with its own connection and writes one audit event per transaction
(as the issue's table measured it): "raw" builds the row exactly as ``audit.record`` does and INSERTs
it into a plain table (no intake, digest, sequence or chain); "audited" is ``audit.record`` and
COMMIT, as every service does it. Audited runs in both chain modes: "background" (writers
don't wait; ``--sequencers`` processes (1: a dedicated ``flask audit sequencer``, in a session of its
own as a service of its own would be; a deployment without one runs a sequencer thread in each of its
worker processes, which K > 1 stands for) chain in batches every
``AUDIT_SEQUENCER_INTERVAL``, the deployment default unless set) and "commit" (each
writer chains right after its own COMMIT and waits for it: the default, read-your-writes). Phases
alternate over rounds so machine noise hits all alike. Also printed: the largest chaining lag seen
(age of the oldest committed, not yet chained event, sampled every 50 ms) and that the chain
verifies intact at the end.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import threading
import time

import _common


def _event(actor, n: int) -> dict:
    return dict(actor=actor, action="wallet.unlock", reason_code="forgot_password", customer_ref="C000000001",
                before={"lock_kind": "temporary"}, after={"lock_kind": None}, details={"n": n})


def _writer(app, variant: str, seconds: float, start_at: float, counter) -> None:
    from sqlalchemy import column, insert, table, text

    from console.extensions import db
    from console.services import audit
    from console.services.actor import Actor

    actor = Actor(kind="staff", staff_id=7, employee_no="T1001", role="teller", branch_code="BJ-001",
                  source_ip="10.0.0.1", session_id="abcd", channel="counter")
    fields = audit.CHAINED_FIELDS[1:] + ("hash",)
    raw_table = table("bench_event", *[column(name) for name in fields])
    with app.app_context():
        db.engine.dispose(close=False)  # a forked process opens its own connections
        app.config["AUDIT_CHAIN_MODE"] = "commit" if variant == "audited-commit" else "background"
        # Connected before the clock starts: the phase measures writing, not 16 connections opening.
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
        while time.time() < start_at:
            time.sleep(0.001)
        done, end = 0, start_at + seconds
        while time.time() < end:
            e = _event(actor, done)
            if variant == "raw":
                # The same row, built the same way, written straight into a plain table: no intake,
                # no digest, no sequence, no chain.
                row = audit.record(_Scratch(), **e)
                row.update(prev_hash="0" * 64, hash="0" * 64)
                db.session.execute(insert(raw_table), row)
            else:
                audit.record(db.session, **e)
            db.session.commit()
            done += 1
        with counter.get_lock():
            counter.value += done
        db.session.remove()


class _Scratch:
    """Stands in for a session so the raw variant builds its row with audit.record itself."""

    def __init__(self):
        self.info = {}

    def in_transaction(self):
        return True


def _sequencer(app, stop, own_session: bool) -> None:
    from console import policy
    from console.extensions import db
    from console.services import sequencer

    if own_session:
        # A dedicated `flask audit sequencer` runs as a service of its own, and the kernel shares
        # the CPU between services before it shares it between their processes (cgroups; for
        # sessions, sched autogroup). Forked from this bench it would queue as one process among
        # the 16 writers' instead.
        os.setsid()
        # Out of the bench's session, a Ctrl-C no longer reaches it: it stops when the bench is gone.
        parent = os.getppid()

        def watch_parent():
            while not stop.is_set():
                if os.getppid() != parent:
                    stop.set()
                time.sleep(0.5)

        threading.Thread(target=watch_parent, daemon=True).start()
    with app.app_context():
        db.engine.dispose(close=False)
        sequencer.run(db.engine, interval=policy.current().audit.sequencer_interval_seconds, stop=stop)


def _lag(session) -> float:
    """Seconds the oldest waiting intake row has waited: one index lookup on the intake's key.
    (``sequencer.backlog`` counts the intake; its deleted rows wait there for autovacuum, and a
    count every 50 ms would scan them all, a load of the bench's own on the audited phases.)"""
    from console.services import sequencer

    oldest = _oldest_waiting(session)
    return 0.0 if oldest is None else sequencer.waited(oldest)


def _oldest_waiting(session):
    """When the oldest intake row still waiting was recorded (None: nothing waits)."""
    from sqlalchemy import select

    from console.models.audit import AuditIntake

    oldest = session.scalar(select(AuditIntake.recorded_at).order_by(AuditIntake.id).limit(1))
    session.rollback()
    return oldest


def _phase(app, variant: str, writers: int, seconds: float, sequencers: int = 1) -> tuple[float, float, float]:
    """(actions per second, largest chaining lag in seconds, machine CPU seconds per action).

    The CPU is counted from the start of writing until the last action is chained (background
    mode: the sequencer's work after the writers stopped counts too)."""
    from console.extensions import db

    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("l", 0)
    stop = ctx.Event()
    start_at = time.time() + 0.5 + 0.05 * writers
    seq_procs = [ctx.Process(target=_sequencer, args=(app, stop, sequencers == 1))
                 for _ in range(sequencers if variant == "audited-background" else 0)]
    procs = [ctx.Process(target=_writer, args=(app, variant, seconds, start_at, counter)) for _ in range(writers)]
    for p in seq_procs:
        p.start()
    for p in procs:
        p.start()
    lag = 0.0
    time.sleep(max(0.0, start_at - time.time()))
    busy = _common.machine_busy()
    while any(p.is_alive() for p in procs):
        if variant != "raw" and time.time() > start_at:
            lag = max(lag, _lag(db.session))
        time.sleep(0.05)
    for p in procs:
        p.join()
    if seq_procs:
        deadline = time.time() + 10
        while _oldest_waiting(db.session) is not None and time.time() < deadline:
            time.sleep(0.02)
    busy = _common.machine_busy() - busy
    stop.set()
    for p in seq_procs:
        p.join()
    return counter.value / seconds, lag, busy / max(counter.value, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", required=True)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--writers", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--interval", type=float, help="AUDIT_SEQUENCER_INTERVAL in seconds (default: the app's)")
    parser.add_argument("--sequencers", type=int, default=1,
                        help="background sequencer processes (a deployment without `flask audit sequencer` runs "
                             "one in each worker process, 2 x cores + 1 by default)")
    args = parser.parse_args()
    if args.sequencers < 1:
        parser.error("--sequencers: at least 1 (the background phase measures writers that a sequencer keeps up with)")
    _common.quiet_alembic()
    counts = [int(w) for w in args.writers.split(",")]
    variants = ("raw", "audited-background", "audited-commit")
    overrides = {"AUDIT_SEQUENCER_INTERVAL": args.interval} if args.interval else {}
    with _common.scratch_app(args.postgres, **overrides) as app:
        from sqlalchemy import text

        from console.extensions import db
        from console.services import audit

        db.session.execute(text("CREATE TABLE bench_event (LIKE audit_event INCLUDING ALL)"))
        db.session.execute(text("ALTER TABLE bench_event ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY"))
        db.session.commit()
        db.engine.dispose()
        rates = {(w, v): [] for w in counts for v in variants}
        lags = {(w, v): 0.0 for w in counts for v in variants}
        cpus = {(w, v): [] for w in counts for v in variants}
        for r in range(args.rounds):
            for w in counts:
                order = variants if r % 2 == 0 else variants[::-1]
                for v in order:
                    rate, lag, cpu = _phase(app, v, w, args.seconds, args.sequencers)
                    rates[(w, v)].append(rate)
                    cpus[(w, v)].append(cpu)
                    lags[(w, v)] = max(lags[(w, v)], lag)
                raw, bg, cm = (rates[(w, v)][-1] for v in variants)
                raw_cpu, bg_cpu, cm_cpu = (cpus[(w, v)][-1] * 1000 for v in variants)
                print(f"round {r + 1}, {w} writers: raw {raw:,.0f}/s, background {bg:,.0f}/s ({bg / raw:.2f} x), "
                      f"commit {cm:,.0f}/s ({cm / raw:.2f} x); machine CPU ms per action: raw {raw_cpu:.3f}, "
                      f"background {bg_cpu:.3f}, commit {cm_cpu:.3f}", flush=True)
        report = audit.verify_chain(db.session, workers=os.cpu_count() or 1)
        db.session.rollback()
        from console import policy

        print(f"PostgreSQL, one action per transaction, {args.seconds:g} s x {args.rounds} rounds per phase "
              f"(rates: median of rounds; ratios: median of the rounds' ratios), {os.cpu_count()} CPUs, {args.sequencers} "
              f"background sequencer(s) every {policy.current().audit.sequencer_interval_seconds:g} s (AUDIT_SEQUENCER_INTERVAL)")
        print(f"{'writers':>7} {'raw/s':>9} {'audited bg/s':>13} {'ratio':>6} {'by CPU':>7} {'max lag s':>10} "
              f"{'audited commit/s':>17} {'ratio':>6}")
        for w in counts:
            plain = statistics.median(rates[(w, 'raw')])
            bg = statistics.median(rates[(w, 'audited-background')])
            cm = statistics.median(rates[(w, 'audited-commit')])
            # Each round's phases ran next to each other: the ratio is taken within a round (paired)
            # and the median of the rounds' ratios printed, so a round the machine slowed weighs
            # on both sides of its own ratio and not on the others'.
            bg_ratio, cm_ratio = (statistics.median(a / b for a, b in zip(rates[(w, v)], rates[(w, 'raw')]))
                                  for v in ('audited-background', 'audited-commit'))
            # By CPU: raw's machine CPU per action over the audited one's, what the ratio would be on a
            # machine kept saturated (the writers' processes, the sequencer and PostgreSQL all count).
            by_cpu = statistics.median(r / a for r, a in zip(cpus[(w, 'raw')], cpus[(w, 'audited-background')]))
            print(f"{w:>7} {plain:>9,.0f} {bg:>13,.0f} {bg_ratio:>6.2f} {by_cpu:>7.2f} {lags[(w, 'audited-background')]:>10.2f} "
                  f"{cm:>17,.0f} {cm_ratio:>6.2f}")
        print(f"chain after the run: {'intact' if report.intact else 'BROKEN: ' + str(report.reason)}, "
              f"{report.count:,} events, {report.pending} transaction(s) waiting")


if __name__ == "__main__":
    main()
