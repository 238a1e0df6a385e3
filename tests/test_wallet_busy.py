"""When every attempt slot stays claimed past the wait, an attempt answers "busy" without a check."""
from sqlalchemy import update

from console.extensions import db
from console.models.customer import Wallet

from .conftest import WALLET_PASSWORD, make_wallet, sign_in_wallet


def test_claimed_slots_make_a_bounded_wait_then_busy(app):
    app.config["WALLET_CLAIM_WAIT_SECONDS"] = 0.1
    wallet_no = make_wallet()
    # Five attempts are "in flight" (claimed, not yet checked): nobody may check a sixth.
    db.session.execute(update(Wallet).where(Wallet.wallet_no == wallet_no).values(failed_count=5))
    db.session.commit()
    outcome = sign_in_wallet(wallet_no, WALLET_PASSWORD)
    assert outcome.result == "busy" and not outcome.password_checked
