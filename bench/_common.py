"""Shared set-up for the benchmarks: a migrated scratch database (SQLite or PostgreSQL), and the
machine's busy CPU time."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402


@contextlib.contextmanager
def scratch_app(postgres_url: str | None = None, **overrides):
    """Yield an app (inside its app context) on a fresh, migrated database; drop it afterwards."""
    from flask_migrate import upgrade

    from console import create_app
    from console.extensions import db

    admin = None
    if postgres_url:
        name = f"bc_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    app = create_app("testing", {"DATABASE_URL": url, **overrides})
    try:
        with app.app_context():
            upgrade()
            yield app
            db.session.remove()
            db.engine.dispose()
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def quiet_alembic() -> None:
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (user, nice, system, irq, softirq; not idle,
    I/O wait or time stolen by the hypervisor), from /proc/stat: with it, a phase's cost per
    operation counts every process it used (workers, PostgreSQL, Redis, the client)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
