"""Health endpoints for load balancers and orchestrators: unauthenticated, revealing nothing else."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from ..extensions import db
from ..ratelimits import storage_checks

bp = Blueprint("ops", __name__)


@bp.route("/healthz", methods=["GET"])
def healthz():
    """The process is up."""
    return jsonify({"status": "ok"})


@bp.route("/readyz", methods=["GET"])
def readyz():
    """Database reachable and migrations at head. With Redis configured for the rate limits, Redis
    unreachable is a degradation, not an outage: the counters move to the database, the node stays
    ready and says so (``degraded``)."""
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
    checks.update(storage_checks(database_ok=checks["database"] == "ok"))
    ready = checks["database"] == "ok" and checks.get("migrations") == "ok" \
        and checks.get("rate_limits") != "unavailable"
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    if checks.get("rate_limits") == "database":
        body["degraded"] = ["rate_limit_storage"]
    if checks["database"] == "ok":
        # Detail only (never unready): how far the audit trail's consumers are behind. No error
        # text: this endpoint has no sign-in, and the SIEM's error names its address.
        from ..services import sequencer, siem

        try:
            pending, lag = sequencer.backlog(db.session)
            body["audit_chain"] = {"pending": pending, "lag_seconds": round(lag or 0.0, 3)}
            if current_app.config.get("SIEM_SYSLOG_URL"):
                stream = siem.status(db.session)
                body["audit_stream"] = {k: stream[k] for k in ("state", "behind", "lag_seconds")}
        except Exception:
            body["audit_stream"] = {"state": "unknown"}
        finally:
            db.session.rollback()
    return jsonify(body), 200 if ready else 503
