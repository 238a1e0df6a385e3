"""The public receipt check page: the address in a receipt's QR code.

It says only whether the receipt matches the audit trail, with the receipt number, branch, time
and number of operations; nothing personal. Without the code printed in the QR it says nothing.
"""
from __future__ import annotations

from flask import Blueprint, render_template, request

from ..extensions import db
from ..services import receipts

bp = Blueprint("receipt_check", __name__, url_prefix="/receipts")


@bp.route("/check/<receipt_no:receipt_no>", methods=["GET"])
def check(receipt_no):
    result = receipts.check(db.session, receipt_no, request.args.get("c", ""))
    return render_template("receipt_check.html", result=result), 200 if result["found"] else 404
