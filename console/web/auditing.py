"""Auditor pages: the state of the hash chain."""
from __future__ import annotations

from flask import Blueprint, flash, render_template, redirect, url_for
from flask_babel import gettext as _
from flask_wtf import FlaskForm

from ..extensions import db
from ..models.audit import ChainHead
from ..permissions import AUDIT_VERIFY
from ..services import audit
from .security import current_actor, guard_blueprint

bp = Blueprint("auditing", __name__, url_prefix="/audit")
guard_blueprint(bp, AUDIT_VERIFY)


@bp.route("/chain", methods=["GET", "POST"])
def chain():
    form = FlaskForm()
    report = None
    if form.validate_on_submit():
        report = audit.verify_chain(db.session)
        audit.record(db.session, current_actor(), "audit.verify",
                     outcome="success" if report.intact else "failed",
                     details={"intact": report.intact, "events": report.count,
                              "first_bad_seq": report.first_bad_seq, "reason": report.reason})
        db.session.commit()
        if report.intact:
            flash(_("The audit chain is intact: %(n)s events verified.", n=report.count), "success")
        else:
            flash(_("The audit chain is broken at sequence number %(seq)s.", seq=report.first_bad_seq), "error")
    head = db.session.get(ChainHead, 1)
    return render_template("auditing/chain.html", form=form, head=head, report=report)
