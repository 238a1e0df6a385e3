"""Signed checkpoints of the audit chain head (Ed25519), the copies that leave the database, and
the public key auditors hold (docs/audit-anchors.md).

A checkpoint is a signed statement of the chain head: sequence number, hash and time. It is kept
in three places, so that someone who controls the database cannot make it disappear:

- the ``audit_checkpoint`` row (with the app's key, the console checks it on every verification);
- the ``audit.checkpoint`` event's details, so every copy of the event stream (the SIEM's) carries
  the full signed statement;
- a file in the witness directory the operator configures (``AUDIT_WITNESS_DIR``), written after
  the checkpoint's transaction committed, one file per checkpoint; the auditor's copy of that
  directory is what ``flask audit verify --anchors DIR --public-key PEM`` checks the chain against
  (:func:`load_anchors`, :func:`load_public_key`).

Checkpoints are taken by hand (``flask audit checkpoint``) and automatically
(:func:`auto_checkpoint`, which the sequencer calls after each batch it chains): when the head
has moved ``AUDIT_CHECKPOINT_EVERY`` events, or ``AUDIT_CHECKPOINT_SECONDS`` seconds passed with
at least one new event, since the newest checkpoint.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from .. import crypto
from ..models.audit import AuditCheckpoint, AuditEvent, ChainHead
from ..timeutil import utcnow
from . import audit
from .actor import Actor

log = logging.getLogger(__name__)

STATEMENT_VERSION = 1  # the version of the signed statement (:func:`statement`)
CHECKPOINT_ACTION = "audit.checkpoint"
# Each new checkpoint's witness write also makes sure this many earlier ones are in the directory:
# a copy lost to a crash between COMMIT and the file write is written by the next checkpoint.
CATCH_UP = 16


def _private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(crypto.key("AUDIT_SIGNING_KEY"))


def public_key() -> Ed25519PublicKey:
    return _private_key().public_key()


def public_key_pem() -> str:
    return public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(key: Ed25519PublicKey | None = None) -> str:
    raw = (key or public_key()).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def iso(value: datetime) -> str:
    """A checkpoint's time as the statement signs it: UTC, six digits, ``Z``."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def statement(seq: int, head_hash: str, signed_at) -> bytes:
    """What is signed: versioned canonical JSON of the head."""
    return json.dumps({"v": STATEMENT_VERSION, "seq": seq, "hash": head_hash, "at": iso(signed_at)},
                      sort_keys=True, separators=(",", ":")).encode()


def signed_statement(row: AuditCheckpoint) -> dict:
    """The full signed checkpoint as it leaves the database (witness file, event details, bundles)."""
    return {"statement_version": STATEMENT_VERSION, "checkpoint": row.id, "seq": row.seq, "hash": row.hash,
            "signed_at": iso(row.signed_at), "key_id": row.key_id, "signature": row.signature}


def create_checkpoint(session: Session, actor: Actor | None = None) -> AuditCheckpoint:
    """Sign the chain head as of now; the checkpoint itself is then audited.

    The head is read afresh (never from the session's identity map). The signed statement goes
    into the ``audit.checkpoint`` event's details, and to the witness directory once this
    transaction has committed (never before: a checkpoint rolled back must leave no copy).
    """
    head_seq, head_hash = session.execute(select(ChainHead.seq, ChainHead.hash).where(ChainHead.id == 1)).one()
    now = utcnow()
    signature = _private_key().sign(statement(head_seq, head_hash, now))
    row = AuditCheckpoint(seq=head_seq, hash=head_hash, signed_at=now, key_id=key_id(), signature=signature.hex())
    session.add(row)
    session.flush()
    signed = signed_statement(row)
    audit.record(session, actor or Actor.system(), CHECKPOINT_ACTION, details=signed)
    directory = witness_dir()
    if directory is not None:
        earlier = session.scalars(select(AuditCheckpoint).where(AuditCheckpoint.id != row.id)
                                  .order_by(AuditCheckpoint.id.desc()).limit(CATCH_UP)).all()
        _queue_witness(session, directory, [signed] + [signed_statement(cp) for cp in earlier])
    return row


def signature_valid(row: AuditCheckpoint, key: Ed25519PublicKey | None = None) -> bool:
    try:
        (key or public_key()).verify(bytes.fromhex(row.signature), statement(row.seq, row.hash, row.signed_at))
        return True
    except (InvalidSignature, ValueError):
        return False


def anchor_valid(anchor: dict, key: Ed25519PublicKey | None = None) -> bool:
    """A statement held outside the database (:func:`load_anchors`): its signature, with ``key``."""
    try:
        (key or public_key()).verify(bytes.fromhex(anchor["signature"]),
                                     statement(int(anchor["seq"]), anchor["hash"], _parse_time(anchor["signed_at"])))
        return True
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return False


def all_checkpoints(session: Session) -> list[AuditCheckpoint]:
    return list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq, AuditCheckpoint.id)))


# --- automatic checkpoints ------------------------------------------------------------------


def cadence() -> tuple[int, int]:
    """(events, seconds) between automatic checkpoints (the policy's ``audit.checkpoint_every`` and
    ``checkpoint_seconds``: ``AUDIT_CHECKPOINT_EVERY``, ``AUDIT_CHECKPOINT_SECONDS``); 0 switches a
    rule off. Outside an application, both are off."""
    from flask import has_app_context

    from .. import policy

    if not has_app_context():
        return 0, 0
    chain = policy.current().audit
    return chain.checkpoint_every, chain.checkpoint_seconds


def init_app(app) -> None:
    """Refuse to start on a witness directory that cannot be one (the numbers are the policy's)."""
    from config import ConfigError

    directory = app.config.get("AUDIT_WITNESS_DIR")
    if not directory:
        return
    path = Path(directory)
    if not path.is_absolute():
        raise ConfigError(f"CONSOLE_AUDIT_WITNESS_DIR must be an absolute path, not {directory!r}. Refusing to start.")
    if path.exists() and not (path.is_dir() and os.access(path, os.W_OK | os.X_OK)):
        raise ConfigError(f"CONSOLE_AUDIT_WITNESS_DIR {directory!r} is not a directory this process can write. "
                          "Refusing to start.")


def _newest(session: Session) -> tuple[int, datetime | None]:
    """(seq, signed_at) of the newest checkpoint; (0, time of the first event) when there is none."""
    last = session.execute(select(AuditCheckpoint.seq, AuditCheckpoint.signed_at)
                           .order_by(AuditCheckpoint.seq.desc(), AuditCheckpoint.id.desc()).limit(1)).first()
    if last is not None:
        return last.seq, last.signed_at
    return 0, session.scalar(select(AuditEvent.occurred_at).where(AuditEvent.seq == 1))


def _due(session: Session, every: int, seconds: float, now: datetime) -> bool:
    head_seq = session.scalar(select(ChainHead.seq).where(ChainHead.id == 1)) or 0
    since_seq, since = _newest(session)
    if head_seq <= since_seq:
        return False
    if not ((every and head_seq - since_seq >= every)
            or (seconds and (since is None or (now - since).total_seconds() >= seconds))):
        return False
    # At least one event that is not a checkpoint's own record: a quiet chain is not re-signed
    # forever, each checkpoint's event prompting the next.
    return session.scalar(select(AuditEvent.seq).where(AuditEvent.seq > since_seq,
                                                       AuditEvent.action != CHECKPOINT_ACTION).limit(1)) is not None


def auto_checkpoint(session: Session, *, now: datetime | None = None) -> AuditCheckpoint | None:
    """Take a checkpoint if one is due (``AUDIT_CHECKPOINT_EVERY`` events or ``AUDIT_CHECKPOINT_SECONDS``
    seconds with a new event since the newest); the caller commits. None when none is due.

    Cheap when none is due (two or three indexed reads). On PostgreSQL the chain-head row is locked (SKIP
    LOCKED: a busy sequencer means "not now", the next batch tries again) and the rule checked
    again under the lock, so two nodes never sign the same stretch twice.
    """
    every, seconds = cadence()
    if not every and not seconds:
        return None
    now = now or utcnow()
    if not _due(session, every, seconds, now):
        return None
    if session.get_bind().dialect.name == "postgresql":
        locked = session.execute(select(ChainHead.id).where(ChainHead.id == 1)
                                 .with_for_update(skip_locked=True)).first()
        if locked is None or not _due(session, every, seconds, now):
            return None
    return create_checkpoint(session, Actor.system())


# --- the witness directory ------------------------------------------------------------------
#
# One file per checkpoint, <dir>/<YYYY-MM-DD of signed_at>/checkpoint-<seq>-<id>.json, holding one
# JSON object and a newline (so `cat */*.json` is a JSON-lines anchors file). Written once: into a
# temporary file, fsync'd, then hard-linked to its name (link() refuses an existing name, so a
# file is never overwritten), the directory fsync'd. See docs/audit-anchors.md for why.

_QUEUE = "checkpoint_witness"


def witness_dir() -> Path | None:
    """The witness directory (the policy's ``audit.witness_dir``: ``AUDIT_WITNESS_DIR``), or None."""
    from flask import has_app_context

    from .. import policy

    if not has_app_context():
        return None
    value = policy.current().audit.witness_dir
    return Path(value) if value else None


def witness_path(directory: Path | str, signed: dict) -> Path:
    name = f"checkpoint-{signed['seq']:015d}-{signed['checkpoint']:09d}.json"
    return Path(directory) / signed["signed_at"][:10] / name


def _encode(signed: dict) -> bytes:
    return (json.dumps(signed, sort_keys=True, separators=(",", ":")) + "\n").encode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WitnessConflict(Exception):
    """A witness file of that name exists with other content: it is evidence, never overwritten."""


def write_witness(directory: Path | str, signed: dict) -> bool:
    """Write one signed statement durably; True if written, False if the same was already there.

    Raises OSError when it cannot write, WitnessConflict when a different statement holds the name.
    """
    path = witness_path(directory, signed)
    body = _encode(signed)
    if path.exists():
        if _same(path, signed):
            return False
        raise WitnessConflict(f"{path} holds another statement; left as it is")
    day = path.parent
    if not day.is_dir():
        day.mkdir(parents=True, exist_ok=True)
        _fsync_dir(day.parent)
    temporary = day / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # atomic, and never replaces an existing file
        except FileExistsError:
            if _same(path, signed):  # another process wrote the same statement just now
                return False
            raise WitnessConflict(f"{path} holds another statement; left as it is") from None
        except OSError as exc:  # a file system without hard links: rename, having checked the name is free
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if path.exists():
                raise WitnessConflict(f"{path} appeared while writing; left as it is") from None
            os.rename(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    _fsync_dir(day)
    return True


def _same(path: Path, signed: dict) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")) == signed
    except (OSError, ValueError):
        return False


@dataclass
class ExportResult:
    written: list[int] = field(default_factory=list)  # checkpoint ids written now
    present: int = 0  # already there, identical
    conflicts: list[str] = field(default_factory=list)  # files holding another statement (left alone)
    errors: list[str] = field(default_factory=list)  # what could not be written, and why


def _write_all(directory: Path | str, statements: list[dict]) -> ExportResult:
    result = ExportResult()
    for signed in statements:
        try:
            if write_witness(directory, signed):
                result.written.append(signed["checkpoint"])
            else:
                result.present += 1
        except WitnessConflict as exc:
            result.conflicts.append(str(exc))
            log.error("audit witness conflict: %s (checkpoint %s)", exc, signed["checkpoint"])
        except OSError as exc:
            result.errors.append(f"checkpoint {signed['checkpoint']}: {exc}")
            log.error("audit checkpoint %s not written to the witness directory %s: %s; the next checkpoint "
                      "or `flask audit anchors --export` writes it", signed["checkpoint"], directory, exc)
    return result


def export_anchors(session: Session, directory: Path | str) -> ExportResult:
    """Write every checkpoint of the database into ``directory`` that is not there yet (files that
    are there are compared, never overwritten): repairs a witness directory after a crash or an
    outage, or makes a first copy for an auditor."""
    statements = [signed_statement(row) for row in
                  session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)).yield_per(1000)]
    Path(directory).mkdir(parents=True, exist_ok=True)
    return _write_all(directory, statements)


def _queue_witness(session: Session, directory: Path, statements: list[dict]) -> None:
    install_hooks()
    session.info.setdefault(_QUEUE, []).append((directory, statements))


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a SAVEPOINT released, not the transaction committed
        return
    for directory, statements in session.info.pop(_QUEUE, ()):
        _write_all(directory, statements)


def _after_transaction_end(session: Session, transaction) -> None:
    if transaction.parent is None:  # rolled back or closed without commit: nothing leaves
        session.info.pop(_QUEUE, None)


def install_hooks() -> None:
    if not event.contains(Session, "after_commit", _after_commit):
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_transaction_end", _after_transaction_end)


# --- what an auditor holds: anchors and the public key -------------------------------------

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_FIELDS = ("seq", "hash", "signed_at", "key_id", "signature")


_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{6})Z")


def _parse_time(value) -> datetime:
    """A statement's time, exactly as it was signed (``YYYY-MM-DDTHH:MM:SS.ffffffZ``)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    match = _TIME.fullmatch(value)
    if match is None:
        raise ValueError(value)
    return datetime(*map(int, match.groups()), tzinfo=timezone.utc)


def _anchor(doc, where: str) -> dict:
    """One statement, checked field by field; ValueError naming the place and the field."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: a checkpoint statement is a JSON object")
    missing = [name for name in _FIELDS if name not in doc]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    version = doc.get("statement_version", STATEMENT_VERSION)
    if version != STATEMENT_VERSION:
        raise ValueError(f"{where}: statement version {version!r} is not known (this verifier knows "
                         f"{STATEMENT_VERSION})")
    seq = doc["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f"{where}: seq must be a whole number of at least 0, not {seq!r}")
    checks = (("hash", _HEX64, "64 lowercase hex digits"), ("key_id", _HEX16, "16 lowercase hex digits"),
              ("signature", _HEX128, "128 lowercase hex digits"))
    for name, pattern, expected in checks:
        if not isinstance(doc[name], str) or not pattern.fullmatch(doc[name]):
            raise ValueError(f"{where}: {name} must be {expected}")
    try:
        signed_at = _parse_time(doc["signed_at"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: signed_at must be a UTC time written YYYY-MM-DDTHH:MM:SS.ffffffZ, "
                         f"not {doc['signed_at']!r}") from None
    checkpoint = doc.get("checkpoint")
    if checkpoint is not None and (isinstance(checkpoint, bool) or not isinstance(checkpoint, int)):
        raise ValueError(f"{where}: checkpoint must be a whole number")
    return {"statement_version": STATEMENT_VERSION, "checkpoint": checkpoint, "seq": seq, "hash": doc["hash"],
            "signed_at": signed_at, "key_id": doc["key_id"], "signature": doc["signature"], "source": where}


def _statements_in(path: Path, label: str) -> list[dict]:
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{label}: not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"{label}: cannot read it ({exc.strerror or exc})") from None
    stripped = text.strip()
    if stripped.startswith("["):  # a JSON array of statements
        try:
            docs = json.loads(stripped)
        except ValueError as exc:
            raise ValueError(f"{label}: not valid JSON ({exc})") from None
        return [_anchor(doc, f"{label} item {i}") for i, doc in enumerate(docs, 1)]
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{label} line {number}: not valid JSON ({exc.msg})") from None
        found.append(_anchor(doc, f"{label} line {number}"))
    return found


def load_anchors(path: str | os.PathLike) -> list[dict]:
    """The checkpoint statements an auditor holds: a witness directory (every ``*.json`` and
    ``*.jsonl`` below it) or one file (JSON lines, one JSON object, or a JSON array).

    Returns them in sequence order, identical copies once, each a dict with seq, hash, signed_at
    (aware UTC datetime), key_id, signature, statement_version, checkpoint (the database id, if
    known) and source (file and line). ValueError with a message naming the file, the line and the
    field when anything is malformed; signatures are not checked here (:func:`anchor_valid`).
    """
    root = Path(path)
    if root.is_dir():
        labelled = []
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            labelled.extend((Path(folder, name), os.path.join(folder, name)) for name in names
                            if not name.startswith(".") and name.endswith((".json", ".jsonl")))
        labelled.sort(key=lambda item: item[1])
    elif root.is_file():
        labelled = [(root, str(root))]
    else:
        raise ValueError(f"{root}: no such file or directory")
    anchors, seen = [], set()
    for file, label in labelled:
        for anchor in _statements_in(file, label):
            identity = (anchor["seq"], anchor["hash"], anchor["signed_at"], anchor["signature"])
            if identity not in seen:
                seen.add(identity)
                anchors.append(anchor)
    if not anchors:
        raise ValueError(f"{root}: holds no checkpoint statements")
    anchors.sort(key=lambda a: (a["seq"], a["signed_at"]))
    return anchors


def load_public_key(pem_path: str | os.PathLike) -> Ed25519PublicKey:
    """The auditor's copy of the checkpoint key (``flask audit public-key``, PEM); ValueError if it
    cannot be read or is not an Ed25519 public key."""
    path = Path(pem_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the public key ({exc.strerror or exc})") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"{path}: not a PEM public key (expected the output of `flask audit public-key`)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key
