"""Health endpoints for load balancers and orchestrators: unauthenticated, revealing nothing else."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from ..extensions import db

bp = Blueprint("ops", __name__)


@bp.route("/healthz", methods=["GET"])
def healthz():
    """The process is up."""
    return jsonify({"status": "ok"})


@bp.route("/readyz", methods=["GET"])
def readyz():
    """Database reachable, migrations at head, Redis reachable when it is configured."""
    checks = {"database": "ok", "migrations": "ok"}
    try:
        current = db.session.execute(text("SELECT version_num FROM alembic_version")).scalar()
        if current != current_app.extensions["migration_head"]:
            checks["migrations"] = "behind"
    except Exception:
        checks["database"] = "unreachable"
        checks.pop("migrations")
    finally:
        db.session.rollback()
    storage = current_app.config.get("RATELIMIT_STORAGE_URI", "memory://")
    if storage.startswith("redis"):
        from ..ratelimits import redis_ok

        checks["redis"] = "ok" if redis_ok(storage) else "unreachable"
    ready = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), 200 if ready else 503
