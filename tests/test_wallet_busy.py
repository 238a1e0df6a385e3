"""While every slot is held by live claims, an attempt waits a bounded time, then answers "busy"
without a check, and says when to retry."""
from datetime import timedelta

from console import policy, timeutil

from .conftest import WALLET_PASSWORD, get_wallet, hold_live_claims, make_wallet, sign_in_wallet


def test_live_claims_make_a_bounded_wait_then_busy_with_a_retry_time(app):
    app.config["WALLET_CLAIM_WAIT_SECONDS"] = 0.1
    policy.rebuild(app)
    wallet_no = make_wallet()
    # Five attempts are in flight (claimed, still being checked by live workers): nobody may check a sixth.
    hold_live_claims(wallet_no, 5, seconds=4)
    outcome = sign_in_wallet(wallet_no, WALLET_PASSWORD)
    assert outcome.result == "busy" and not outcome.password_checked
    assert 1 <= outcome.retry_after <= 4
    # Once those claims expire (their workers died), the next attempt reclaims them and is checked.
    timeutil.set_offset(timedelta(seconds=5))
    assert sign_in_wallet(wallet_no, WALLET_PASSWORD).result == "ok"
    assert get_wallet(wallet_no).settled_seq == 6
