"""Password hashing (argon2id) and the staff password policy."""
from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import secrets
import string
from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher, extract_parameters, profiles
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import core, error_to_str, ffi, lib
from flask_babel import lazy_gettext as _l

# argon2id with RFC 9106's "low memory" profile (t=3, 64 MiB, p=4): ~0.1 s of CPU a check here.
PROFILE = profiles.RFC_9106_LOW_MEMORY
hasher = PasswordHasher.from_parameters(PROFILE)

_BLOCKLIST = Path(__file__).parent / "data" / "common-passwords.txt"


def hash_password(password: str) -> str:
    return hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    if not stored_hash:
        # Spend the same time as a real check so unknown accounts are not revealed by timing.
        _burn(password)
        return False
    try:
        return _verify(stored_hash, password)
    # UnicodeEncodeError: a stored hash that is not ASCII, or a password that is no text: no match.
    except (VerifyMismatchError, VerificationError, InvalidHashError, UnicodeEncodeError):
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hasher.hash(secrets.token_urlsafe(16))


def _burn(password: str) -> None:
    try:
        _verify(_dummy_hash(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError, UnicodeEncodeError):
        pass


@lru_cache(maxsize=1)
def check_threads() -> int:
    """The cores this process may run on: at most this many threads work on one check."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _canonical(stored_hash: str):
    """(parameters, salt, tag) of a hash in the one layout libargon2 writes
    (``$argon2id$v=19$m=..,t=..,p=..$salt$tag``, unpadded base64, plain digits), else None."""
    parts = stored_hash.split("$")
    if len(parts) != 6:
        return None
    try:
        params = extract_parameters(stored_hash)
        salt, tag = _unb64(parts[4]), _unb64(parts[5])
    except (InvalidHashError, binascii.Error, ValueError):
        return None
    layout = (f"${parts[1]}$v={params.version}$m={params.memory_cost},t={params.time_cost},"
              f"p={params.parallelism}${_b64(salt)}${_b64(tag)}")
    return (params, salt, tag) if layout == stored_hash else None


def _verify(stored_hash: str, password: str) -> bool:
    """``hasher.verify`` with the hash's lanes computed by at most one thread per core.

    An argon2 hash with p lanes is verified by p threads (libargon2's ``argon2_verify``), started
    and joined at each of its 4 x t sync points. With p=4 on two cores, one check alone leaves the
    cores idle ~20 % of its time at those points, and two at once run eight threads on two cores.
    The tag depends on the lanes alone (libargon2's ``threads`` only says how many of them run at
    once), so this computes the same tag with ``min(p, cores)`` threads and compares it in constant
    time. A hash in any other layout than the one libargon2 writes (other field order, padding,
    signs or leading zeros, argon2 v1.2's) goes to ``hasher.verify``, so every verdict is the
    library's. bench/wallet_signin.py measures both; tests/test_password_check.py holds them equal.
    """
    found = _canonical(stored_hash)
    if found is None:
        return hasher.verify(stored_hash, password)
    params, salt, tag = found
    secret = password.encode()
    # The buffers stay bound to these names until argon2_ctx returns: the context only points at them.
    out = ffi.new("uint8_t[]", len(tag))
    c_secret, c_salt = ffi.new("uint8_t[]", secret), ffi.new("uint8_t[]", salt)
    try:
        context = ffi.new("argon2_context *", {
            "out": out, "outlen": len(tag), "pwd": c_secret, "pwdlen": len(secret), "salt": c_salt,
            "saltlen": len(salt), "secret": ffi.NULL, "secretlen": 0, "ad": ffi.NULL, "adlen": 0,
            "t_cost": params.time_cost, "m_cost": params.memory_cost, "lanes": params.parallelism,
            "threads": min(params.parallelism, check_threads()), "version": params.version,
            "allocate_cbk": ffi.NULL, "free_cbk": ffi.NULL, "flags": lib.ARGON2_DEFAULT_FLAGS})
    except OverflowError:  # a cost that is no 32-bit unsigned number: the library refuses it its way
        return hasher.verify(stored_hash, password)
    result = core(context, params.type.value)
    if result != lib.ARGON2_OK:
        raise VerificationError(error_to_str(result))
    if not hmac.compare_digest(ffi.buffer(out, len(tag))[:], tag):
        raise VerifyMismatchError
    return True


@lru_cache(maxsize=1)
def blocklist() -> frozenset[str]:
    words = (line.strip().lower() for line in _BLOCKLIST.read_text(encoding="utf-8").splitlines())
    return frozenset(w for w in words if w and not w.startswith("#"))


def is_common(password: str) -> bool:
    lowered = password.lower()
    if lowered in blocklist():
        return True
    stem = re.sub(r"[\d\W_]+$", "", lowered)
    return len(stem) >= 4 and stem in blocklist()


STAFF_PASSWORD_MESSAGES = {
    "too_short": _l("The password must be at least %(n)s characters long."),
    "needs_letter_and_digit": _l("The password must contain both letters and digits."),
    "common": _l("This password is too common; choose another."),
    "contains_employee_no": _l("The password must not contain your employee number."),
    "same_as_current": _l("The new password must differ from the current one."),
    "mismatch": _l("The two passwords do not match."),
}


def staff_password_problems(password: str, *, employee_no: str, min_length: int) -> list[str]:
    """Codes of every rule the password breaks (empty when acceptable)."""
    problems = []
    if len(password) < min_length:
        problems.append("too_short")
    if not (re.search(r"[A-Za-z]", password) and re.search(r"\d", password)):
        problems.append("needs_letter_and_digit")
    if is_common(password):
        problems.append("common")
    if employee_no and employee_no.lower() in password.lower():
        problems.append("contains_employee_no")
    return problems


# Handed over on paper and typed by hand: no character that reads as another (I l 1, O o 0).
UNAMBIGUOUS_ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "Il1Oo0")


def generate_initial_password(length: int = 16) -> str:
    """A random one-time password that meets the staff policy (letters and digits), without
    look-alike characters (``UNAMBIGUOUS_ALPHABET``)."""
    while True:
        value = "".join(secrets.choice(UNAMBIGUOUS_ALPHABET) for _ in range(length))
        if re.search(r"[A-Za-z]", value) and re.search(r"\d", value):
            return value
