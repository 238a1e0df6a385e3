"""Field encryption (AES-GCM), blind indexes (HMAC-SHA256) and secret helpers."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import lru_cache

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import current_app

_VERSION = b"\x01"


def key(name: str) -> bytes:
    """The raw bytes of a configured 32-byte key."""
    return decode_key(current_app.config[name])


@lru_cache(maxsize=16)
def decode_key(value: str) -> bytes:
    """The raw bytes of a key as configured (URL-safe base64, padding optional); decoded once a
    key (every audited commit uses one)."""
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def encrypt(plaintext: str, *, context: str) -> bytes:
    """Encrypt a field; ``context`` (e.g. "staff.totp") is bound as associated data."""
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(key("DATA_ENCRYPTION_KEY")).encrypt(nonce, plaintext.encode(), context.encode())
    return _VERSION + nonce + sealed


def decrypt(blob: bytes, *, context: str) -> str:
    if not blob or blob[:1] != _VERSION:
        raise ValueError("unknown ciphertext version")
    nonce, sealed = blob[1:13], blob[13:]
    return AESGCM(key("DATA_ENCRYPTION_KEY")).decrypt(nonce, sealed, context.encode()).decode()


def blind_index(value: str, *, context: str) -> str:
    """Keyed digest for exact-match lookup of an encrypted field."""
    msg = context.encode() + b"\x00" + value.encode()
    return hmac.new(key("BLIND_INDEX_KEY"), msg, hashlib.sha256).hexdigest()


def token_digest(token: str) -> str:
    """Digest under which session and API tokens are stored (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
