"""Streaming the audit chain to the bank's SIEM: RFC 5424 syslog over TCP or TLS.

Every chained event (a row of ``audit_event``) is sent once it is chained, in ``seq`` order, as one
RFC 5424 message framed by octet counting (RFC 6587 section 3.4.1: ``LENGTH SP MESSAGE``). The
message carries the event's fields as structured data (SD-ID ``audit@<enterprise>``), the whole
event as compact JSON in MSG (so the SIEM holds a copy an auditor can re-hash), and for an
``audit.checkpoint`` event the signed checkpoint (``checkpoint@<enterprise>``: seq, hash,
signed_at, key_id, signature and the exact statement that was signed). See docs/siem.md.

Guarantees:

- **In order, from a cursor.** The cursor (``audit_stream_cursor``, one row per stream name) holds
  the last ``seq`` delivered. Each round sends the events after it, contiguous (a missing or
  duplicated sequence number halts the stream and is reported, never skipped), then moves it.
- **At least once.** The cursor moves only after the batch was written to the socket and the
  receiver's TCP stack acknowledged every byte (the send queue is empty) and the connection is
  still open; and it is committed before the next batch is read. A crash or a failed commit
  between the send and the cursor update resends that batch. Plain syslog has no
  application-level acknowledgement: a receiver that is stopped while our bytes sit unread in its
  TCP receive buffer (acknowledged by its kernel, never read) loses them silently, and that buffer
  grows to megabytes. Therefore every connection opened after a lost one (or after a recorded
  failure, by a restarted exporter) first resends the events before the cursor whose messages
  fill ``SIEM_REPLAY_BYTES``, more than that buffer can hold. Duplicates are byte-identical copies
  (same ``seq`` and ``hash``); the SIEM keeps the first of each ``seq``.
- **One exporter per stream.** On PostgreSQL the run loop holds a session advisory lock per stream
  name for as long as it runs (others stand by and take over when its connection dies), and each
  round locks the cursor row. On SQLite (one node) run one exporter.

The run loop is a worker like the SMS worker: it commits the cursor after every batch, through the
``commit`` its entry point hands it (``boundary.commit_now``; see console/siem_cli.py). The
measurements behind these choices are in docs/siem.md.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import select as select_module
import socket
import ssl
import struct
import termios
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..models.audit import AuditCheckpoint, AuditEvent, AuditStreamCursor, ChainHead
from ..timeutil import utcnow

log = logging.getLogger(__name__)

# --- configuration (config.py BaseConfig; each can be set as CONSOLE_<KEY>) ----------------------

# Where to send: tcp://host:port (plain TCP) or tls://host:port (TLS, server certificate verified).
# Unset: nothing is exported (``flask audit siem-export`` refuses to start).
SIEM_SYSLOG_URL: str | None = None
# PEM bundle of the CA(s) that signed the SIEM's certificate (tls:// only; default: system CAs).
SIEM_CA_FILE: str | None = None
# Client certificate and its key (PEM files) when the SIEM requires mutual TLS.
SIEM_CLIENT_CERT_FILE: str | None = None
SIEM_CLIENT_KEY_FILE: str | None = None
# Events per batch: one query, one write to the socket, one cursor update.
SIEM_BATCH = 200
# After a lost connection, the new one first resends the events before the cursor whose messages
# total at least this many bytes: what a receiver stopped with our bytes unread in its TCP receive
# buffer may have lost. Keep it above the receiver's largest receive buffer (Linux: the third value
# of net.ipv4.tcp_rmem, 6 MiB by default). 0: no resend (events can then be lost; docs/siem.md).
SIEM_REPLAY_BYTES = 8 * 1024 * 1024
# RFC 5424 APP-NAME and HOSTNAME of the messages (HOSTNAME default: this machine's name).
SIEM_APP_NAME = "branch-console"
SIEM_HOSTNAME: str | None = None
# The IANA Private Enterprise Number in the SD-IDs (audit@PEN, checkpoint@PEN). 32473 is the
# number reserved for documentation (RFC 5612): set the bank's own.
SIEM_ENTERPRISE_ID = "32473"
# RFC 5424 facility of every message (13: log audit).
SIEM_FACILITY = 13
# Seconds to wait for a connection, a write or the receiver's acknowledgement.
SIEM_TIMEOUT_SECONDS = 10
# Seconds between polls when every event is delivered; after a failure the wait doubles from this
# up to SIEM_BACKOFF_MAX_SECONDS.
SIEM_INTERVAL_SECONDS = 1.0
SIEM_BACKOFF_MAX_SECONDS = 30.0

CONFIG_KEYS = ("SIEM_SYSLOG_URL", "SIEM_CA_FILE", "SIEM_CLIENT_CERT_FILE", "SIEM_CLIENT_KEY_FILE", "SIEM_BATCH",
               "SIEM_REPLAY_BYTES", "SIEM_APP_NAME", "SIEM_HOSTNAME", "SIEM_ENTERPRISE_ID", "SIEM_FACILITY",
               "SIEM_TIMEOUT_SECONDS", "SIEM_INTERVAL_SECONDS", "SIEM_BACKOFF_MAX_SECONDS")

DEFAULT_STREAM = "siem"

# RFC 5424 severities by outcome (codes.OUTCOMES): informational, notice, warning.
SEVERITY = {"success": 6, "denied": 5, "failed": 4}

# The event's fields in the ``audit@`` element, in this order; a NULL field is left out.
SD_FIELDS = (
    "seq", "hash", "prev_hash", "chain_version", "occurred_at", "action", "outcome", "reason_code",
    "actor_type", "actor_id", "actor_employee_no", "actor_role", "actor_branch", "source_ip", "session_id",
    "channel", "customer_ref", "case_ref", "verification_id", "approval_id", "receipt_no",
)
CHECKPOINT_ACTION = "audit.checkpoint"


class SettingsError(ValueError):
    """A SIEM setting is unusable; the message names the CONSOLE_ setting."""


class TransportError(OSError):
    """The connection to the SIEM failed, was closed, or did not acknowledge what was written."""


class StreamHalted(RuntimeError):
    """The chain has a missing or duplicated sequence number where the stream stands: nothing past
    it is sent until it is resolved (docs/siem.md, "Guarantees")."""


@dataclass(frozen=True)
class Settings:
    url: str | None = SIEM_SYSLOG_URL
    ca_file: str | None = SIEM_CA_FILE
    client_cert_file: str | None = SIEM_CLIENT_CERT_FILE
    client_key_file: str | None = SIEM_CLIENT_KEY_FILE
    batch: int = SIEM_BATCH
    replay_bytes: int = SIEM_REPLAY_BYTES
    app_name: str = SIEM_APP_NAME
    hostname: str | None = SIEM_HOSTNAME
    enterprise_id: str = SIEM_ENTERPRISE_ID
    facility: int = SIEM_FACILITY
    timeout: float = SIEM_TIMEOUT_SECONDS
    interval: float = SIEM_INTERVAL_SECONDS
    backoff_max: float = SIEM_BACKOFF_MAX_SECONDS

    def header_host(self) -> str:
        return _header_token(self.hostname or socket.gethostname(), 255)


def settings_from_config(config: Mapping[str, Any]) -> Settings:
    """The exporter's settings from the application's configuration (defaults for keys not set)."""
    def get(key, default):
        value = config.get(key)
        return default if value is None or value == "" else value

    try:
        values = Settings(
            url=get("SIEM_SYSLOG_URL", None), ca_file=get("SIEM_CA_FILE", None),
            client_cert_file=get("SIEM_CLIENT_CERT_FILE", None), client_key_file=get("SIEM_CLIENT_KEY_FILE", None),
            batch=int(get("SIEM_BATCH", SIEM_BATCH)),
            replay_bytes=int(get("SIEM_REPLAY_BYTES", SIEM_REPLAY_BYTES)),
            app_name=str(get("SIEM_APP_NAME", SIEM_APP_NAME)), hostname=get("SIEM_HOSTNAME", None),
            enterprise_id=str(get("SIEM_ENTERPRISE_ID", SIEM_ENTERPRISE_ID)),
            facility=int(get("SIEM_FACILITY", SIEM_FACILITY)),
            timeout=float(get("SIEM_TIMEOUT_SECONDS", SIEM_TIMEOUT_SECONDS)),
            interval=float(get("SIEM_INTERVAL_SECONDS", SIEM_INTERVAL_SECONDS)),
            backoff_max=float(get("SIEM_BACKOFF_MAX_SECONDS", SIEM_BACKOFF_MAX_SECONDS)),
        )
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"a CONSOLE_SIEM_* setting is not a number: {exc}") from None
    return check_settings(values)


def check_settings(values: Settings) -> Settings:
    problems = []
    if values.url is not None:
        try:
            parse_url(values.url)
        except SettingsError as exc:
            problems.append(str(exc))
    if not 1 <= values.batch <= 10000:
        problems.append("CONSOLE_SIEM_BATCH must be between 1 and 10000")
    if values.replay_bytes < 0:
        problems.append("CONSOLE_SIEM_REPLAY_BYTES must be 0 or more")
    if not values.enterprise_id.isdigit():
        problems.append("CONSOLE_SIEM_ENTERPRISE_ID must be an IANA Private Enterprise Number (digits)")
    if not 0 <= values.facility <= 23:
        problems.append("CONSOLE_SIEM_FACILITY must be an RFC 5424 facility, 0 to 23")
    if values.timeout <= 0 or values.interval <= 0 or values.backoff_max < values.interval:
        problems.append("CONSOLE_SIEM_TIMEOUT_SECONDS and CONSOLE_SIEM_INTERVAL_SECONDS must be positive, "
                        "CONSOLE_SIEM_BACKOFF_MAX_SECONDS at least the interval")
    if bool(values.client_cert_file) != bool(values.client_key_file):
        problems.append("CONSOLE_SIEM_CLIENT_CERT_FILE and CONSOLE_SIEM_CLIENT_KEY_FILE go together")
    if not _header_token(values.app_name, 48) or _header_token(values.app_name, 48) != values.app_name:
        problems.append("CONSOLE_SIEM_APP_NAME must be 1 to 48 printable ASCII characters without spaces")
    if problems:
        raise SettingsError("; ".join(problems))
    return values


def parse_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of tcp://host:port or tls://host:port."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname, parts.port
    except ValueError:
        scheme, host, port = "", None, None
    if scheme not in ("tcp", "tls") or not host or not port or parts.path not in ("", "/") or parts.query:
        raise SettingsError(f"CONSOLE_SIEM_SYSLOG_URL must be tcp://host:port or tls://host:port, not {url!r}")
    return scheme, host, port


# --- the message ---------------------------------------------------------------------------------


def sd_escape(value: str) -> str:
    """An SD-PARAM value as RFC 5424 section 6.3.3 requires: ``"``, ``\\`` and ``]`` escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_token(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` characters (else "-")."""
    cleaned = "".join(ch for ch in str(value) if 33 <= ord(ch) <= 126)[:limit]
    return cleaned or "-"


def _iso(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sd_element(sd_id: str, params: Iterable[tuple[str, Any]]) -> str:
    body = "".join(f' {name}="{sd_escape(value if isinstance(value, str) else str(value))}"'
                   for name, value in params if value is not None)
    return f"[{sd_id}{body}]"


def checkpoint_statement(details: Mapping[str, Any], row: AuditCheckpoint | None = None) -> dict | None:
    """The signed checkpoint an ``audit.checkpoint`` event stands for: from its details (which carry
    signed_at and signature since #14), else from its ``audit_checkpoint`` row when that row still
    matches the event's seq and hash. None when neither has a signature."""
    from . import checkpoints

    seq, head_hash = details.get("seq"), details.get("hash")
    signed_at, signature, key_id = details.get("signed_at"), details.get("signature"), details.get("key_id")
    if (not signed_at or not signature) and row is not None and row.seq == seq and row.hash == head_hash:
        signed_at, signature, key_id = row.signed_at, row.signature, row.key_id
    if not signed_at or not signature or seq is None or not head_hash:
        return None
    try:
        when = datetime.fromisoformat(signed_at.replace("Z", "+00:00")) if isinstance(signed_at, str) else signed_at
        return {"id": details.get("checkpoint"), "seq": int(seq), "hash": head_hash, "signed_at": _iso(when),
                "key_id": key_id, "signature": signature,
                "statement": checkpoints.statement(int(seq), head_hash, when).decode()}
    except (AttributeError, TypeError, ValueError):  # details not as written by checkpoints: sent without
        log.warning("siem: checkpoint %s: details unreadable; its event is sent without the statement",
                    details.get("checkpoint"))
        return None


def format_event(row: Mapping[str, Any], settings: Settings = Settings(), *, hostname: str | None = None,
                 checkpoint: Mapping[str, Any] | None = None) -> bytes:
    """One RFC 5424 message (unframed) for an ``audit_event`` row.

    ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [audit@PEN ...][checkpoint@PEN ...] MSG``: the
    timestamp is the event's ``occurred_at``, MSGID its action, MSG the whole event as compact JSON
    (ASCII, sorted keys; the JSON snapshots it holds as the strings that were hashed). The same row
    always gives the same bytes, so a resent event is an identical copy.
    """
    pri = settings.facility * 8 + SEVERITY.get(row["outcome"], 5)
    values = {name: row.get(name) for name in SD_FIELDS}
    values["occurred_at"] = _iso(row["occurred_at"])
    sd = _sd_element(f"audit@{settings.enterprise_id}", values.items())
    if checkpoint is not None:
        sd += _sd_element(f"checkpoint@{settings.enterprise_id}", (
            (name, checkpoint.get(name)) for name in ("id", "seq", "hash", "signed_at", "key_id", "signature",
                                                       "statement")))
    doc = {key: (_iso(value) if isinstance(value, datetime) else value) for key, value in row.items()}
    msg = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    header = (f"<{pri}>1 {values['occurred_at']} {hostname or settings.header_host()} "
              f"{_header_token(settings.app_name, 48)} - {_header_token(row['action'], 32)}")
    return f"{header} {sd} {msg}".encode("utf-8")


def frame(message: bytes) -> bytes:
    """RFC 6587 octet-counting framing: the length in bytes, a space, the message."""
    return b"%d %s" % (len(message), message)


# --- the transport -------------------------------------------------------------------------------


class SyslogTransport:
    """One TCP (or TLS) connection to the SIEM, opened when needed.

    ``send`` writes the frames, then waits until the receiver's TCP stack has acknowledged every
    byte (Linux: the socket's send queue, SIOCOUTQ, is empty) and checks that the connection is
    still open: only then may the cursor move. The exporter keeps, per connection, the last seq
    written (``position``) and how far a resend after a lost connection goes (``replay_to``).
    """

    def __init__(self, url: str, *, ca_file: str | None = None, client_cert_file: str | None = None,
                 client_key_file: str | None = None, timeout: float = SIEM_TIMEOUT_SECONDS):
        self.scheme, self.host, self.port = parse_url(url)
        self.url = url
        self.ca_file, self.client_cert_file, self.client_key_file = ca_file, client_cert_file, client_key_file
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self.lost = False  # the last connection failed (rather than being closed by us)
        self.connections = 0
        self.position: int | None = None
        self.replay_to: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SyslogTransport:
        if not settings.url:
            raise SettingsError("CONSOLE_SIEM_SYSLOG_URL is not set (tcp://host:port or tls://host:port)")
        return cls(settings.url, ca_file=settings.ca_file, client_cert_file=settings.client_cert_file,
                   client_key_file=settings.client_key_file, timeout=settings.timeout)

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        self.close()
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            self.lost = True
            raise TransportError(f"cannot connect to {self.url}: {exc}") from exc
        try:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self.scheme == "tls":
                context = ssl.create_default_context(cafile=self.ca_file)
                if self.client_cert_file:
                    context.load_cert_chain(self.client_cert_file, self.client_key_file)
                raw = context.wrap_socket(raw, server_hostname=self.host)
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            self.lost = True
            raise TransportError(f"TLS with {self.url} failed: {exc}") from exc
        self._sock = raw
        self.connections += 1
        self.position = self.replay_to = None

    def peer_closed(self) -> bool:
        """Has the receiver closed (or reset) the connection? Never blocks."""
        sock = self._sock
        if sock is None:
            return True
        try:
            readable, _, _ = select_module.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        if not readable and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            return False
        try:
            if isinstance(sock, ssl.SSLSocket):
                # A TLS 1.3 session ticket makes the socket readable without any application data.
                sock.setblocking(False)
                try:
                    data = sock.recv(1)
                finally:
                    sock.settimeout(self.timeout)
            else:
                data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError:
            return True
        return data == b""  # a syslog receiver never sends; anything else is ignored

    def send(self, frames: Sequence[bytes]) -> None:
        if self._sock is None:
            self.connect()
        try:
            self._sock.sendall(b"".join(frames))
            self._wait_acknowledged()
            error = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, "connection failed")
        except OSError as exc:
            self.close(lost=True)
            raise TransportError(f"sending to {self.url} failed: {exc}") from exc
        if self.peer_closed():
            self.close(lost=True)
            raise TransportError(f"{self.url} closed the connection")

    def _wait_acknowledged(self) -> None:
        """Until the receiver's TCP stack has acknowledged every byte written (Linux SIOCOUTQ)."""
        deadline = time.monotonic() + self.timeout
        pause = 0.0002
        buffer = struct.pack("i", 0)
        while True:
            try:
                unacknowledged = struct.unpack("i", fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ, buffer))[0]
            except OSError:  # not Linux: written to the socket is all we know
                return
            if unacknowledged == 0:
                return
            # A reset connection keeps its count of unacknowledged bytes: ask for its error too.
            error = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, f"connection failed with {unacknowledged} bytes unacknowledged")
            if time.monotonic() > deadline:
                raise OSError(f"{unacknowledged} bytes not acknowledged within {self.timeout:g} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def close(self, *, lost: bool = False) -> None:
        sock, self._sock = self._sock, None
        if lost:
            self.lost = True
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


# --- the exporter --------------------------------------------------------------------------------


def _cursor(session: Session, name: str, *, lock: bool) -> AuditStreamCursor:
    query = select(AuditStreamCursor).where(AuditStreamCursor.name == name).execution_options(populate_existing=True)
    if lock:
        query = query.with_for_update()
    cursor = session.scalars(query).first()
    if cursor is None:
        cursor = AuditStreamCursor(name=name, seq=0, updated_at=None, last_error=None)
        session.add(cursor)
        session.flush()
    return cursor


def _contiguous(rows: list, start: int, batch: int) -> list:
    """The rows to send: seq start+1, start+2, ... up to the first missing or duplicated number.

    ``rows`` holds up to ``batch + 1`` rows, so a duplicate of the batch's last seq is seen too.
    """
    expected, good = start + 1, []
    for row in rows:
        seq = row["seq"]
        if seq == expected:
            good.append(row)
            expected += 1
            continue
        if seq == expected - 1:  # a duplicated sequence number: send neither copy
            good.pop()
            if not good:
                raise StreamHalted(f"sequence number {seq} appears twice in the chain; the stream halts before it")
        elif not good:
            raise StreamHalted(f"event {expected} is missing from the chain; the stream halts before it")
        break
    return good[:batch]


def _checkpoints_for(session: Session, rows: list) -> dict[int, dict]:
    """seq -> the signed checkpoint of each ``audit.checkpoint`` event among ``rows``."""
    details = {}
    for row in rows:
        if row["action"] == CHECKPOINT_ACTION and row["details"]:
            try:
                parsed = json.loads(row["details"])
            except ValueError:
                continue
            if isinstance(parsed, dict):
                details[row["seq"]] = parsed
    if not details:
        return {}
    missing = {d["checkpoint"] for d in details.values() if not d.get("signature") and d.get("checkpoint")}
    stored = {cp.id: cp for cp in session.scalars(select(AuditCheckpoint).where(AuditCheckpoint.id.in_(missing)))} \
        if missing else {}
    out = {}
    for seq, d in details.items():
        statement = checkpoint_statement(d, stored.get(d.get("checkpoint")))
        if statement is not None:
            out[seq] = statement
    return out


def replay_start(session: Session, cursor_seq: int, settings: Settings) -> int:
    """The seq after which a connection opened after a lost one resends: walking back from the
    cursor, the first point where the framed messages total ``settings.replay_bytes``."""
    total, high, hostname = 0, cursor_seq, settings.header_host()
    while high > 0:
        low = max(0, high - 1000)
        rows = session.execute(select(AuditEvent.__table__).where(AuditEvent.seq > low, AuditEvent.seq <= high)
                               .order_by(AuditEvent.seq.desc())).mappings().all()
        for row in rows:
            total += len(frame(format_event(row, settings, hostname=hostname)))
            if total >= settings.replay_bytes:
                return row["seq"] - 1
        high = low
    return 0


def export_once(session: Session, transport: SyslogTransport, *, settings: Settings = Settings(),
                commit: Callable[[], None] | None = None, name: str = DEFAULT_STREAM) -> int:
    """Send the next batch of chained events after the cursor; the number of messages written.

    The cursor row is locked (PostgreSQL) for the round; it moves only after the batch was written
    and acknowledged, in ``session``'s transaction, which ``commit`` (if given) then commits. A
    connection opened after a lost one first resends the events before the cursor whose messages
    fill ``settings.replay_bytes`` (:func:`replay_start`). Raises :class:`TransportError` (nothing
    moved) or :class:`StreamHalted`.
    """
    cursor = _cursor(session, name, lock=True)
    if transport.connected and transport.peer_closed():
        log.warning("siem %s: %s closed the connection; reconnecting", name, transport.url)
        transport.close(lost=True)
    if not transport.connected:
        after_loss = transport.lost or cursor.last_error is not None
        transport.connect()
        transport.lost = False
        transport.position = cursor.seq
        if after_loss and settings.replay_bytes and cursor.seq:
            transport.position = replay_start(session, cursor.seq, settings)
            transport.replay_to = cursor.seq
            log.warning("siem %s: new connection after a lost one: resending events %s..%s", name,
                        transport.position + 1, cursor.seq)
    start = cursor.seq
    if transport.replay_to is not None and transport.position < transport.replay_to:
        start = transport.position
    else:
        transport.replay_to = None
    rows = session.execute(select(AuditEvent.__table__).where(AuditEvent.seq > start)
                           .order_by(AuditEvent.seq).limit(settings.batch + 1)).mappings().all()
    rows = _contiguous(list(rows), start, settings.batch)
    if rows:
        statements = _checkpoints_for(session, rows)
        hostname = settings.header_host()
        frames = [frame(format_event(row, settings, hostname=hostname, checkpoint=statements.get(row["seq"])))
                  for row in rows]
        transport.send(frames)
        last = rows[-1]["seq"]
        transport.position = last
        if last > cursor.seq:
            cursor.seq = last
        cursor.updated_at = utcnow()
    if rows or cursor.last_error is not None:
        cursor.last_error = None
    session.flush()
    if commit is not None:
        commit()
    return len(rows)


def note_failure(session: Session, name: str, error: BaseException, *, commit: Callable[[], None] | None) -> None:
    """Record the failure on the cursor row (``last_error``) in a transaction of its own."""
    session.rollback()
    message = f"{type(error).__name__}: {error}"[:500]
    try:
        cursor = _cursor(session, name, lock=False)
        cursor.last_error = message
        session.flush()
        if commit is not None:
            commit()
    except SQLAlchemyError as exc:
        session.rollback()
        log.error("siem %s: could not record the failure (%s): %s", name, exc, message)


def status(session: Session, name: str = DEFAULT_STREAM) -> dict:
    """How far the stream is behind the chain head (for /readyz detail and the chain page).

    ``behind``: events chained but not delivered; ``lag_seconds``: age of the oldest of them (0
    when none); ``state``: "not_started" (no cursor yet), "failing" (the last round failed,
    ``last_error`` says why), "behind" or "ok".
    """
    cursor = session.scalars(select(AuditStreamCursor).where(AuditStreamCursor.name == name)
                             .execution_options(populate_existing=True)).first()
    head_seq = session.scalar(select(ChainHead.seq).where(ChainHead.id == 1)) or 0
    cursor_seq = cursor.seq if cursor else 0
    behind = max(0, head_seq - cursor_seq)
    oldest = None
    lag = 0.0
    if behind:
        oldest = session.scalar(select(AuditEvent.occurred_at).where(AuditEvent.seq == cursor_seq + 1).limit(1))
        if oldest is not None:
            lag = max(0.0, (utcnow() - oldest).total_seconds())
    if cursor is None:
        state = "not_started"
    elif cursor.last_error:
        state = "failing"
    else:
        state = "behind" if behind else "ok"
    return {
        "name": name, "state": state, "cursor_seq": cursor_seq, "head_seq": head_seq, "behind": behind,
        "oldest_undelivered_at": _iso(oldest) if oldest is not None else None, "lag_seconds": round(lag, 3),
        "updated_at": _iso(cursor.updated_at) if cursor and cursor.updated_at else None,
        "last_error": cursor.last_error if cursor else None,
    }


class _Leadership:
    """One active exporter per stream across nodes: a PostgreSQL session advisory lock held on a
    connection of its own for as long as the exporter runs (released when it stops or dies)."""

    def __init__(self, engine, name: str):
        self.engine = engine
        self.key = int.from_bytes(hashlib.sha256(f"console.audit_stream:{name}".encode()).digest()[:8], "big",
                                  signed=True)
        self.conn = None

    def acquire(self) -> bool:
        if self.engine.dialect.name != "postgresql":
            return True
        if self.conn is not None:
            try:
                self.conn.execute(text("SELECT 1"))
                return True
            except SQLAlchemyError:
                log.warning("siem: the connection holding the exporter lock was lost")
                self._drop()
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            held = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar()
        except SQLAlchemyError:
            conn.close()
            raise
        if held:
            self.conn = conn
            return True
        conn.close()
        return False

    def _drop(self) -> None:
        conn, self.conn = self.conn, None
        try:
            conn.invalidate()
            conn.close()
        except SQLAlchemyError:
            pass

    def release(self) -> None:
        if self.conn is None:
            return
        try:
            self.conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            self.conn.close()
        except SQLAlchemyError:
            self._drop()
        self.conn = None


@dataclass
class RunResult:
    sent: int = 0
    rounds: int = 0
    failures: int = 0
    last_error: str | None = None
    standby: bool = False  # --once found another exporter active


def run(session: Session, transport: SyslogTransport, *, commit: Callable[[], None],
        settings: Settings = Settings(), name: str = DEFAULT_STREAM, once: bool = False,
        stop: threading.Event | None = None) -> RunResult:
    """Export until ``stop`` is set: batch after batch while events wait, then a poll every
    ``settings.interval`` seconds. A failure (the SIEM unreachable or restarting, the database
    away) is recorded on the cursor and retried after a wait that doubles up to
    ``settings.backoff_max``. With ``once``, return when every event is delivered or at the first
    failure."""
    stop = stop or threading.Event()
    leader = _Leadership(session.get_bind(), name)
    result = RunResult()
    backoff = settings.interval
    try:
        while not stop.is_set():
            try:
                if not leader.acquire():
                    if once:
                        result.standby = True
                        return result
                    session.close()
                    stop.wait(settings.interval)
                    continue
                sent = export_once(session, transport, settings=settings, commit=commit, name=name)
            except (TransportError, StreamHalted, SQLAlchemyError) as exc:
                result.failures += 1
                result.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("siem %s: %s (retrying in %.2f s)", name, result.last_error, backoff)
                # A new connection after any failure: a batch sent but not recorded (its commit
                # failed) is resent there, so the stream only ever goes back at a new connection.
                transport.close(lost=isinstance(exc, TransportError))
                note_failure(session, name, exc, commit=commit)
                session.close()
                if once:
                    return result
                stop.wait(backoff)
                backoff = min(backoff * 2, settings.backoff_max)
                continue
            result.rounds += 1
            result.sent += sent
            result.last_error = None
            backoff = settings.interval
            if sent:
                continue
            session.close()  # no connection held while idle
            if once:
                return result
            stop.wait(settings.interval)
        return result
    finally:
        transport.close()
        leader.release()
        session.close()


def with_overrides(settings: Settings, **changes) -> Settings:
    """``settings`` with some values changed, checked again (the CLI's options)."""
    return check_settings(replace(settings, **changes))
