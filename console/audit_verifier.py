"""The audit chain's canonical encodings and event hashes, standalone.

This module depends only on the Python standard library (and, for bundles and checkpoint
signatures, on ``cryptography``): the console uses it to chain and verify events, and an outside
auditor runs the very same file, without the console or its database, to check an exported bundle.

Chain version 1 hashes ``sha256(prev_hash + canonical JSON of the fields)``.

Chain version 2 (from issue #14) hashes one line of text: the fields of ``FIELDS`` in that order,
each written as PostgreSQL's ``COPY ... TO STDOUT`` text format writes it (NULL as ``\\N``;
backslash, backspace, form feed, newline, carriage return, tab and vertical tab escaped with a
backslash; every other character as it is, UTF-8), joined by a tab. ``occurred_at`` (UTC) is written
as PostgreSQL writes a ``timestamp`` in ISO style: ``YYYY-MM-DD HH:MM:SS`` and, when there are
microseconds, ``.`` and their six digits with trailing zeros dropped. The line ends with ``prev_hash``, so the
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


def _as_utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def iso_utc(value: datetime | str) -> str:
    """``occurred_at`` as version 1 writes it: UTC, microseconds, ``Z``."""
    if isinstance(value, str) and value.endswith("Z"):
        return value
    return _as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pg_time(value: datetime | str) -> str:
    """``occurred_at`` as version 2 writes it (PostgreSQL's ISO output of a ``timestamp``)."""
    value = _as_utc(value)
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text


def _field_v2(name: str, value) -> str:
    if value is None:
        return "\\N"
    if name == "occurred_at":
        return value if isinstance(value, str) and "T" not in value else pg_time(value)
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

    __slots__ = ("expected", "prev", "count", "problem", "first_prev", "want", "seen", "first_seq", "ordered")

    def __init__(self, first_seq: int, prev_hash: str | None, want=(), *, ordered: bool = True):
        self.expected = first_seq
        self.first_seq = first_seq
        self.prev = prev_hash.encode() if prev_hash is not None else None
        self.first_prev = None
        self.count = 0
        self.problem = None
        self.want = frozenset(want)
        self.seen = {}
        # ordered=False: the lines come in storage order, which is sequence order unless rows were
        # moved; a line out of place is then reported as kind "unordered" (read again, sorted).
        self.ordered = ordered

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
                    if not self.ordered:
                        self._fail(expected, "unordered")
                    else:
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


# --- bundles: what an outside auditor checks (issue #14 part 3, docs/audit-bundles.md) ----------
#
# Everything below is used by ``python audit_verifier.py BUNDLE [--public-key PEM]`` and by the
# console's tests; it needs the standard library and, for the Ed25519 signatures, ``cryptography``
# (imported when a bundle is checked, so the encoding above works without it).

import argparse  # noqa: E402  (the bundle part's imports: standard library only)
import io  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import zipfile  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

BUNDLE_FORMAT = "branch-console-audit-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_SIGNATURE = "manifest.sig"
README = "README.txt"
EVENTS = "events.tsv"
CHECKPOINTS = "checkpoints.jsonl"
PUBLIC_KEY = "public_key.pem"
# The members the manifest lists with their SHA-256 (the manifest is signed, the signature is its own member).
LISTED_MEMBERS = (README, EVENTS, CHECKPOINTS, PUBLIC_KEY)
CHECKPOINT_STATEMENT_VERSION = 1
EVENT_FIELD_COUNT = len(FIELDS) + 1  # the chained fields and the hash
_SMALL_MEMBER_LIMIT = 256 * 1024 * 1024  # every member but events.tsv is read whole
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")

TRUST_NOTE = ("The signatures were checked with the public key inside the bundle. That proves only that "
              "the bundle is consistent with itself: whoever rewrites a bundle can replace its key too. "
              "Check it with the bank's key obtained separately (--public-key) to prove the events are "
              "the ones the bank's console signed.")

_WALK_REASONS = {
    "content": "event {seq} was changed: its content does not match its hash",
    "link": ("event {seq} does not link to event {before}: event {before} was changed and its hash "
             "recomputed, or events were removed or reordered"),
    "duplicate": "sequence number {seq} occurs twice (duplicate event)",
    "missing": "event {seq} is missing (removed from the bundle)",
    "order": "events are out of order: event {seq} is not in its place (it comes later in the bundle)",
    "malformed": "the line of event {seq} is not a canonical event line ({fields} tab-separated fields)",
}


def checkpoint_statement(seq: int, head_hash: str, signed_at: str) -> bytes:
    """What a checkpoint signs (statement version 1): canonical JSON of the head and the time."""
    return json.dumps({"v": CHECKPOINT_STATEMENT_VERSION, "seq": seq, "hash": head_hash, "at": signed_at},
                      sort_keys=True, separators=(",", ":")).encode()


def load_public_key(pem) -> "object":
    """An Ed25519 public key from PEM text or bytes; ValueError if it is not one."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = pem.encode() if isinstance(pem, str) else bytes(pem)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def public_key_id(key) -> str:
    """The key id the console writes beside each signature: SHA-256 of the raw key, 16 hex digits."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _signature_valid(key, signature_hex, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(bytes.fromhex(signature_hex), message)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


@dataclass
class BundleResult:
    """What :func:`verify_bundle` found. ``status``: "intact", "tampered" or "unreadable"."""

    status: str
    first_bad_seq: int | None = None
    reason: str | None = None
    problems: list = field(default_factory=list)  # (seq or None, message), first bad first
    first: int | None = None  # the range the manifest states
    last: int | None = None
    events: int = 0  # events whose hash and link were checked before any problem
    checkpoints: int = 0  # checkpoints whose signature verified and whose event matched
    key_source: str | None = None  # "auditor" (--public-key) or "bundle" (the key inside it)
    key_id: str | None = None
    manifest_signed: bool = False  # the manifest's signature verified with that key
    notes: list = field(default_factory=list)
    manifest: dict | None = None

    @property
    def intact(self) -> bool:
        return self.status == "intact"

    @property
    def exit_code(self) -> int:
        return {"intact": 0, "tampered": 1}.get(self.status, 2)

    def verdict(self) -> str:
        """The result as a person reads it."""
        lines = []
        if self.first is not None:
            created = (self.manifest or {}).get("created_at", "?")
            lines.append(f"Bundle of audit events {self.first}..{self.last}, created {created}.")
        if self.key_source == "auditor":
            lines.append(f"Signatures checked with the auditor's public key (key id {self.key_id}).")
        elif self.key_source == "bundle":
            lines.append(f"Signatures checked with the public key inside the bundle (key id {self.key_id}).")
        if self.status == "intact":
            lines.append(f"VERDICT: INTACT - {self.events} events: every hash and link holds, "
                         f"{self.checkpoints} signed checkpoint(s) and the signed manifest match them.")
        elif self.status == "tampered":
            where = (f"first bad event: seq {self.first_bad_seq}" if self.first_bad_seq is not None
                     else "no single event to name")
            lines.append(f"VERDICT: TAMPERED - {where}: {self.reason}")
            others = self.problems[1:]
            if others:
                lines.append("Also found:")
                lines.extend(f"  - {message}" for _seq, message in others[:20])
                if len(others) > 20:
                    lines.append(f"  ... and {len(others) - 20} more")
        else:
            lines.append(f"VERDICT: UNREADABLE - {self.reason}")
        lines.extend(f"Note: {note}" for note in self.notes)
        return "\n".join(lines)


class _Unreadable(Exception):
    pass


def _read_small(archive: zipfile.ZipFile, name: str) -> bytes:
    info = archive.getinfo(name)
    if info.file_size > _SMALL_MEMBER_LIMIT:
        raise _Unreadable(f"{name} is larger than {_SMALL_MEMBER_LIMIT} bytes")
    return archive.read(name)


def _manifest(raw: bytes) -> dict:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Unreadable(f"{MANIFEST} is not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise _Unreadable(f"{MANIFEST} does not describe an audit bundle of this console (format {BUNDLE_FORMAT!r})")
    if doc.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise _Unreadable(f"bundle format version {doc.get('format_version')!r} is not known to this verifier "
                          f"(it knows version {BUNDLE_FORMAT_VERSION})")
    rng = doc.get("range")
    first, last = (rng.get("from"), rng.get("to")) if isinstance(rng, dict) else (None, None)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (first, last)) or not 1 <= first <= last:
        raise _Unreadable(f"{MANIFEST} states no valid range of sequence numbers")
    for name in ("counts", "members", "first_prev_hash", "last_event", "checkpoints"):
        if name not in doc:
            raise _Unreadable(f"{MANIFEST} lacks {name!r}")
    return doc


def _checkpoint_docs(raw: bytes, problems: list) -> list[dict]:
    """The bundle's checkpoints; a malformed line is a problem (that checkpoint is not used)."""
    found = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        problems.append((None, 5, f"{CHECKPOINTS} is not UTF-8 text"))
        return found
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            doc = None
        ok = (isinstance(doc, dict) and isinstance(doc.get("seq"), int) and not isinstance(doc.get("seq"), bool)
              and doc["seq"] >= 0 and isinstance(doc.get("hash"), str) and _HEX64.fullmatch(doc["hash"])
              and isinstance(doc.get("signed_at"), str) and _TIME.fullmatch(doc["signed_at"])
              and isinstance(doc.get("signature"), str) and _HEX128.fullmatch(doc["signature"]))
        if not ok:
            seq = doc.get("seq") if isinstance(doc, dict) and isinstance(doc.get("seq"), int) else None
            problems.append((seq, 2, f"{CHECKPOINTS} line {number} is not a signed checkpoint statement"))
            continue
        version = doc.get("statement_version", CHECKPOINT_STATEMENT_VERSION)
        if version != CHECKPOINT_STATEMENT_VERSION:
            problems.append((doc["seq"], 2, f"{CHECKPOINTS} line {number}: statement version {version!r} is not "
                                            f"known to this verifier"))
            continue
        found.append(doc)
    return found


def _name(doc: dict) -> str:
    number = doc.get("checkpoint")
    return f"checkpoint {number} (seq {doc['seq']})" if number is not None else f"the checkpoint at seq {doc['seq']}"


def _walk_events(archive: zipfile.ZipFile, first: int, want) -> dict:
    """Hash and link every event line in order (``LineChecker``); the member's digest and size."""
    digest, size = hashlib.sha256(), 0
    checker = LineChecker(first, None, want)
    problem, lines_total, missing_seen_later = None, 0, False

    def chunks(handle):
        nonlocal size
        while True:
            block = handle.read(1 << 20)
            if not block:
                return
            digest.update(block)
            size += len(block)
            yield block

    with archive.open(EVENTS) as handle:
        for lines in split_lines(chunks(handle)):
            lines_total += len(lines)
            if problem is None:
                try:
                    if checker.feed(lines):
                        continue
                    problem = checker.problem
                except ValueError:  # a line without the shape of one (LineChecker stopped before it)
                    problem = (checker.expected, "malformed")
                    continue
            if problem[1] == "missing" and not missing_seen_later:
                # Whether the expected event is further on: a reorder, not a removal.
                for line in lines:
                    tab = line.find(b"\t")
                    if tab > 0 and line[:tab].isdigit() and int(line[:tab]) == problem[0]:
                        missing_seen_later = True
                        break
    if problem is not None and problem[1] == "missing" and missing_seen_later:
        problem = (problem[0], "order")
    return {"checker": checker, "problem": problem, "lines": lines_total, "sha256": digest.hexdigest(), "bytes": size}


def verify_bundle(path_or_bytes, public_key_pem=None) -> BundleResult:
    """Check an audit bundle offline; never raises for a bad bundle (status "unreadable" instead).

    ``public_key_pem``: the auditor's copy of the bank's checkpoint key (PEM text or bytes). Without
    it the key inside the bundle is used, which proves only the bundle's internal consistency.
    Checks: the manifest's signature, digests and counts; every event's hash (chain versions 1
    and 2) and its link to the one before, gapless from the range's start; every checkpoint's
    Ed25519 signature and that the event at its sequence number has the hash it signed. The
    first bad sequence number is the first event no longer proven: an event changed, missing,
    duplicated or out of order, or the start of a stretch that no longer matches the signed
    statement after it (a rewrite with every later hash recomputed), or the first event after
    the last one a valid signature covers.
    """
    try:
        return _verify_bundle(path_or_bytes, public_key_pem)
    except _Unreadable as exc:
        return BundleResult("unreadable", reason=str(exc))
    except zipfile.BadZipFile as exc:
        return BundleResult("unreadable", reason=f"the zip archive is damaged ({exc})")
    except (OSError, EOFError) as exc:
        return BundleResult("unreadable", reason=f"cannot read the bundle ({exc})")
    except (TypeError, KeyError, AttributeError, ValueError) as exc:  # a manifest of the wrong shape
        return BundleResult("unreadable", reason=f"the bundle is malformed ({type(exc).__name__}: {exc})")


def _verify_bundle(source, public_key_pem) -> BundleResult:
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile:
        raise _Unreadable("not a zip archive (an audit bundle is one)") from None
    with archive:
        return _check(archive, public_key_pem)


def _check(archive: zipfile.ZipFile, public_key_pem) -> BundleResult:
    problems: list = []  # (seq or None, rank, message); the lowest (seq, rank) is the verdict
    notes: list = []
    names = archive.namelist()
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append((None, 5, f"the bundle holds member {name} more than once"))
    for name in (MANIFEST, EVENTS):
        if name not in names:
            raise _Unreadable(f"the bundle has no {name}")
    manifest_raw = _read_small(archive, MANIFEST)
    manifest = _manifest(manifest_raw)
    first, last = manifest["range"]["from"], manifest["range"]["to"]
    result = BundleResult("tampered", first=first, last=last, manifest=manifest, notes=notes)

    # The key: the auditor's when given, else the bundle's own (and say what that proves).
    bundle_pem = _read_small(archive, PUBLIC_KEY) if PUBLIC_KEY in names else None
    bundle_key = None
    if bundle_pem is not None:
        try:
            bundle_key = load_public_key(bundle_pem)
        except ValueError as exc:
            problems.append((None, 3, f"{PUBLIC_KEY} in the bundle is {exc}"))
    if public_key_pem is not None:
        try:
            key = load_public_key(public_key_pem)
        except ValueError as exc:
            raise _Unreadable(f"the auditor's public key is {exc}") from None
        result.key_source, where = "auditor", "the auditor's public key"
        if bundle_key is not None and public_key_id(bundle_key) != public_key_id(key):
            problems.append((None, 3, f"the bundle carries another public key (key id {public_key_id(bundle_key)}) "
                                      f"than the auditor's (key id {public_key_id(key)})"))
    else:
        if bundle_key is None:
            raise _Unreadable("the bundle carries no usable public key and none was given (--public-key)")
        key, where = bundle_key, "the bundle's own public key"
        result.key_source = "bundle"
        notes.append(TRUST_NOTE)
    result.key_id = public_key_id(key)
    if bundle_key is not None and manifest.get("key_id") != public_key_id(bundle_key):
        problems.append((None, 3, f"the manifest names key id {manifest.get('key_id')!r}, the bundle's key is "
                                  f"{public_key_id(bundle_key)}"))

    # The manifest's signature: what proves its range, counts, digests and last hash.
    signature = _read_small(archive, MANIFEST_SIGNATURE).decode("ascii", "replace").strip() \
        if MANIFEST_SIGNATURE in names else None
    result.manifest_signed = signature is not None and _signature_valid(key, signature, manifest_raw)
    unsigned_why = (f"the bundle has no {MANIFEST_SIGNATURE}" if signature is None
                    else f"the manifest's signature does not verify with {where}")
    if not result.manifest_signed:
        problems.append((None, 5, unsigned_why + ": its range, counts and digests prove nothing"))

    # Members: each listed one present with its digest; nothing else in the bundle.
    listed = manifest["members"] if isinstance(manifest["members"], dict) else {}
    for name in sorted(set(names) - set(listed) - {MANIFEST, MANIFEST_SIGNATURE}):
        problems.append((None, 5, f"member {name} is not listed in the manifest"))
    for name, entry in sorted(listed.items()):
        if name == EVENTS:
            continue
        if name not in names:
            problems.append((None, 5, f"member {name}, listed in the manifest, is missing"))
            continue
        if not isinstance(entry, dict) or hashlib.sha256(_read_small(archive, name)).hexdigest() != entry.get("sha256"):
            problems.append((None, 5, f"member {name} does not match the manifest's SHA-256"))

    # Checkpoints: signature with the chosen key; the manifest lists them all.
    docs = _checkpoint_docs(_read_small(archive, CHECKPOINTS), problems) if CHECKPOINTS in names else []
    valid = []
    for doc in docs:
        if _signature_valid(key, doc["signature"], checkpoint_statement(doc["seq"], doc["hash"], doc["signed_at"])):
            if first - 1 <= doc["seq"] <= last:
                valid.append(doc)
            else:
                notes.append(f"{_name(doc)} lies outside the range {first}..{last}; not compared with events")
        else:
            problems.append((doc["seq"], 1, f"{_name(doc)} has a signature that does not verify with {where}"
                             + (f" (it names key id {doc.get('key_id')})" if doc.get("key_id") != result.key_id
                                else "")))
    stated = {(c.get("checkpoint"), c.get("seq"), c.get("hash"))
              for c in (manifest["checkpoints"] if isinstance(manifest["checkpoints"], list) else [])
              if isinstance(c, dict)}
    held = {(d.get("checkpoint"), d["seq"], d["hash"]) for d in docs}
    for number, seq, _hash in sorted(stated - held, key=lambda c: (c[1] if isinstance(c[1], int) else -1)):
        problems.append((seq if isinstance(seq, int) else None, 2,
                         f"checkpoint {number} at seq {seq}, listed in the manifest, is missing from the bundle"))
    for number, seq, _hash in sorted(held - stated, key=lambda c: c[1]):
        problems.append((seq, 2, f"checkpoint {number} at seq {seq} is not listed in the manifest"))

    # Events: every hash and link, gapless from the range's start.
    walk = _walk_events(archive, first, {d["seq"] for d in valid} | {last})
    checker, walk_problem = walk["checker"], walk["problem"]
    result.events = checker.count
    end = checker.expected - 1  # the last event checked good
    if walk_problem is not None:
        seq, kind = walk_problem
        problems.append((seq, 0, _WALK_REASONS[kind].format(seq=seq, before=seq - 1, fields=EVENT_FIELD_COUNT)))
    elif end < last:
        problems.append((end + 1, 0, f"events {end + 1}..{last} were cut off: the bundle ends at seq {end}, "
                                     f"its range at {last}" if end >= first else "the bundle holds no events"))
    elif end > last:
        problems.append((last + 1, 0, f"events {last + 1}..{end} lie beyond the bundle's range {first}..{last}"))
    if first == 1 and checker.first_prev is not None and checker.first_prev != GENESIS_HASH:
        problems.append((1, 0, "event 1 does not start from the genesis hash"))
    events_entry = listed.get(EVENTS) if isinstance(listed.get(EVENTS), dict) else {}
    if events_entry.get("sha256") != walk["sha256"]:
        problems.append((None, 5, f"{EVENTS} does not match the manifest's SHA-256 (spliced, cut or edited)"))
    last_event = manifest["last_event"] if isinstance(manifest["last_event"], dict) else {}
    head = manifest.get("chain_head") if isinstance(manifest.get("chain_head"), dict) else {}
    if not isinstance(head.get("seq"), int) or head["seq"] < last:
        problems.append((None, 5, f"the manifest's chain head ({head.get('seq')!r}) lies before its range's end {last}"))
    elif head["seq"] == last and head.get("hash") != last_event.get("hash"):
        problems.append((None, 5, "the manifest's chain head is its last event, with another hash"))
    counts = manifest["counts"] if isinstance(manifest["counts"], dict) else {}
    if counts.get("events") != walk["lines"]:
        problems.append((None, 5, f"the manifest counts {counts.get('events')!r} events, {EVENTS} holds "
                                  f"{walk['lines']} lines"))

    # What the signed statements vouch for: each must match the event at its sequence number; the
    # events between two of them are proven by the later one.
    known = dict(checker.seen)
    if checker.first_prev is not None:
        known[first - 1] = checker.first_prev
    marks = [(d["seq"], d["hash"], _name(d)) for d in valid]
    if result.manifest_signed:
        marks.append((first - 1, manifest["first_prev_hash"], "the signed manifest's first link"))
        if isinstance(last_event.get("seq"), int):
            marks.append((last_event["seq"], last_event.get("hash"), "the signed manifest's last event"))
    marks.sort(key=lambda m: m[0])
    stop = (walk_problem[0] - 1) if walk_problem is not None else end
    vouched, broken = first - 1, False
    matched = set()
    for seq, signed_hash, name in marks:
        if seq > stop:
            if walk_problem is None:
                problems.append((stop + 1, 1, f"events {stop + 1}..{seq} were cut off (they are covered by {name})"))
                broken = True
            break
        if known.get(seq) != signed_hash:
            if seq == first - 1:
                problems.append((first, 1, f"event {first}'s link to the event before it no longer matches {name}"))
            else:
                problems.append((vouched + 1, 1, f"events between seq {vouched + 1} and {seq} were rewritten: "
                                                 f"they no longer match {name}"))
            broken = True
            break
        vouched = max(vouched, seq)
        matched.add(name)
    result.checkpoints = sum(1 for d in valid if _name(d) in matched)
    if not broken and walk_problem is None and not result.manifest_signed:
        if vouched < end:
            problems.append((vouched + 1, 4, f"events {vouched + 1}..{end} are covered by no valid signature "
                                             f"({unsigned_why})"))
        else:
            problems.append((vouched + 1, 4, f"nothing proves the bundle ends at seq {end}: events after seq "
                                             f"{vouched} may have been cut off ({unsigned_why})"))

    if not problems:
        result.status = "intact"
        return result
    problems.sort(key=lambda p: (p[0] is None, p[0] if p[0] is not None else 0, p[1]))
    result.problems = [(seq, message) for seq, _rank, message in problems]
    result.first_bad_seq, result.reason = result.problems[0]
    return result


def _run(bundle: str, public_key_path: str | None) -> BundleResult:
    pem = None
    if public_key_path is not None:
        try:
            with open(public_key_path, "rb") as handle:
                pem = handle.read()
        except OSError as exc:
            return BundleResult("unreadable", reason=f"cannot read the public key {public_key_path} ({exc.strerror})")
    if not os.path.isfile(bundle):
        return BundleResult("unreadable", reason=f"{bundle}: no such file")
    return verify_bundle(bundle, pem)


def main(argv=None) -> int:
    """``python audit_verifier.py BUNDLE [--public-key PEM]``: 0 intact, 1 tampered, 2 unreadable."""
    parser = argparse.ArgumentParser(
        prog="audit_verifier.py",
        description="Check an audit bundle exported by Branch Console (flask audit bundle, or the auditor's "
                    "workbench), without the console or its database.")
    parser.add_argument("bundle", help="the bundle file (.zip)")
    parser.add_argument("--public-key", metavar="PEM",
                        help="the bank's audit public key, obtained separately from the bundle "
                             "(flask audit public-key); without it the bundle's own key is used")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = _run(args.bundle, args.public_key)
    if args.json:
        print(json.dumps({"status": result.status, "first_bad_seq": result.first_bad_seq, "reason": result.reason,
                          "problems": result.problems, "range": [result.first, result.last],
                          "events": result.events, "checkpoints": result.checkpoints,
                          "key_source": result.key_source, "key_id": result.key_id,
                          "manifest_signed": result.manifest_signed, "notes": result.notes}, indent=2))
    else:
        print(result.verdict())
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
