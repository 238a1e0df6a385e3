"""The audit chain's canonical encodings and event hashes, standalone.

This module depends only on the Python standard library (and, for bundles and checkpoint
signatures, on ``cryptography``): the console uses it to chain and verify events, and an outside
auditor runs the very same file, without the console or its database, to check an exported bundle.

Chain version 1 hashes ``sha256(prev_hash + canonical JSON of the fields)``.

Chain version 2 (from issue #14) hashes one line of text: the fields of ``FIELDS`` in that order,
each written as PostgreSQL's ``COPY ... TO STDOUT`` text format writes it (NULL as ``\\N``;
backslash, backspace, form feed, newline, carriage return, tab and vertical tab escaped with a
backslash; every other character as it is, UTF-8), joined by a tab. ``occurred_at`` is written
``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, always six digits). The line ends with ``prev_hash``, so the
hash of an event covers its predecessor's hash: ``hash = sha256(line).hexdigest()``. The database
can therefore stream events in their canonical form (``COPY``), and verification hashes bytes it
never has to parse.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

GENESIS_HASH = "0" * 64

# The hashed fields, in canonical order (both versions hash these; version 1 as sorted JSON keys).
FIELDS = (
    "seq", "occurred_at", "actor_type", "actor_id", "actor_employee_no", "actor_role",
    "actor_branch", "source_ip", "session_id", "channel", "action", "outcome", "reason_code",
    "customer_ref", "case_ref", "verification_id", "approval_id", "receipt_no",
    "before_state", "after_state", "details", "chain_version", "prev_hash",
)
INT_FIELDS = frozenset({"seq", "actor_id", "verification_id", "approval_id", "chain_version"})
CURRENT_VERSION = 2

_ESCAPES = str.maketrans({"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                          "\t": "\\t", "\v": "\\v"})
_UNESCAPES = {"\\": "\\", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def iso_utc(value: datetime | str) -> str:
    """``occurred_at`` as both versions write it: UTC, microseconds, ``Z``."""
    if isinstance(value, str):
        return value
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _field_v2(name: str, value) -> str:
    if value is None:
        return "\\N"
    if name == "occurred_at":
        return iso_utc(value)
    if name in INT_FIELDS:
        return str(int(value))
    return str(value).translate(_ESCAPES)


def encode_v2(row) -> bytes:
    """The canonical line of a version-2 event (without a trailing newline)."""
    return "\t".join([_field_v2(name, row[name]) for name in FIELDS]).encode()


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(_UNESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def decode_v2(line: bytes | str) -> dict:
    """The fields of a canonical line (the inverse of :func:`encode_v2`)."""
    if isinstance(line, bytes):
        line = line.decode()
    parts = line.split("\t")
    if len(parts) != len(FIELDS):
        raise ValueError(f"a canonical line has {len(FIELDS)} fields, this one {len(parts)}")
    row = {}
    for name, raw in zip(FIELDS, parts):
        if raw == "\\N":
            row[name] = None
        elif name in INT_FIELDS:
            row[name] = int(raw)
        else:
            row[name] = _unescape(raw)
    return row


def canonical_v1(row) -> bytes:
    """Version 1: canonical JSON (sorted keys, compact, UTF-8) of the fields."""
    doc = {name: row[name] for name in FIELDS}
    doc["occurred_at"] = iso_utc(row["occurred_at"])
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(row) -> str:
    """The hash an event must carry, for either chain version (``row`` maps field names to values)."""
    version = row["chain_version"]
    if version == 2:
        return hashlib.sha256(encode_v2(row)).hexdigest()
    if version == 1:
        return hashlib.sha256(row["prev_hash"].encode() + canonical_v1(row)).hexdigest()
    raise ValueError(f"unknown chain version {version}")


class LineChecker:
    """Walks canonical lines (``<line>\\t<hash>``, as ``COPY`` streams them) in sequence order.

    Keeps the expected next sequence number and the previous hash; records the first problem and
    the hashes at the sequence numbers asked for (checkpoints). Version-1 events are decoded and
    checked the slow way; version-2 lines are hashed as they are.
    """

    __slots__ = ("expected", "prev", "count", "problem", "first_prev", "want", "seen", "first_seq")

    def __init__(self, first_seq: int, prev_hash: str | None, want=()):
        self.expected = first_seq
        self.first_seq = first_seq
        self.prev = prev_hash.encode() if prev_hash is not None else None
        self.first_prev = None
        self.count = 0
        self.problem = None
        self.want = frozenset(want)
        self.seen = {}

    def _fail(self, seq: int, kind: str) -> None:
        self.problem = (seq, kind)

    def feed(self, lines) -> bool:
        """Check lines; False once a problem was found (the rest is not looked at)."""
        sha = hashlib.sha256
        expected, prev, want = self.expected, self.prev, self.want
        count = self.count
        try:
            for line in lines:
                tab = line.index(b"\t")
                seq = int(line[:tab])
                if seq != expected:
                    self.expected, self.prev, self.count = expected, prev, count
                    self._fail(expected if seq > expected else seq, "duplicate" if seq < expected else "missing")
                    return False
                stored = line[-64:]
                body = line[:-65]
                link = body[-64:]
                if prev is None:
                    self.first_prev = link.decode()
                elif link != prev:
                    self.expected, self.prev, self.count = expected, prev, count
                    self._fail(seq, "link")
                    return False
                if body[-67:-64] == b"\t2\t":
                    ok = sha(body).hexdigest().encode() == stored
                else:
                    row = decode_v2(body)
                    ok = event_hash(row).encode() == stored
                if not ok:
                    self.expected, self.prev, self.count = expected, prev, count
                    self._fail(seq, "content")
                    return False
                if seq in want:
                    self.seen[seq] = stored.decode()
                prev = stored
                expected += 1
                count += 1
        finally:
            if self.problem is None:
                self.expected, self.prev, self.count = expected, prev, count
        return True

    @property
    def last_hash(self) -> str | None:
        return self.prev.decode() if self.prev is not None else None


def split_lines(chunks):
    """Lines (without their newline) from a stream of byte chunks cut anywhere."""
    rest = b""
    for chunk in chunks:
        data = rest + bytes(chunk)
        lines = data.split(b"\n")
        rest = lines.pop()
        yield lines
    if rest:
        yield [rest]
