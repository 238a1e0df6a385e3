"""The SIEM stream (console/services/siem.py) against a real rsyslog started by the fixture.

rsyslogd (Debian package ``rsyslog``; TLS needs ``rsyslog-gnutls``; scripts/system-deps.sh installs
both) runs in the foreground from a generated configuration in the test's temporary directory:
``imtcp`` on a free loopback port (octet-counted framing), every message written to a file as one
JSON line holding the raw message byte for byte and what rsyslog's own RFC 5424 parser made of it
(structured data, MSGID, APP-NAME, HOSTNAME, MSG). The tests parse the raw messages independently.
"""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from flask.cli import AppGroup
from sqlalchemy import select

from console import audit_verifier, boundary, timeutil
from console.extensions import db
from console.models.audit import AuditCheckpoint, AuditEvent, AuditStreamCursor
from console.services import audit, checkpoints, siem
from console.services.actor import Actor

from .conftest import tamper

RSYSLOGD = shutil.which("rsyslogd") or next((p for p in ("/usr/sbin/rsyslogd",) if os.path.exists(p)), None)
GTLS = bool(glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so") or glob.glob("/usr/lib/rsyslog/lmnsd_gtls.so"))

pytestmark = pytest.mark.skipif(RSYSLOGD is None, reason="rsyslogd is not installed (Debian package rsyslog; "
                                                         "run scripts/system-deps.sh)")

TEMPLATE = """
template(name="siemjson" type="list") {
  constant(value="{\\"raw\\":\\"") property(name="rawmsg" format="json")
  constant(value="\\",\\"sd\\":\\"") property(name="structured-data" format="json")
  constant(value="\\",\\"msgid\\":\\"") property(name="msgid" format="json")
  constant(value="\\",\\"app\\":\\"") property(name="app-name" format="json")
  constant(value="\\",\\"host\\":\\"") property(name="hostname" format="json")
  constant(value="\\",\\"msg\\":\\"") property(name="msg" format="json")
  constant(value="\\"}\\n")
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rsyslog:
    """rsyslogd in the foreground (``-n -f conf -i pidfile``), in ``root``; restartable on its port."""

    def __init__(self, root: Path, *, tls: dict | None = None):
        self.root = root
        self.port = _free_port()
        self.out = root / "received.jsonl"
        self.log = root / "rsyslogd.log"
        self.pidfile = root / "rsyslogd.pid"
        self.conf = root / "rsyslog.conf"
        (root / "work").mkdir(parents=True, exist_ok=True)
        tls_global = tls_module = ""
        if tls:
            tls_global = (f' DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{tls["ca"]}"'
                          f' DefaultNetstreamDriverCertFile="{tls["cert"]}"'
                          f' DefaultNetstreamDriverKeyFile="{tls["key"]}"')
            tls_module = ' StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon"'
        self.conf.write_text(
            f'global(workDirectory="{root / "work"}" maxMessageSize="64k"'
            f' parser.escapeControlCharactersOnReceive="off"{tls_global})\n'
            'main_queue(queue.workerThreads="1")\n'  # one worker: written in the order received
            f'module(load="imtcp"{tls_module})\n'
            + TEMPLATE +
            f'ruleset(name="siem") {{ action(type="omfile" file="{self.out}" template="siemjson") }}\n'
            f'input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="siem"'
            ' supportOctetCountedFraming="on")\n')
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                                         stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"rsyslogd did not listen on {self.port}: {self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, *, kill: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL: a crash) and start again on the same port."""
        if kill and self.proc is not None:
            self.proc.kill()
            self.proc.wait(15)
            self.proc = None
            # a crash can cut the last line short: end it, as a log shipper would, so the next
            # message starts a line of its own (the cut one is unreadable and ignored)
            if self.out.exists() and not self.out.read_bytes().endswith(b"\n"):
                with self.out.open("ab") as fh:
                    fh.write(b"\n")
        self.stop()
        self.start()

    def received(self) -> list[dict]:
        if not self.out.exists():
            return []
        lines = self.out.read_text(encoding="utf-8", errors="replace").split("\n")
        out = []
        for line in lines[:-1]:  # the last piece is "" or a line being written
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut short by a killed rsyslogd (never with SIGTERM)
                continue
        return out

    def wait_for(self, predicate, timeout=30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.received()
            if predicate(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"rsyslog did not receive what was expected in {timeout} s "
                                     f"({len(got)} messages)")
            time.sleep(0.05)


@pytest.fixture
def start_exporter(app):
    """``start_exporter(conf)``: an :class:`Exporter` running; stopped at the end of the test
    whatever happened (a failed assertion must not leave it writing to a dropped database)."""
    started = []

    def start(conf):
        exporter = Exporter(app, conf)
        started.append(exporter)
        exporter.start()
        return exporter

    yield start
    for exporter in started:
        exporter.stop_event.set()
        exporter.join(30)


@pytest.fixture
def rsyslog(tmp_path):
    server = Rsyslog(tmp_path / "rsyslog")
    server.start()
    yield server
    server.stop()


# --- an independent RFC 5424 reader -------------------------------------------------------------


def parse_5424(raw: str) -> dict:
    """PRI, header fields, structured data ({SD-ID: {name: value}} with escapes undone) and MSG."""
    assert raw.startswith("<"), raw[:80]
    pri, rest = raw[1:].split(">", 1)
    version, timestamp, host, app, procid, msgid, rest = rest.split(" ", 6)
    assert version == "1"
    sd, i = {}, 0
    if rest.startswith("-"):
        i = 1
    while i < len(rest) and rest[i] == "[":
        j = i + 1
        while rest[j] not in " ]":
            j += 1
        sd_id, params = rest[i + 1:j], {}
        i = j
        while rest[i] == " ":
            eq = rest.index("=", i)
            name = rest[i + 1:eq]
            assert rest[eq + 1] == '"', rest[i:i + 40]
            k, value = eq + 2, []
            while rest[k] != '"':
                if rest[k] == "\\" and rest[k + 1] in '"\\]':
                    value.append(rest[k + 1])
                    k += 2
                else:
                    value.append(rest[k])
                    k += 1
            params[name] = "".join(value)
            i = k + 1
        assert rest[i] == "]", rest[i:i + 40]
        sd[sd_id] = params
        i += 1
    assert rest[i] == " "
    return {"pri": int(pri), "timestamp": timestamp, "host": host, "app": app, "procid": procid, "msgid": msgid,
            "sd": sd, "sd_text": rest[:i], "msg": rest[i + 1:]}


def seqs(messages) -> list[int]:
    return [int(parse_5424(m["raw"])["sd"]["audit@32473"]["seq"]) for m in messages]


# --- events ------------------------------------------------------------------------------------------


def _record_many(session, actor, count, fields):
    for i in range(count):
        audit.record(session, actor, "audit.search", details={"i": i, "note": 'say "hi" [ok] \\ done'}, **fields)


def make_events(count: int, *, per_transaction: int = 100, **fields) -> int:
    """``count`` events through audit.record, committed by the boundary; the chain head's seq after."""
    actor = Actor.operator()
    while count > 0:
        k = min(count, per_transaction)
        boundary.perform(actor, _record_many, k, fields)
        count -= k
    db.session.rollback()
    return head_seq()


def head_seq() -> int:
    db.session.rollback()
    value = db.session.scalar(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).limit(1)) or 0
    db.session.rollback()
    return value


def rows_by_seq() -> dict[int, dict]:
    db.session.rollback()
    rows = db.session.execute(select(AuditEvent.__table__).order_by(AuditEvent.seq)).mappings().all()
    db.session.rollback()
    return {row["seq"]: dict(row) for row in rows}


def cursor_row(name=siem.DEFAULT_STREAM):
    """The cursor's values, read in a transaction that is over when this returns (SQLite's writer
    lock is taken by every transaction here, and the exporter thread needs it)."""
    db.session.rollback()
    row = db.session.get(AuditStreamCursor, name)
    values = None if row is None else SimpleNamespace(seq=row.seq, last_error=row.last_error)
    db.session.rollback()
    return values


def wait_for_cursor(seq: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (cursor_row() or SimpleNamespace(seq=0)).seq < seq:
        assert time.monotonic() < deadline, f"the cursor did not reach {seq} in {timeout} s"
        time.sleep(0.1)


def settings(**changes) -> siem.Settings:
    return siem.with_overrides(siem.Settings(hostname="node-a"), **changes)


def export_all(url, **changes) -> siem.RunResult:
    conf = settings(url=url, **changes)
    result = siem.run(db.session, siem.SyslogTransport.from_settings(conf), commit=db.session.commit,
                      settings=conf, once=True)
    db.session.rollback()
    return result


class Exporter(threading.Thread):
    """``siem.run`` in a thread of its own, with its own app context and session, until stopped."""

    def __init__(self, app, conf: siem.Settings):
        super().__init__(daemon=True)
        self.app, self.conf = app, conf
        self.stop_event = threading.Event()
        self.transport = siem.SyslogTransport.from_settings(conf)
        self.result = self.error = None

    def run(self):
        try:
            with self.app.app_context():
                self.result = siem.run(db.session, self.transport, commit=db.session.commit, settings=self.conf,
                                       stop=self.stop_event)
                db.session.remove()
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def finish(self) -> siem.RunResult:
        self.stop_event.set()
        self.join(30)
        assert not self.is_alive(), "the exporter did not stop"
        if self.error:
            raise self.error
        return self.result


def receive_buffer_max() -> int:
    """The largest TCP receive buffer this machine's kernel gives a socket (what a stopped rsyslog
    can hold unread, acknowledged, and then drop)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return siem.SIEM_REPLAY_BYTES


# Enough to cover what a restarted rsyslog on this machine can lose (docs/siem.md).
REPLAY_BYTES = max(siem.SIEM_REPLAY_BYTES, receive_buffer_max() + 1024 * 1024)


def assert_at_least_once_in_order(messages, head: int, *, connections: int, conf: siem.Settings) -> dict:
    """Every seq 1..head present; first copies in order; duplicates byte-identical; the raw stream
    goes back only when a new connection starts, and never further than the replay budget (bytes)
    plus the batch whose send failed (it may have arrived)."""
    order = seqs(messages)
    first: dict[int, str] = {}
    for seq, message in zip(order, messages):
        if seq in first:
            assert message["raw"] == first[seq], f"seq {seq} was sent twice with different content"
        else:
            first[seq] = message["raw"]
    assert list(first) == list(range(1, head + 1)), "not every event arrived, or not in order"
    size = {seq: len(siem.frame(raw.encode())) for seq, raw in first.items()}
    descents = [(a, b) for a, b in zip(order, order[1:]) if b <= a]
    assert len(descents) <= connections - 1, f"went back {len(descents)} times over {connections} connections"
    for a, b in descents:
        resent = sum(size[s] for s in range(b + 1, a - conf.batch + 1))
        assert resent < conf.replay_bytes + max(size.values()), f"went back from {a} to {b}: more than the replay"
    return {"duplicates": len(order) - len(first), "descents": descents}


# --- tests ---------------------------------------------------------------------------------------------


def test_sd_escape_and_framing():
    assert siem.sd_escape('a"b]c\\d') == 'a\\"b\\]c\\\\d'
    assert siem.sd_escape("plain 中文") == "plain 中文"
    assert siem.frame("中".encode()) == b"3 \xe4\xb8\xad"
    with pytest.raises(siem.SettingsError):
        siem.parse_url("udp://127.0.0.1:514")
    with pytest.raises(siem.SettingsError):
        siem.settings_from_config({"SIEM_SYSLOG_URL": "tcp://host-without-port"})
    conf = siem.settings_from_config({"SIEM_SYSLOG_URL": "tls://siem.bank.example:6514", "SIEM_BATCH": "50"})
    assert conf.batch == 50 and conf.replay_bytes == siem.SIEM_REPLAY_BYTES


def test_contiguity_halts_at_a_missing_or_duplicated_sequence_number():
    rows = [{"seq": s} for s in (4, 5, 6, 8, 9)]
    assert [r["seq"] for r in siem._contiguous(rows, 3, 10)] == [4, 5, 6]
    assert [r["seq"] for r in siem._contiguous(rows, 3, 2)] == [4, 5]
    with pytest.raises(siem.StreamHalted, match="event 7 is missing"):
        siem._contiguous(rows[3:], 6, 10)
    dup = [{"seq": s} for s in (4, 5, 5, 6)]
    assert [r["seq"] for r in siem._contiguous(dup, 3, 10)] == [4]  # neither copy of 5
    with pytest.raises(siem.StreamHalted, match="5 appears twice"):
        siem._contiguous(dup[1:], 4, 10)


def test_every_event_is_delivered_in_order_with_its_structured_data(app, rsyslog):
    make_events(40, customer_ref="C-0001", case_ref="K-77")
    checkpoint_id = boundary.perform(Actor.operator(), checkpoints.create_checkpoint).id
    make_events(25, per_transaction=5)
    audit.record(db.session, Actor.operator(), "staff.create", outcome="denied", reason_code="not_permitted")
    boundary.commit_now()
    head = head_seq()
    result = export_all(rsyslog.url, batch=17)
    assert result.sent == head and result.last_error is None
    messages = rsyslog.wait_for(lambda got: len(got) >= head)
    assert seqs(messages) == list(range(1, head + 1))
    rows = rows_by_seq()
    public_key = checkpoints.public_key()
    seen_checkpoints = []
    for message in messages:
        parsed = parse_5424(message["raw"])
        fields = parsed["sd"]["audit@32473"]
        row = rows[int(fields["seq"])]
        # the event's fields in the structured data, NULLs left out
        for name in siem.SD_FIELDS:
            if name == "occurred_at":
                assert fields[name] == audit_verifier.iso_utc(row[name])
            elif row[name] is None:
                assert name not in fields
            else:
                assert fields[name] == str(row[name]), name
        assert parsed["timestamp"] == fields["occurred_at"]
        assert (parsed["msgid"], parsed["app"], parsed["host"], parsed["procid"]) == (row["action"], "branch-console",
                                                                                       "node-a", "-")
        assert parsed["pri"] == 13 * 8 + {"success": 6, "denied": 5, "failed": 4}[row["outcome"]]
        # the whole event in MSG: the SIEM's copy hashes to the event's hash, and links to the previous one
        event = json.loads(parsed["msg"])
        assert event["hash"] == row["hash"] and audit_verifier.event_hash(event) == row["hash"]
        # rsyslog's own parser read the same structured data and MSGID
        assert message["sd"] == parsed["sd_text"] and message["msgid"] == row["action"]
        assert message["msg"] == parsed["msg"]
        if row["action"] == "audit.checkpoint":
            signed = parsed["sd"]["checkpoint@32473"]
            seen_checkpoints.append(int(signed["id"]))
            stored = db.session.get(AuditCheckpoint, int(signed["id"]))
            assert (int(signed["seq"]), signed["hash"], signed["signature"]) == (stored.seq, stored.hash,
                                                                                 stored.signature)
            assert rows[stored.seq]["hash"] == stored.hash  # the head it signed
            assert signed["statement"].encode() == checkpoints.statement(
                stored.seq, stored.hash, dt.datetime.fromisoformat(signed["signed_at"].replace("Z", "+00:00")))
            public_key.verify(bytes.fromhex(signed["signature"]), signed["statement"].encode())  # raises if not
            assert signed["key_id"] == checkpoints.key_id()
            assert '\\"' in message["raw"]  # the statement's quotes, escaped
        else:
            assert "checkpoint@32473" not in parsed["sd"]
    assert checkpoint_id in seen_checkpoints
    assert cursor_row().seq == head and cursor_row().last_error is None


def test_structured_data_values_are_escaped(app, rsyslog):
    tricky = {"customer_ref": 'C"1]\\x', "case_ref": "]]\\\"[", "reason_code": 'r\\"]'}
    make_events(3, **tricky)
    result = export_all(rsyslog.url)
    assert result.sent == 3
    messages = rsyslog.wait_for(lambda got: len(got) >= 3)
    for message in messages:
        raw = message["raw"]
        assert 'customer_ref="C\\"1\\]\\\\x"' in raw
        assert 'case_ref="\\]\\]\\\\\\"["' in raw
        parsed = parse_5424(raw)
        fields = parsed["sd"]["audit@32473"]
        assert {name: fields[name] for name in tricky} == tricky
        assert message["sd"] == parsed["sd_text"]  # rsyslog found the element's end despite the escaped "]"
        assert json.loads(json.loads(parsed["msg"])["details"])["note"] == 'say "hi" [ok] \\ done'


def test_exporter_restart_resumes_from_the_cursor(app, rsyslog):
    head = make_events(95)
    conf = settings(url=rsyslog.url, batch=20)
    first = siem.SyslogTransport.from_settings(conf)
    assert siem.export_once(db.session, first, settings=conf, commit=db.session.commit) == 20
    assert siem.export_once(db.session, first, settings=conf, commit=db.session.commit) == 20
    first.close()  # the exporter stops (or its process is killed): the cursor says 40
    assert cursor_row().seq == 40
    rsyslog.wait_for(lambda got: len(got) >= 40)
    # a new exporter process: a new connection, from the cursor, nothing resent
    assert export_all(rsyslog.url, batch=20).sent == head - 40
    messages = rsyslog.wait_for(lambda got: len(got) >= head)
    assert seqs(messages) == list(range(1, head + 1))
    # and once more with new events
    before, head = head, make_events(12)
    assert export_all(rsyslog.url).sent == head - before
    assert seqs(rsyslog.wait_for(lambda got: len(got) >= head)) == list(range(1, head + 1))


def test_a_crash_between_send_and_cursor_update_resends_the_same_bytes(app, rsyslog):
    head = make_events(30)
    conf = settings(url=rsyslog.url, batch=10)
    transport = siem.SyslogTransport.from_settings(conf)
    assert siem.export_once(db.session, transport, settings=conf, commit=db.session.commit) == 10
    # sent 11..20, then "crashed" before the cursor's commit
    assert siem.export_once(db.session, transport, settings=conf) == 10
    db.session.rollback()
    transport.close()
    assert cursor_row().seq == 10
    assert export_all(rsyslog.url).sent == head - 10
    messages = rsyslog.wait_for(lambda got: len(got) >= head + 10)
    assert seqs(messages) == list(range(1, 21)) + list(range(11, head + 1))
    assert [m["raw"] for m in messages[10:20]] == [m["raw"] for m in messages[20:30]]


@pytest.mark.parametrize("crash,replay", [(False, True), (True, True), (False, False)],
                         ids=["sigterm", "sigkill", "sigterm-without-resend"])
def test_rsyslog_restart_while_exporting_loses_nothing(app, rsyslog, start_exporter, crash, replay):
    """rsyslog restarted twice mid-stream: stopped, or killed (then it loses what it had read and not
    yet written, which only the resend after the lost connection brings back). Stopped, even
    without the resend nothing is lost: the cursor moves only once rsyslog's TCP stack acknowledged
    the batch on a connection that was not reset (writing the batch to the socket is not enough:
    that loses the batch in flight at every restart)."""
    head = make_events(3000, per_transaction=500)
    conf = settings(url=rsyslog.url, batch=10, interval=0.05, backoff_max=0.2, timeout=5,
                    replay_bytes=REPLAY_BYTES if replay else 0)
    exporter = start_exporter(conf)
    rsyslog.wait_for(lambda got: len(got) >= 400, timeout=60)
    delivered_before = len(rsyslog.received())
    rsyslog.restart(kill=crash)  # while the exporter is sending
    time.sleep(0.2)
    rsyslog.restart(kill=crash)  # twice
    wait_for_cursor(head, timeout=90)
    messages = rsyslog.wait_for(lambda got: len(got) >= head and set(seqs(got)) >= set(range(1, head + 1)),
                                timeout=5)
    result = exporter.finish()
    assert exporter.transport.connections >= 2  # (one reconnection may span both restarts)
    outcome = assert_at_least_once_in_order(messages, head, connections=exporter.transport.connections, conf=conf)
    assert result.failures >= 1 or outcome["duplicates"] > 0
    final = cursor_row()
    assert final.seq == head and final.last_error is None
    assert delivered_before < head  # the restart did come mid-stream


def test_the_cursor_moves_only_once_the_receiver_acknowledged(app):
    """A receiver that accepts and never reads (its buffers fill): the write is never acknowledged,
    the round fails after the timeout, and the cursor stays where it was."""
    head = make_events(300, per_transaction=300)
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        started = time.monotonic()
        result = export_all(url, batch=300, timeout=0.5)
        assert time.monotonic() - started < 10
        assert result.sent == 0 and result.failures == 1
        assert "not acknowledged" in result.last_error or "timed out" in result.last_error
        assert cursor_row().seq == 0 and cursor_row().last_error == result.last_error
    assert siem.status(db.session)["behind"] == head


def test_rsyslog_restart_while_idle_then_new_events(app, rsyslog, start_exporter):
    first = make_events(30)
    # a replay budget of exactly the last 10 messages before the cursor
    conf = settings(url=rsyslog.url, interval=0.05, backoff_max=0.2, timeout=5)
    rows = rows_by_seq()
    conf = siem.with_overrides(conf, replay_bytes=sum(len(siem.frame(siem.format_event(rows[s], conf)))
                                                      for s in range(first - 9, first + 1)))
    exporter = start_exporter(conf)
    rsyslog.wait_for(lambda got: len(got) >= first)
    rsyslog.restart()
    head = make_events(20)
    messages = rsyslog.wait_for(lambda got: set(seqs(got)) >= set(range(1, head + 1)))
    exporter.finish()
    # the closed connection was noticed before anything was written to it; the new connection
    # resent the replay window (the last 10 before the cursor) first
    outcome = assert_at_least_once_in_order(messages, head, connections=exporter.transport.connections, conf=conf)
    assert seqs(messages) == list(range(1, first + 1)) + list(range(first - 9, head + 1))
    assert outcome["duplicates"] == 10


def test_lag_and_the_last_error_are_reported(app, rsyslog):
    before = siem.status(db.session)
    assert before["state"] == "not_started" and before["behind"] == 0
    head = make_events(25)
    timeutil.set_offset(dt.timedelta(seconds=90))
    waiting = siem.status(db.session)
    assert (waiting["state"], waiting["behind"], waiting["head_seq"], waiting["cursor_seq"]) == ("not_started", head,
                                                                                                 head, 0)
    assert 90 <= waiting["lag_seconds"] < 200 and waiting["oldest_undelivered_at"].endswith("Z")
    # the SIEM unreachable: nothing moves, the error is on the cursor
    dead = f"tcp://127.0.0.1:{_free_port()}"
    result = export_all(dead)
    assert result.sent == 0 and "cannot connect" in result.last_error
    failing = siem.status(db.session)
    assert failing["state"] == "failing" and "cannot connect" in failing["last_error"]
    assert failing["behind"] == head and failing["lag_seconds"] >= 90
    # delivered: no lag, error cleared
    assert export_all(rsyslog.url, batch=10).sent == head  # (a resend after the failure: none, nothing was sent)
    done = siem.status(db.session)
    assert (done["state"], done["behind"], done["lag_seconds"], done["last_error"]) == ("ok", 0, 0.0, None)
    assert done["updated_at"] is not None
    json.dumps(done)  # fit for /readyz


def test_a_gap_in_the_chain_halts_the_stream_and_says_so(app, rsyslog):
    make_events(12)
    tamper("DELETE FROM audit_event WHERE seq = 6")
    result = export_all(rsyslog.url)
    assert result.sent == 5 and "event 6 is missing" in result.last_error
    assert seqs(rsyslog.wait_for(lambda got: len(got) >= 5)) == [1, 2, 3, 4, 5]
    state = siem.status(db.session)
    assert state["state"] == "failing" and state["cursor_seq"] == 5 and "event 6 is missing" in state["last_error"]


@pytest.mark.postgres_only
def test_one_exporter_per_stream_on_postgresql(app, backend, rsyslog):
    make_events(5)
    holder = siem._Leadership(db.engine, siem.DEFAULT_STREAM)
    assert holder.acquire()
    try:
        assert export_all(rsyslog.url).standby
        assert cursor_row() is None or cursor_row().seq == 0
    finally:
        holder.release()
    assert export_all(rsyslog.url).sent == 5


def test_cli_command(app, rsyslog):
    group = AppGroup("audit")
    command = siem_cli_register(group)
    assert command.name == "siem-export" and group.get_command(None, "siem-export") is command
    runner = app.test_cli_runner()
    head = make_events(7)
    missing = runner.invoke(group, ["siem-export", "--once"])
    assert missing.exit_code == 1 and "SIEM_SYSLOG_URL is not set" in missing.output
    app.config["SIEM_SYSLOG_URL"] = f"tcp://127.0.0.1:{_free_port()}"
    down = runner.invoke(group, ["siem-export", "--once"])
    assert down.exit_code == 1 and "cannot connect" in down.output
    app.config["SIEM_SYSLOG_URL"] = rsyslog.url
    app.config["SIEM_HOSTNAME"] = "node-b"
    ok = runner.invoke(group, ["siem-export", "--once", "--interval", "0.1"])
    assert ok.exit_code == 0, ok.output
    assert f"cursor at seq {head}, 0 behind" in ok.output
    messages = rsyslog.wait_for(lambda got: len(got) >= head)
    assert seqs(messages) == list(range(1, head + 1))
    assert parse_5424(messages[0]["raw"])["host"] == "node-b"


def siem_cli_register(group: click.Group) -> click.Command:
    from console import siem_cli

    return siem_cli.register(group)


# --- TLS ---------------------------------------------------------------------------------------------


def _certificates(directory: Path) -> dict:
    """A CA and a server certificate for 127.0.0.1 (and a second, unrelated CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn)).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    ca_key, ca_cert = ca("Test SIEM CA")
    _, other_cert = ca("Another CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("siem.test")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"ca": directory / "ca.pem", "other_ca": directory / "other-ca.pem", "cert": directory / "server.pem",
             "key": directory / "server.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["other_ca"].write_bytes(other_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return {k: str(v) for k, v in paths.items()}


@pytest.mark.skipif(not GTLS, reason="rsyslog's TLS driver is not installed (Debian package rsyslog-gnutls)")
def test_tls_with_the_siem_certificate_verified(app, tmp_path, start_exporter):
    certs = _certificates(tmp_path / "certs")
    server = Rsyslog(tmp_path / "rsyslog-tls", tls=certs)
    server.start()
    try:
        head = make_events(30)
        url = f"tls://127.0.0.1:{server.port}"
        refused = export_all(url, ca_file=certs["other_ca"])
        assert refused.sent == 0 and "CERTIFICATE_VERIFY_FAILED" in refused.last_error
        assert cursor_row().seq == 0
        conf = settings(url=url, ca_file=certs["ca"], batch=7, interval=0.05, backoff_max=0.2, timeout=5,
                        replay_bytes=REPLAY_BYTES)
        exporter = start_exporter(conf)
        server.wait_for(lambda got: len(got) >= 10)
        server.restart()
        more = make_events(10)
        messages = server.wait_for(lambda got: set(seqs(got)) >= set(range(1, more + 1)))
        exporter.finish()
        assert_at_least_once_in_order(messages, more, connections=exporter.transport.connections, conf=conf)
        assert head == 30 and cursor_row().seq == more
        assert all(m["sd"] == parse_5424(m["raw"])["sd_text"] for m in messages)
    finally:
        server.stop()
