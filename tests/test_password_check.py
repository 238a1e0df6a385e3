"""The password check (console.passwords.verify_password) gives argon2-cffi's verdict on every hash,
with at most one thread per core on the hash's lanes."""
import pytest
from argon2 import PasswordHasher, Type
from argon2.low_level import hash_secret
from hypothesis import given, settings
from hypothesis import strategies as st

from console import passwords
from console.passwords import verify_password


def _library(stored: str, password: str) -> bool:
    try:
        return PasswordHasher().verify(stored, password)
    except Exception:  # noqa: BLE001 - any refusal of the library's counts as "no"
        return False


def _hasher(**kwargs) -> PasswordHasher:
    return PasswordHasher(**{"time_cost": 1, "memory_cost": 256, "parallelism": 1, **kwargs})


@pytest.mark.parametrize("kind", [Type.ID, Type.I, Type.D])
@pytest.mark.parametrize("lanes", [1, 2, 3, 4, 8])
def test_same_verdict_as_the_library_for_every_type_and_lane_count(kind, lanes):
    stored = _hasher(type=kind, parallelism=lanes, time_cost=2).hash("Spring-rain-2468")
    assert verify_password(stored, "Spring-rain-2468") is True
    assert verify_password(stored, "Spring-rain-2469") is False
    assert _library(stored, "Spring-rain-2468") and not _library(stored, "Spring-rain-2469")


def test_the_production_profile_and_an_argon2_version_1_0_hash():
    stored = PasswordHasher.from_parameters(passwords.PROFILE).hash("口令-2468")
    assert verify_password(stored, "口令-2468") and not verify_password(stored, "口令-2469")
    old = hash_secret(b"pw-1", b"salt-of-16-bytes", time_cost=1, memory_cost=256, parallelism=2,
                      hash_len=32, type=Type.ID, version=0x10).decode()
    assert "$v=16$" in old
    assert verify_password(old, "pw-1") and not verify_password(old, "pw-2")


@settings(max_examples=60, deadline=None)
@given(password=st.text(max_size=40), candidate=st.text(max_size=40), lanes=st.integers(1, 5),
       salt_len=st.integers(8, 24), hash_len=st.integers(4, 40))
def test_agrees_with_the_library_on_any_password(password, candidate, lanes, salt_len, hash_len):
    stored = _hasher(parallelism=lanes, salt_len=salt_len, hash_len=hash_len).hash(password)
    assert verify_password(stored, password) is True
    assert verify_password(stored, candidate) is _library(stored, candidate) is (candidate == password)


GOOD = _hasher(parallelism=2).hash("pw")
_HEAD, _SALT, _TAG = GOOD.rsplit("$", 2)


def _last_char_bumped(b64: str) -> str:
    """The same bytes in a non-canonical spelling (the unused low bits of the last character set)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return b64[:-1] + alphabet[alphabet.index(b64[-1]) + 1]


@pytest.mark.parametrize("stored", [
    "", "plain text", "$argon2id$v=19$m=256,t=1,p=2$", GOOD.replace("$argon2id$", "$argon2x$"),
    GOOD.replace("p=2", "p=0"), GOOD.replace("p=2", "p=two"), GOOD.replace("m=256", "m=1"),
    GOOD.rsplit("$", 1)[0] + "$!!!!", f"{_HEAD}$@@@@${_TAG}",
    f"{_HEAD}$c2FsdA${_TAG}",  # a 4-byte salt: below argon2's minimum
    GOOD[:-3], GOOD + "$extra", GOOD.replace("t=1", "t=-1"), GOOD.replace("t=1", "t=99999999999"),
    GOOD.replace("p=2", "p=-4"), GOOD.replace("v=19", "v=18"),
    "$argon2id$m=256,t=1,p=2$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",  # argon2 v1.2 layout (no v=)
])
def test_a_malformed_or_foreign_hash_is_a_no_not_an_error(stored):
    assert verify_password(stored, "pw") is False
    assert _library(stored, "pw") is False


@pytest.mark.parametrize("stored", [
    # The right password's tag in spellings libargon2 does not write: the library's verdict, whatever it is.
    GOOD.replace("m=256,t=1", "t=1,m=256"), GOOD.replace("m=256", "m=1,m=256"),
    GOOD.replace("$v=19$m=256,", "$m=256,v=19,"), GOOD.replace("t=1", "t= 1"), GOOD.replace("t=1", "t=+1"),
    GOOD.replace("t=1", "t=01"), GOOD.replace("m=256", "m=2_56"), GOOD.replace("v=19", "v=+19"),
    GOOD.replace("t=1", "t=\uff11"), f"{_HEAD}${_SALT}==${_TAG}", f"{_HEAD}${_SALT}${_TAG}=",
    f"{_HEAD}${_last_char_bumped(_SALT)}${_TAG}", f"{_HEAD}${_SALT}${_last_char_bumped(_TAG)}",
    GOOD + "\x00junk", GOOD.replace("$argon2id$", "$argon2ID$"),
])
def test_any_other_spelling_of_a_hash_gets_the_librarys_verdict(stored):
    assert stored != GOOD
    assert verify_password(stored, "pw") is _library(stored, "pw")


def test_a_password_that_is_no_text_matches_nothing():
    # A lone surrogate: no UTF-8, so no hash was made of it. The same "no" with or without an account.
    assert verify_password(GOOD, "pw\ud800") is False
    assert verify_password(None, "pw\ud800") is False


def test_lanes_are_checked_by_at_most_one_thread_per_core(monkeypatch):
    seen = []
    real_core = passwords.core

    def spy(context, kind):
        seen.append((context.lanes, context.threads))
        return real_core(context, kind)

    monkeypatch.setattr(passwords, "core", spy)
    for cores in (1, 2, 16):
        monkeypatch.setattr(passwords, "check_threads", lambda cores=cores: cores)
        for lanes in (1, 4):
            stored = _hasher(parallelism=lanes).hash("pw")
            assert verify_password(stored, "pw") and not verify_password(stored, "px")
    assert seen == [(lanes, min(lanes, cores)) for cores in (1, 2, 16) for lanes in (1, 4) for _ in (0, 1)]


def test_an_unknown_account_costs_the_same_check(monkeypatch):
    """No stored hash: one check of the same kind (the same path, parameters and threads) against
    the dummy hash, and the answer no."""
    seen = []
    real_core = passwords.core
    monkeypatch.setattr(passwords, "core", lambda context, kind: seen.append(
        (kind, context.t_cost, context.m_cost, context.lanes, context.threads)) or real_core(context, kind))
    assert verify_password(None, "anything") is False
    assert verify_password(passwords.hash_password("something"), "anything") is False
    assert len(seen) == 2 and seen[0] == seen[1]


def test_check_threads_counts_the_cores_this_process_may_use():
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert passwords.check_threads() == cores >= 1
