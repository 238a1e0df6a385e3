"""Audit bundles: one file an outside auditor checks without the console (docs/audit-bundles.md).

A bundle is a zip archive of the chained events ``first..last`` (each as its canonical line and
hash), the signed checkpoints that fall in the range, the public key, and a manifest (range,
counts, the link to the event before the range, the last event's hash, the chain head, every
member's SHA-256) signed with the audit key. ``console/audit_verifier.py`` checks it offline
(``verify_bundle``, or ``python audit_verifier.py BUNDLE --public-key KEY.pem``).

The bundle holds what the database holds: an event missing or changed in the database is missing
or changed in the bundle, and the verifier names it. Building one is audited (``audit.bundle``,
with the range, the counts and the file's SHA-256). The service writes into a seekable binary
file it is given and never commits.
"""
from __future__ import annotations

import hashlib
import json
import time
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import audit_verifier as av
from ..models.audit import GENESIS_HASH, AuditEvent, ChainHead
from ..timeutil import utcnow
from . import audit, checkpoints
from .actor import Actor
from .errors import InvalidInput

ACTION = "audit.bundle"
DEFAULT_MAX_EVENTS = 1_000_000  # config AUDIT_BUNDLE_MAX_EVENTS overrides it at the edges
CHUNK = 5000  # events read per query
ZIP64_FROM = 250_000  # ranges this long may pass 2 GiB of text: write ZIP64 records
COMPRESS_LEVEL = 1  # deflate: a fast level; event text still shrinks about 5x

README_TEXT = """\
审计包 (audit bundle) - Branch Console

本文件是审计链中一段连续事件的完整副本，可在没有本系统及其数据库的情况下由外部审计人员独立核验。
This file is a complete copy of a stretch of the audit chain, for an outside auditor to check
without the console or its database.

Members / 内容:
  events.tsv         one event per line: the chained fields in canonical order (PostgreSQL COPY
                     text encoding, tab-separated), then a tab and the event's SHA-256 hash.
                     For chain version 2 the hash is sha256 of everything before that last tab.
  checkpoints.jsonl  the signed checkpoints (Ed25519) whose sequence number lies in the range
                     (or just before it); usable as an anchors file (flask audit verify --anchors).
  public_key.pem     the public key the console signed with, as the console reported it.
  manifest.json      range, counts, the hash linking the first event to the one before it, the last
                     event's hash, the chain head when the bundle was made, every member's SHA-256.
  manifest.sig       Ed25519 signature (hex) over the bytes of manifest.json.

To verify / 核验:
  python audit_verifier.py THIS_FILE.zip --public-key BANK_KEY.pem
  (exit status 0 intact, 1 tampered - the first bad sequence number is named -, 2 unreadable)
Use the bank's public key obtained separately, not the copy inside this file: the copy inside
proves only that the bundle is consistent with itself.
"""


@dataclass
class BundleInfo:
    first: int
    last: int
    events: int
    checkpoints: int
    sha256: str  # of the whole file
    size: int
    head_seq: int
    head_hash: str
    manifest_sha256: str

    @property
    def filename(self) -> str:
        return filename(self.first, self.last)


def filename(first: int, last: int) -> str:
    return f"audit-bundle-{first}-{last}.zip"


def chain_head(session: Session) -> tuple[int, str]:
    row = session.execute(select(ChainHead.seq, ChainHead.hash).where(ChainHead.id == 1)).first()
    return (row.seq, row.hash) if row is not None else (0, GENESIS_HASH)


def range_problem(head_seq: int, first: int, last: int, max_events: int) -> str | None:
    """Why ``first..last`` cannot be bundled ("empty", "start", "order", "beyond", "size"), or None."""
    if head_seq < 1:
        return "empty"
    if first < 1:
        return "start"
    if first > last:
        return "order"
    if last > head_seq:
        return "beyond"
    if last - first + 1 > max_events:
        return "size"
    return None


def _sign(data: bytes) -> str:
    """Ed25519 signature (hex) with the audit key, the one checkpoints are signed with."""
    return checkpoints._private_key().sign(data).hex()


def _blocks(copy, size: int = 1 << 20):
    """COPY's data (a message per row) gathered into blocks of about ``size`` bytes."""
    parts, held = [], 0
    for chunk in copy:
        parts.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(parts)
            parts, held = [], 0
    if parts:
        yield b"".join(parts)


def _event_lines(session: Session, first: int, last: int):
    """The events' lines (``encode_v2`` of the fields, a tab, the hash) in sequence order, in chunks.

    PostgreSQL streams them with ``COPY ... TO STDOUT``: its text format of these columns is the
    canonical encoding (docs/audit-chain.md), so the lines come out of the database ready-made.
    Elsewhere (SQLite) the rows are read in one streamed query and encoded here. Flat memory for
    any range.
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        columns = ", ".join(av.FIELDS + ("hash",))
        with driver.cursor() as cur:
            cur.execute("SET LOCAL DateStyle = 'ISO, YMD'")  # the canonical form of occurred_at
            with cur.copy(f"COPY (SELECT {columns} FROM audit_event WHERE seq BETWEEN {int(first)} AND "
                          f"{int(last)} ORDER BY seq) TO STDOUT") as copy:
                for lines in av.split_lines(_blocks(copy)):
                    if lines:
                        yield lines
        return
    table_columns = [AuditEvent.__table__.c[name] for name in av.FIELDS + ("hash",)]
    query = select(*table_columns).where(AuditEvent.seq >= first, AuditEvent.seq <= last).order_by(AuditEvent.seq)
    result = connection.execution_options(yield_per=CHUNK).execute(query)
    try:
        for rows in result.mappings().partitions():
            yield [av.encode_v2(row) + b"\t" + row["hash"].encode() for row in rows]
    finally:
        result.close()


def _member(name: str) -> zipfile.ZipInfo:
    """A member written as a stream, dated now like the others (``open(name)`` would date it 1980)."""
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    # What ZipFile.open(name) sets: ``_compresslevel`` up to Python 3.12, ``compress_level`` from 3.13.
    setattr(info, "compress_level" if hasattr(info, "compress_level") else "_compresslevel", COMPRESS_LEVEL)
    return info


def write_bundle(session: Session, out: BinaryIO, first: int, last: int, *, created_by: Actor) -> BundleInfo:
    """Write the bundle of ``first..last`` into ``out`` (a seekable binary file); nothing is recorded."""
    head_seq, head_hash = chain_head(session)
    members: dict[str, dict] = {}
    signed = [cp for cp in checkpoints.all_checkpoints(session) if first - 1 <= cp.seq <= last]
    statements = [checkpoints.signed_statement(cp) for cp in signed]
    count, first_prev, last_event = 0, None, None
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL) as archive:
        readme = README_TEXT.encode()
        archive.writestr(av.README, readme)
        members[av.README] = {"sha256": hashlib.sha256(readme).hexdigest(), "bytes": len(readme)}

        digest, size = hashlib.sha256(), 0
        with archive.open(_member(av.EVENTS), "w", force_zip64=last - first + 1 >= ZIP64_FROM) as handle:
            for lines in _event_lines(session, first, last):
                block = b"\n".join(lines) + b"\n"
                digest.update(block)
                size += len(block)
                handle.write(block)
                if first_prev is None:
                    first_prev = lines[0][-129:-65].decode()  # the first event's prev_hash
                count += len(lines)
                tail = lines[-1]
                last_event = {"seq": int(tail[:tail.index(b"\t")]), "hash": tail[-64:].decode()}
        members[av.EVENTS] = {"sha256": digest.hexdigest(), "bytes": size, "lines": count}

        body = "".join(json.dumps(s, sort_keys=True, separators=(",", ":")) + "\n" for s in statements).encode()
        archive.writestr(av.CHECKPOINTS, body)
        members[av.CHECKPOINTS] = {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body),
                                   "lines": len(statements)}

        pem = checkpoints.public_key_pem().encode()
        archive.writestr(av.PUBLIC_KEY, pem)
        members[av.PUBLIC_KEY] = {"sha256": hashlib.sha256(pem).hexdigest(), "bytes": len(pem)}

        manifest = {
            "format": av.BUNDLE_FORMAT,
            "format_version": av.BUNDLE_FORMAT_VERSION,
            "created_at": av.iso_utc(utcnow()),
            "created_by": {"actor_type": created_by.kind, "employee_no": created_by.employee_no,
                           "role": created_by.role},
            "range": {"from": first, "to": last},
            "counts": {"events": count, "checkpoints": len(statements)},
            "first_prev_hash": first_prev,
            "last_event": last_event,
            "chain_head": {"seq": head_seq, "hash": head_hash},
            "checkpoints": [{"checkpoint": s["checkpoint"], "seq": s["seq"], "hash": s["hash"]} for s in statements],
            "members": members,
            "key_id": checkpoints.key_id(),
            "event_line": {"fields": list(av.FIELDS) + ["hash"],
                           "encoding": "PostgreSQL COPY text format, tab-separated, one event per line; "
                                       "chain version 2 hash = sha256 of the line without its last field"},
            "signature": {"algorithm": "Ed25519", "member": av.MANIFEST_SIGNATURE,
                          "over": "the bytes of manifest.json"},
        }
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
        archive.writestr(av.MANIFEST, manifest_bytes)
        archive.writestr(av.MANIFEST_SIGNATURE, _sign(manifest_bytes) + "\n")
    out.flush()
    out.seek(0)
    whole, total = hashlib.sha256(), 0
    while block := out.read(1 << 20):
        whole.update(block)
        total += len(block)
    out.seek(0)
    return BundleInfo(first, last, count, len(statements), whole.hexdigest(), total, head_seq, head_hash,
                      hashlib.sha256(manifest_bytes).hexdigest())


def build(session: Session, actor: Actor, out: BinaryIO, first: int, last: int, *,
          max_events: int = DEFAULT_MAX_EVENTS) -> BundleInfo:
    """Write the bundle of ``first..last`` into ``out`` and record ``audit.bundle``.

    ``InvalidInput`` (its message one of :func:`range_problem`'s codes, ``head`` and ``max_events``
    in its details) when the range is not within the chain or longer than ``max_events``.
    """
    head_seq, _hash = chain_head(session)
    problem = range_problem(head_seq, first, last, max_events)
    if problem is not None:
        raise InvalidInput(problem, field="range", head=head_seq, max_events=max_events)
    info = write_bundle(session, out, first, last, created_by=actor)
    audit.record(session, actor, ACTION, details={
        "from": first, "to": last, "events": info.events, "checkpoints": info.checkpoints,
        "sha256": info.sha256, "bytes": info.size, "manifest_sha256": info.manifest_sha256,
        "head_seq": info.head_seq, "format_version": av.BUNDLE_FORMAT_VERSION})
    return info
