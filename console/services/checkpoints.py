"""Signed checkpoints of the audit chain head (Ed25519), and the public key auditors hold."""
from __future__ import annotations

import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import crypto
from ..models.audit import AuditCheckpoint, ChainHead
from ..timeutil import utcnow
from . import audit
from .actor import Actor


def _private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(crypto.key("AUDIT_SIGNING_KEY"))


def public_key() -> Ed25519PublicKey:
    return _private_key().public_key()


def public_key_pem() -> str:
    return public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(key: Ed25519PublicKey | None = None) -> str:
    raw = (key or public_key()).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def statement(seq: int, head_hash: str, signed_at) -> bytes:
    """What is signed: versioned canonical JSON of the head."""
    return json.dumps({"v": 1, "seq": seq, "hash": head_hash, "at": signed_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
                      sort_keys=True, separators=(",", ":")).encode()


def create_checkpoint(session: Session, actor: Actor | None = None) -> AuditCheckpoint:
    """Sign the chain head as of now; the checkpoint itself is then audited."""
    head = session.get(ChainHead, 1)
    now = utcnow()
    signature = _private_key().sign(statement(head.seq, head.hash, now))
    row = AuditCheckpoint(seq=head.seq, hash=head.hash, signed_at=now, key_id=key_id(), signature=signature.hex())
    session.add(row)
    session.flush()
    audit.record(session, actor or Actor.system(), "audit.checkpoint",
                 details={"checkpoint": row.id, "seq": row.seq, "hash": row.hash, "key_id": row.key_id})
    return row


def signature_valid(row: AuditCheckpoint, key: Ed25519PublicKey | None = None) -> bool:
    try:
        (key or public_key()).verify(bytes.fromhex(row.signature), statement(row.seq, row.hash, row.signed_at))
        return True
    except (InvalidSignature, ValueError):
        return False


def all_checkpoints(session: Session) -> list[AuditCheckpoint]:
    return list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq, AuditCheckpoint.id)))
