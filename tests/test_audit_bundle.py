"""Audit bundles (issue #14 part 3): one file an outside auditor checks offline.

Bundles are built on SQLite and PostgreSQL and verified by console/audit_verifier.py alone; then
copies are tampered with every way the database tamper tests tamper with the chain (an edit, an
edit with its hash recomputed, an edit with every later hash recomputed, a deletion, a reorder, a
duplicate, a cut tail) and the ways a bundle adds (a checkpoint dropped or forged, the manifest
rewritten, the public key swapped), and each is caught with the right first bad sequence number.
"""
from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from console import audit_verifier as av
from console import boundary
from console.extensions import db
from console.models.audit import AuditEvent, ChainHead
from console.services import audit, audit_bundle, checkpoints
from console.services.actor import Actor

from .conftest import audit_events, post_form, tamper

VERIFIER = Path(av.__file__)
FIRST, LAST = 3, 18  # the range the tamper tests bundle; checkpoints sign seq 5, 10 and 15


def _write(n: int) -> None:
    for i in range(n):
        audit.record(db.session, Actor.system(), "test.event", details={"i": i, "text": "tab\there, line\nbreak \\"})
        db.session.commit()


def _checkpoint():
    return boundary.perform(Actor.operator(), checkpoints.create_checkpoint)


@pytest.fixture
def chain(app):
    """20 events; checkpoints at seq 5, 10 and 15 (each checkpoint's own event follows it)."""
    app.config.update(AUDIT_CHECKPOINT_EVERY=0, AUDIT_CHECKPOINT_SECONDS=0)  # only the ones taken here
    _write(5)
    _checkpoint()  # signs 5; its event is 6
    _write(4)
    _checkpoint()  # 10; event 11
    _write(4)
    _checkpoint()  # 15; event 16
    _write(4)
    assert [cp.seq for cp in checkpoints.all_checkpoints(db.session)] == [5, 10, 15]
    assert db.session.get(ChainHead, 1).seq == 20
    return app


def _build(first=FIRST, last=LAST, actor=None) -> bytes:
    with tempfile.TemporaryFile() as out:
        info = boundary.perform(actor or Actor.operator(), audit_bundle.build, out, first, last)
        data = out.read()
    assert hashlib.sha256(data).hexdigest() == info.sha256 and len(data) == info.size
    return data


def _bank_key() -> bytes:
    return checkpoints.public_key_pem().encode()


# --- a bundle taken apart and put back together, as a forger would -----------------------------


class Forgery:
    """The members of a bundle, to change and zip again (a forger works on a copy like this)."""

    def __init__(self, data: bytes):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            self.members = {name: archive.read(name) for name in archive.namelist()}
        self.lines = self.members[av.EVENTS].decode().splitlines()
        self.manifest = json.loads(self.members[av.MANIFEST])
        self.checkpoints = [json.loads(line) for line in self.members[av.CHECKPOINTS].decode().splitlines()]

    def index(self, seq: int) -> int:
        return seq - self.manifest["range"]["from"]

    def row(self, seq: int) -> dict:
        line = self.lines[self.index(seq)]
        return av.decode_v2(line.rsplit("\t", 1)[0])

    def set_row(self, seq: int, row: dict, *, rehash: bool) -> None:
        old_hash = self.lines[self.index(seq)].rsplit("\t", 1)[1]
        new_hash = av.event_hash(row) if rehash else old_hash
        self.lines[self.index(seq)] = av.encode_v2(row).decode() + "\t" + new_hash

    def edit(self, seq: int, rehash=False, **changes) -> None:
        row = self.row(seq)
        row.update(changes)
        self.set_row(seq, row, rehash=rehash)

    def rehash_after(self, seq: int) -> None:
        """Recompute every hash after ``seq`` so that every link holds again."""
        prev = self.lines[self.index(seq)].rsplit("\t", 1)[1]
        for i in range(self.index(seq) + 1, len(self.lines)):
            row = av.decode_v2(self.lines[i].rsplit("\t", 1)[0])
            row["prev_hash"] = prev
            prev = av.event_hash(row)
            self.lines[i] = av.encode_v2(row).decode() + "\t" + prev

    def fix_manifest(self) -> None:
        """Make the manifest agree with the members again (digests, counts, range, last event)."""
        events = self._events_bytes()
        seqs = [int(line.split("\t", 1)[0]) for line in self.lines]
        self.manifest["members"][av.EVENTS] = {"sha256": hashlib.sha256(events).hexdigest(), "bytes": len(events),
                                               "lines": len(self.lines)}
        body = self._checkpoints_bytes()
        self.manifest["members"][av.CHECKPOINTS] = {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body),
                                                    "lines": len(self.checkpoints)}
        self.manifest["counts"] = {"events": len(self.lines), "checkpoints": len(self.checkpoints)}
        self.manifest["checkpoints"] = [{"checkpoint": c["checkpoint"], "seq": c["seq"], "hash": c["hash"]}
                                        for c in self.checkpoints]
        self.manifest["range"]["to"] = max(seqs)
        self.manifest["last_event"] = {"seq": seqs[-1], "hash": self.lines[-1].rsplit("\t", 1)[1]}

    def resign(self, private_key: Ed25519PrivateKey) -> None:
        """Sign the checkpoints and the manifest with another key, and put that key in the bundle."""
        pem = private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
        kid = av.public_key_id(private_key.public_key())
        for c in self.checkpoints:
            c["hash"] = self.lines[self.index(c["seq"])].rsplit("\t", 1)[1]
            c["key_id"] = kid
            c["signature"] = private_key.sign(av.checkpoint_statement(c["seq"], c["hash"], c["signed_at"])).hex()
        self.members[av.PUBLIC_KEY] = pem
        self.manifest["members"][av.PUBLIC_KEY] = {"sha256": hashlib.sha256(pem).hexdigest(), "bytes": len(pem)}
        self.manifest["key_id"] = kid
        self.fix_manifest()
        self._key = private_key

    _key = None

    def _events_bytes(self) -> bytes:
        return "".join(line + "\n" for line in self.lines).encode()

    def _checkpoints_bytes(self) -> bytes:
        return "".join(json.dumps(c, sort_keys=True, separators=(",", ":")) + "\n" for c in self.checkpoints).encode()

    def bytes(self, *, manifest_changed=False) -> bytes:
        members = dict(self.members)
        members[av.EVENTS] = self._events_bytes()
        members[av.CHECKPOINTS] = self._checkpoints_bytes()
        if manifest_changed or self._key is not None:
            members[av.MANIFEST] = (json.dumps(self.manifest, indent=2, sort_keys=True) + "\n").encode()
            if self._key is not None:
                members[av.MANIFEST_SIGNATURE] = (self._key.sign(members[av.MANIFEST]).hex() + "\n").encode()
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, body in members.items():
                archive.writestr(name, body)
        return out.getvalue()


# --- built on both backends, verified offline --------------------------------------------------


def test_a_bundle_verifies_offline_with_the_auditors_key(chain):
    data = _build()
    result = av.verify_bundle(data, _bank_key())
    assert result.status == "intact", result.verdict()
    assert (result.first, result.last, result.events, result.checkpoints) == (FIRST, LAST, 16, 3)
    assert result.key_source == "auditor" and result.manifest_signed and result.exit_code == 0
    assert result.key_id == checkpoints.key_id() and not result.notes
    assert "INTACT" in result.verdict()


def test_the_bundle_holds_each_event_as_its_canonical_line(chain):
    data = _build()
    forgery = Forgery(data)
    rows = {e.seq: e for e in audit_events()}
    assert len(forgery.lines) == LAST - FIRST + 1
    for line in forgery.lines:
        body, digest = line.encode().rsplit(b"\t", 1)
        event = rows[int(line.split("\t", 1)[0])]
        assert body == av.encode_v2({name: getattr(event, name) for name in av.FIELDS})
        assert hashlib.sha256(body).hexdigest() == digest.decode() == event.hash
    manifest = forgery.manifest
    assert manifest["range"] == {"from": FIRST, "to": LAST}
    assert manifest["first_prev_hash"] == rows[FIRST].prev_hash == rows[FIRST - 1].hash
    assert manifest["last_event"] == {"seq": LAST, "hash": rows[LAST].hash}
    assert manifest["chain_head"]["seq"] == 20 and manifest["counts"] == {"events": 16, "checkpoints": 3}
    assert manifest["members"][av.EVENTS]["sha256"] == hashlib.sha256(forgery.members[av.EVENTS]).hexdigest()
    assert [c["seq"] for c in forgery.checkpoints] == [5, 10, 15]
    assert forgery.members[av.PUBLIC_KEY] == _bank_key()
    # The checkpoints member is an anchors file for `flask audit verify --anchors`.
    path = Path(tempfile.mkdtemp()) / "anchors.jsonl"
    path.write_bytes(forgery.members[av.CHECKPOINTS])
    try:
        assert [a["seq"] for a in checkpoints.load_anchors(path)] == [5, 10, 15]
    finally:
        shutil.rmtree(path.parent)


def test_the_verifier_signs_off_statements_as_the_console_signs_them(chain):
    cp = checkpoints.all_checkpoints(db.session)[0]
    assert av.checkpoint_statement(cp.seq, cp.hash, checkpoints.iso(cp.signed_at)) == \
        checkpoints.statement(cp.seq, cp.hash, cp.signed_at)
    assert av.public_key_id(av.load_public_key(_bank_key())) == checkpoints.key_id()


def test_a_whole_chain_from_seq_1_and_a_range_starting_after_a_checkpoint(chain):
    for first, last, cps in ((1, 20, 3), (6, 10, 2), (11, 11, 1), (16, 20, 1)):
        result = av.verify_bundle(_build(first, last), _bank_key())
        assert result.status == "intact", (first, last, result.verdict())
        assert result.checkpoints == cps, (first, last)


def test_version_1_events_are_bundled_and_verified(app):
    """Events of chain version 1 (before #14) sit under version 2 ones: both verify, both are caught."""
    prev, rows = "0" * 64, []
    from console.timeutil import utcnow

    for seq in (1, 2, 3):
        row = {name: None for name in av.FIELDS}
        row.update(seq=seq, occurred_at=av.iso_utc(utcnow()), actor_type="system", channel="system",
                   action="test.v1", outcome="success", details='{"old":true}', chain_version=1, prev_hash=prev)
        row["hash"] = prev = av.event_hash(row)
        rows.append(row)
    from datetime import datetime

    db.session.execute(AuditEvent.__table__.insert(), [
        {**r, "occurred_at": datetime.fromisoformat(r["occurred_at"].replace("Z", "+00:00"))} for r in rows])
    db.session.execute(ChainHead.__table__.update().where(ChainHead.id == 1).values(seq=3, hash=prev))
    db.session.commit()
    _write(3)
    assert [e.chain_version for e in audit_events()] == [1, 1, 1, 2, 2, 2]
    data = _build(1, 6)
    assert av.verify_bundle(data, _bank_key()).status == "intact"
    forgery = Forgery(data)
    forgery.edit(2, action="test.forged")
    result = av.verify_bundle(forgery.bytes(), _bank_key())
    assert (result.status, result.first_bad_seq) == ("tampered", 2), result.verdict()


def test_bundles_follow_the_database_a_bundle_of_a_tampered_chain_fails(chain):
    """The bundle holds what the database holds: an edit behind the triggers' back is named offline."""
    tamper("UPDATE audit_event SET outcome = 'failed' WHERE seq = 12")
    result = av.verify_bundle(_build(), _bank_key())
    assert (result.status, result.first_bad_seq) == ("tampered", 12)
    tamper("DELETE FROM audit_event WHERE seq >= 17")
    result = av.verify_bundle(_build(FIRST, 20), _bank_key())
    assert result.status == "tampered" and result.first_bad_seq == 12


# --- every way of tampering, each caught with its first bad sequence number ----------------------


def _edit(f):
    f.edit(8, outcome="failed")


def _edit_rehash(f):
    f.edit(8, rehash=True, outcome="failed")


def _rewrite(seq, fix_manifest=False, drop_checkpoints=()):
    def change(f):
        f.edit(seq, rehash=True, action="forged.event")
        f.rehash_after(seq)
        f.checkpoints = [c for c in f.checkpoints if c["seq"] not in drop_checkpoints]
        if fix_manifest:
            f.fix_manifest()
    return change


def _delete(f):
    del f.lines[f.index(7)]


def _reorder(f):
    i = f.index(7)
    f.lines[i], f.lines[i + 1] = f.lines[i + 1], f.lines[i]


def _duplicate(f):
    f.lines.insert(f.index(7) + 1, f.lines[f.index(7)])


def _cut(fix_manifest):
    def change(f):
        del f.lines[f.index(16):]
        if fix_manifest:
            f.fix_manifest()
    return change


def _drop_checkpoint(f):
    f.checkpoints = [c for c in f.checkpoints if c["seq"] != 10]


def _flip_signature(f):
    c = f.checkpoints[2]
    c["signature"] = ("0" if c["signature"][0] != "0" else "1") + c["signature"][1:]


def _forge_checkpoint(f):
    """Rewrite from 12 and make checkpoint 15 name the new hash: its signature cannot follow."""
    _rewrite(12)(f)
    f.checkpoints[2]["hash"] = f.lines[f.index(15)].rsplit("\t", 1)[1]


def _forge_manifest_signature(f):
    f.manifest["members"][av.EVENTS]["sha256"] = "0" * 64
    f.members[av.MANIFEST_SIGNATURE] = b"00" * 64 + b"\n"


# (scenario, change, manifest rewritten, first bad seq, words in the reason)
SCENARIOS = [
    ("edit", _edit, False, 8, "was changed"),
    ("edit_and_its_hash", _edit_rehash, False, 9, "does not link to event 8"),
    ("rewrite_with_later_hashes_caught_by_checkpoint", _rewrite(12), False, 11,
     "between seq 11 and 15 were rewritten"),
    ("rewrite_and_manifest_recomputed", _rewrite(12, fix_manifest=True), True, 11,
     "between seq 11 and 15 were rewritten"),
    ("rewrite_after_the_last_checkpoint", _rewrite(17), False, 16, "between seq 16 and 18 were rewritten"),
    ("rewrite_after_the_last_checkpoint_manifest_recomputed", _rewrite(17, fix_manifest=True), True, 16,
     "covered by no valid signature"),
    ("rewrite_and_checkpoints_dropped", _rewrite(8, drop_checkpoints=(10, 15)), False, 6, "rewritten"),
    ("rewrite_checkpoints_dropped_manifest_recomputed", _rewrite(8, True, (10, 15)), True, 6,
     "covered by no valid signature"),
    ("delete", _delete, False, 7, "event 7 is missing"),
    ("reorder", _reorder, False, 7, "out of order"),
    ("duplicate", _duplicate, False, 7, "occurs twice"),
    ("cut_tail", _cut(False), False, 16, "cut off"),
    ("cut_tail_manifest_recomputed", _cut(True), True, 16, "may have been cut off"),
    ("drop_checkpoint", _drop_checkpoint, False, 10, "missing from the bundle"),
    ("forged_checkpoint_signature", _flip_signature, False, 15, "signature that does not verify"),
    ("forged_checkpoint_after_rewrite", _forge_checkpoint, False, 11, "between seq 11 and 18 were rewritten"),
    ("forged_manifest_signature", _forge_manifest_signature, True, 16, "covered by no valid signature"),
]


@pytest.mark.parametrize("name,change,manifest_changed,bad_seq,words", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_every_tampered_copy_is_caught_with_its_first_bad_event(chain, name, change, manifest_changed, bad_seq,
                                                                words):
    original = _build()
    forgery = Forgery(original)
    change(forgery)
    data = forgery.bytes(manifest_changed=manifest_changed)
    for key in (_bank_key(), None):  # with the auditor's key, and trusting the bundle's own
        result = av.verify_bundle(data, key)
        assert result.status == "tampered" and result.exit_code == 1, (name, result.verdict())
        assert result.first_bad_seq == bad_seq, (name, result.verdict())
        assert words in result.reason, (name, result.verdict())
        assert f"first bad event: seq {bad_seq}" in result.verdict()
    assert av.verify_bundle(original, _bank_key()).intact  # the copy, not the original, was changed


def test_a_swapped_public_key_is_caught_when_the_auditor_brings_the_banks_key(chain):
    forgery = Forgery(_build())
    _rewrite(12)(forgery)
    forgery.resign(Ed25519PrivateKey.generate())
    data = forgery.bytes()
    alone = av.verify_bundle(data)  # consistent with itself: the forger signed everything again
    assert alone.status == "intact" and alone.key_source == "bundle"
    assert any("proves only that the bundle is consistent with itself" in note for note in alone.notes)
    assert "inside the bundle" in alone.verdict()
    checked = av.verify_bundle(data, _bank_key())
    assert (checked.status, checked.first_bad_seq) == ("tampered", FIRST), checked.verdict()
    assert "covered by no valid signature" in checked.reason
    assert any("another public key" in message for _seq, message in checked.problems)


def test_unreadable_bundles(chain, tmp_path):
    data = _build()
    assert av.verify_bundle(b"not a zip at all").status == "unreadable"
    assert av.verify_bundle(data[: len(data) // 2]).exit_code == 2  # bytes cut off: the zip directory is gone
    forgery = Forgery(data)
    del forgery.members[av.MANIFEST]
    result = av.verify_bundle(forgery.bytes())
    assert result.status == "unreadable" and "manifest.json" in result.reason
    result = av.verify_bundle(data, b"-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    assert result.status == "unreadable" and "auditor's public key" in result.reason


def test_a_manifest_of_the_wrong_shape_is_unreadable_never_a_crash(chain):
    data = _build()
    for name, value in (("range", {"from": 9, "to": 4}), ("range", "3..18"), ("checkpoints", 7),
                        ("members", []), ("counts", None), ("last_event", "x"), ("chain_head", [1]),
                        ("format_version", 2), ("format", "zip")):
        forgery = Forgery(data)
        forgery.manifest[name] = value
        result = av.verify_bundle(forgery.bytes(manifest_changed=True), _bank_key())
        assert result.status in ("tampered", "unreadable"), (name, value, result.verdict())


def test_a_spliced_archive_with_a_member_twice_is_caught(chain):
    import warnings

    data = _build()
    forgery = Forgery(data)
    _edit(forgery)
    out = io.BytesIO(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name, which is the point
        with zipfile.ZipFile(out, "a") as archive:
            archive.writestr(av.EVENTS, forgery._events_bytes())
    result = av.verify_bundle(out.getvalue(), _bank_key())
    assert result.status == "tampered"
    assert any("more than once" in message for _seq, message in result.problems), result.verdict()


# --- the standalone verifier: one file, standard library and cryptography, run in isolation ------


def _stdlib_or_cryptography(module: str) -> bool:
    top = module.split(".")[0]
    return top in sys.stdlib_module_names or top == "cryptography" or module == "__future__"


def test_the_verifier_imports_only_the_standard_library_and_cryptography():
    tree = ast.parse(VERIFIER.read_text())
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the file runs on its own"
            imported.append(node.module)
    assert imported and all(_stdlib_or_cryptography(name) for name in imported), imported


def _run_alone(tmp_path, *args):
    """The single file, copied away from the project, run in isolated mode (-I: no PYTHONPATH, no
    user site, no current directory on the path); cryptography comes from the interpreter's own
    site-packages, as on an auditor's machine with `pip install cryptography`."""
    alone = tmp_path / "alone"
    alone.mkdir(exist_ok=True)
    shutil.copy(VERIFIER, alone / "audit_verifier.py")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return subprocess.run([sys.executable, "-I", str(alone / "audit_verifier.py"), *map(str, args)],
                          cwd=alone, env=env, capture_output=True, text=True, timeout=60)


def test_the_verifier_runs_alone_and_answers_with_its_exit_status(chain, tmp_path):
    good = tmp_path / "bundle.zip"
    good.write_bytes(_build())
    key = tmp_path / "bank.pem"
    key.write_bytes(_bank_key())
    forgery = Forgery(good.read_bytes())
    _edit(forgery)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(forgery.bytes())
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK not really")

    ran = _run_alone(tmp_path, good, "--public-key", key)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "VERDICT: INTACT" in ran.stdout and "auditor's public key" in ran.stdout
    ran = _run_alone(tmp_path, good)
    assert ran.returncode == 0 and "consistent with itself" in ran.stdout
    ran = _run_alone(tmp_path, bad, "--public-key", key)
    assert ran.returncode == 1 and "VERDICT: TAMPERED - first bad event: seq 8" in ran.stdout, ran.stdout
    ran = _run_alone(tmp_path, junk)
    assert ran.returncode == 2 and "UNREADABLE" in ran.stdout
    ran = _run_alone(tmp_path, tmp_path / "missing.zip")
    assert ran.returncode == 2
    ran = _run_alone(tmp_path, bad, "--public-key", key, "--json")
    assert json.loads(ran.stdout)["first_bad_seq"] == 8 and ran.returncode == 1
    # Nothing of the console was imported: the copy ran from a directory holding only itself.
    assert sorted(p.name for p in (tmp_path / "alone").iterdir() if p.suffix == ".py") == ["audit_verifier.py"]


# --- the command line, the workbench download, and the record of both ---------------------------


def _cli(runner):
    from console import cli

    assert "bundle" in cli.audit_cli.commands  # `flask audit bundle`, added by console/cli.py
    return runner


def test_cli_writes_a_bundle_and_records_it(chain, runner, tmp_path):
    out = tmp_path / "b.zip"
    result = _cli(runner).invoke(args=["audit", "bundle", "--from", "3", "--to", "18", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"bundle {out}: events 3..18 (16), 3 signed checkpoint(s)" in result.output
    data = out.read_bytes()
    assert av.verify_bundle(data, _bank_key()).intact
    event = audit_events("audit.bundle")[-1]
    details = json.loads(event.details)
    assert (event.actor_type, event.outcome) == ("operator", "success")
    assert details["sha256"] == hashlib.sha256(data).hexdigest()
    assert (details["from"], details["to"], details["events"], details["checkpoints"]) == (3, 18, 16, 3)
    # Never overwritten; bad ranges are refused with a message and leave no file and no record.
    again = runner.invoke(args=["audit", "bundle", "--from", "3", "--to", "18", "--out", str(out)])
    assert again.exit_code == 1 and "exists" in again.output and out.read_bytes() == data
    for args, words in ((["--from", "9", "--to", "4"], "after --to"), (["--from", "0", "--to", "4"], "start at 1"),
                        (["--from", "1", "--to", "999"], "chain ends at sequence")):
        result = runner.invoke(args=["audit", "bundle", *args, "--out", str(tmp_path / "x.zip")])
        assert result.exit_code == 1 and words in result.output, result.output
        assert not (tmp_path / "x.zip").exists()
    chain.config["AUDIT_BUNDLE_MAX_EVENTS"] = 5
    result = runner.invoke(args=["audit", "bundle", "--from", "1", "--to", "6", "--out", str(tmp_path / "x.zip")])
    assert result.exit_code == 1 and "more than a bundle holds" in result.output
    assert len(audit_events("audit.bundle")) == 1


def test_cli_defaults_to_the_whole_chain(chain, runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _cli(runner).invoke(args=["audit", "bundle"])
    assert result.exit_code == 0, result.output
    assert av.verify_bundle((tmp_path / "audit-bundle-1-20.zip").read_bytes(), _bank_key()).intact


def test_teller_may_not_download_a_bundle(chain, login_as, client):
    login_as("teller")
    assert client.get("/audit/bundle").status_code == 403
    denied = audit_events("access.denied")[-1]
    assert json.loads(denied.details)["path"] == "/audit/bundle"
    assert audit_events("audit.bundle") == []


def test_auditor_downloads_a_bundle_that_verifies_and_is_recorded(chain, login_as, client):
    handle = login_as("auditor", branch_code="HO-000")
    page = client.get("/audit/bundle")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "审计包" in text and "audit_verifier.py" in text and 'name="csrf_token"' in text
    response = post_form(client, "/audit/bundle", {"first": "3", "last": "18"})
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert 'filename=audit-bundle-3-18.zip' in response.headers["Content-Disposition"]
    data = response.get_data()
    result = av.verify_bundle(data, _bank_key())
    assert result.intact and (result.first, result.last) == (3, 18), result.verdict()
    event = audit_events("audit.bundle")[-1]
    assert event.actor_employee_no == handle.employee_no and event.outcome == "success"
    details = json.loads(event.details)
    assert details["sha256"] == hashlib.sha256(data).hexdigest() and details["events"] == 16
    assert Forgery(data).manifest["created_by"]["employee_no"] == handle.employee_no


@pytest.mark.sqlite_only
def test_bad_ranges_get_a_clear_message_on_the_page(chain, login_as, client):
    login_as("auditor", branch_code="HO-000")
    chain.config["AUDIT_BUNDLE_MAX_EVENTS"] = 10
    cases = [({"first": "x", "last": "4"}, "整数"), ({"first": "9", "last": "4"}, "大于最后一个序号"),
             ({"first": "0", "last": "4"}, "从 1 开始"), ({"first": "1", "last": "99"}, "止于序号"),
             ({"first": "1", "last": "15"}, "最多包含 10 个事件"), ({"first": "", "last": ""}, "整数"),
             ({"first": "1" * 40, "last": "2"}, "整数"), ({"first": "１", "last": "2"}, "整数")]
    for form, words in cases:
        response = post_form(client, "/audit/bundle", form, token_from="/audit/bundle")
        assert response.status_code == 200 and response.mimetype == "text/html", form
        text = response.get_data(as_text=True)
        assert 'role="alert"' in text and words in text, (form, text[:3000])
    assert audit_events("audit.bundle") == []
    # Without the form's token the post is refused before anything is built.
    assert client.post("/audit/bundle", data={"first": "1", "last": "2"}).status_code == 400


@pytest.mark.sqlite_only
def test_the_bundle_page_in_english(chain, login_as, client):
    login_as("auditor", branch_code="HO-000")
    post_form(client, "/auth/language", {"lang": "en"}, token_from="/")
    text = client.get("/audit/bundle").get_data(as_text=True)
    assert "Audit bundle" in text and "Download the bundle" in text
    response = post_form(client, "/audit/bundle", {"first": "9", "last": "4"})
    assert "The first sequence number is after the last one." in response.get_data(as_text=True)
