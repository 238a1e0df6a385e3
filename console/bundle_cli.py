"""``flask audit bundle``: one file of chained events an outside auditor checks offline
(docs/audit-bundles.md).

Defined as :func:`register` so console/cli.py adds it to its ``audit`` group:
``bundle_cli.register(audit_cli)``.
"""
from __future__ import annotations

import os
from pathlib import Path

import click
from flask import current_app

from . import boundary
from .extensions import db
from .services import audit_bundle
from .services.actor import Actor
from .services.errors import InvalidInput

RANGE_MESSAGES = {
    "empty": "The chain has no events yet.",
    "start": "Sequence numbers start at 1.",
    "order": "--from ({first}) is after --to ({last}).",
    "beyond": "The chain ends at sequence {head}; --to {last} is beyond it.",
    "size": "{count} events is more than a bundle holds (AUDIT_BUNDLE_MAX_EVENTS = {max_events}); "
            "make several bundles of shorter ranges.",
}


def max_events() -> int:
    return int(current_app.config.get("AUDIT_BUNDLE_MAX_EVENTS", audit_bundle.DEFAULT_MAX_EVENTS))


def register(audit_cli_group: click.Group) -> click.Command:
    """Add ``bundle`` to the ``flask audit`` group; returns the command."""

    @audit_cli_group.command("bundle")
    @click.option("--from", "first", type=int, default=1, show_default=True, help="First sequence number.")
    @click.option("--to", "last", type=int, default=None, help="Last sequence number [default: the chain head].")
    @click.option("--out", "out_path", type=click.Path(dir_okay=False, writable=True), default=None,
                  help="File to write [default: audit-bundle-FROM-TO.zip here]; never overwritten.")
    def bundle(first: int, last: int | None, out_path: str | None) -> None:
        """Write the events FROM..TO, their signed checkpoints, the public key and a signed manifest
        into one zip file; check it with `python console/audit_verifier.py FILE --public-key KEY.pem`."""
        head_seq, _hash = audit_bundle.chain_head(db.session)
        boundary.rollback()
        last = head_seq if last is None else last
        limit = max_events()
        path = Path(out_path or audit_bundle.filename(first, last))
        problem = audit_bundle.range_problem(head_seq, first, last, limit)
        if problem is not None:
            raise click.ClickException(RANGE_MESSAGES[problem].format(
                first=first, last=last, head=head_seq, count=last - first + 1, max_events=limit))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise click.ClickException(f"{path} exists; choose another --out (a bundle is never overwritten).") \
                from None
        except OSError as exc:
            raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w+b") as out:
                info = boundary.perform(Actor.operator(), audit_bundle.build, out, first, last, max_events=limit)
        except InvalidInput as exc:  # the chain changed under us (it only grows: not expected)
            path.unlink(missing_ok=True)
            raise click.ClickException(RANGE_MESSAGES[exc.message].format(
                first=first, last=last, head=exc.details.get("head"), count=last - first + 1,
                max_events=limit)) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        click.echo(f"bundle {path}: events {info.first}..{info.last} ({info.events}), "
                   f"{info.checkpoints} signed checkpoint(s), {info.size} bytes, sha256 {info.sha256}")
        click.echo(f"check it offline: python console/audit_verifier.py {path} --public-key KEY.pem "
                   "(KEY.pem from `flask audit public-key`, held by the auditor)")

    return bundle
