"""Command line: ``flask console ...`` and ``flask audit ...``.

Thin commands: parse the arguments, call a service (or the demo module) through the transaction
boundary, print. A :class:`~console.services.errors.DomainError` becomes click's error (its
message, exit status 1) in one place, :class:`_Command`, after ``boundary.perform`` has rolled
back and recorded the refusal.
"""
from __future__ import annotations

import json
import os
import sys
import time

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from . import boundary, demo, policy
from .adapters.sms import gateway_from_config
from .extensions import db
from .models.staff import Branch, BranchKind, Role
from .passwords import staff_password_problems
from .services import audit, checkpoints, staff_admin
from .services.actor import Actor
from .services.errors import DomainError, NotFound
from .services.notifications import deliver_due
from .timeutil import utcnow

# (error code, field or message) -> what the operator reads; formatted with the command's arguments.
REFUSAL_MESSAGES = {
    ("conflict", "employee_no"): "Employee number {employee_no} already exists.",
    ("conflict", "code"): "Branch {branch_code} already exists.",
    ("not_found", "branch"): "No branch {branch_code}; pass --create-branch NAME to create it.",
    ("not_found", "unknown_wallet"): "No active wallet {wallet_no}.",
    ("conflict", "auth_source"): "{employee_no} already signs in with the bank's directory.",
    ("not_allowed", "directory"): "The directory has no enabled entry for {employee_no} in a mapped group "
                                  "at a known branch.",
}


def _refusal_message(exc: DomainError, params: dict) -> str:
    template = REFUSAL_MESSAGES.get((exc.code, exc.details.get("field") or exc.message))
    if template is not None:
        try:
            return template.format_map(params)
        except KeyError:  # a message for another command's arguments
            pass
    return f"Refused ({exc.code}): {exc.message}"


class _Command(click.Command):
    """Every command here: a DomainError that reaches the command's edge is click's error."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DomainError as exc:
            raise click.ClickException(_refusal_message(exc, ctx.params)) from exc


class _Group(AppGroup):
    command_class = _Command


console_cli = _Group("console", help="Branch Console administration.")
audit_cli = _Group("audit", help="The audit trail.")


def _refuse_in_production() -> None:
    if not current_app.config.get("DEMO_ALLOWED"):
        click.echo("Refusing: demo data is not allowed under the production configuration.", err=True)
        sys.exit(2)


@console_cli.command("seed-demo")
@click.option("--if-empty", is_flag=True, help="Do nothing when staff already exist.")
def seed_demo(if_empty: bool) -> None:
    """Create demo branches and one staff member of each role; print their sign-in details."""
    _refuse_in_production()
    if demo.has_staff(db.session):
        if if_empty:
            click.echo("Demo data already present; nothing created.")
            saved = demo.saved_credentials()
            if saved is not None:
                click.echo(saved)
            return
        click.echo("Refusing: the database already has staff. Use a fresh database for demo data.", err=True)
        sys.exit(2)
    text = boundary.perform(Actor.operator(), demo.seed, commit=boundary.commit_now).text()
    demo.save_credentials(text)
    click.echo(text)


@console_cli.command("demo-code")
@click.argument("employee_no")
def demo_code(employee_no: str) -> None:
    """Print the current TOTP code of a demo account (demo only)."""
    _refuse_in_production()
    code = demo.current_code(db.session, employee_no)
    if code is None:
        click.echo("No such staff member with an enrolled authenticator.", err=True)
        sys.exit(1)
    click.echo(code)


def _create_staff(session, actor: Actor, *, employee_no, name, role, branch_code, branch_name):
    """The staff member, and their branch first when it is missing and a name for it is given."""
    branch = session.scalar(select(Branch).where(Branch.code == branch_code))
    if branch is None:
        if not branch_name:
            raise NotFound("no branch", field="branch")
        branch = staff_admin.create_branch(session, actor, code=branch_code, name=branch_name,
                                           kind=BranchKind.branch.value)
    return staff_admin.create_staff(session, actor, employee_no=employee_no, name=name, role=role, branch=branch)


@console_cli.command("create-staff")
@click.option("--employee-no", required=True)
@click.option("--name", required=True)
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
@click.option("--branch", "branch_code", required=True, help="Branch code.")
@click.option("--create-branch", "branch_name", default=None, help="Create the branch with this name if missing.")
def create_staff(employee_no, name, role, branch_code, branch_name) -> None:
    """Create a staff account; prints its one-time initial password (changed at first sign-in)."""
    staff, initial = boundary.perform(Actor.operator(), _create_staff, employee_no=employee_no, name=name,
                                      role=role, branch_code=branch_code, branch_name=branch_name)
    click.echo(f"Created {staff.employee_no} ({role}, {branch_code}).")
    click.echo(f"One-time initial password: {initial}")
    click.echo("It must be changed at first sign-in, where the authenticator is enrolled too.")


@console_cli.command("check-password")
@click.argument("employee_no")
def check_password_policy(employee_no: str) -> None:
    """Read a candidate password on stdin and list the staff policy rules it breaks."""
    password = sys.stdin.readline().rstrip("\n")
    problems = staff_password_problems(password, employee_no=employee_no,
                                       min_length=policy.current().staff_signin.password_min_length)
    click.echo(json.dumps(problems))
    sys.exit(1 if problems else 0)


@console_cli.command("fire-signins")
@click.argument("wallet_no")
@click.option("--attempts", default=5, show_default=True, type=click.IntRange(1, 200))
@click.option("--password", default="wrong-password", show_default=True)
@click.option("--sources", default=1, show_default=True, type=click.IntRange(1, 250),
              help="Spread the attempts over this many source addresses.")
def fire_signins(wallet_no: str, attempts: int, password: str, sources: int) -> None:
    """Fire sign-ins at a wallet through the real lockout engine (demo only)."""
    _refuse_in_production()
    results = demo.fire_signins(db.session, wallet_no, attempts, password=password, sources=sources,
                                commit=boundary.commit_now)
    for n, result in enumerate(results, start=1):
        click.echo(f"{n:>3} {result}")


@console_cli.command("directory-sync")
@click.option("--loop", is_flag=True, help="Sync every DIRECTORY_SYNC_SECONDS until interrupted.")
def directory_sync(loop: bool) -> None:
    """Bring directory-sourced staff in line with the bank's directory (docs/directory.md)."""
    from .services import directory

    if not directory.enabled():
        raise click.ClickException("The directory is off (CONSOLE_DIRECTORY_URL is empty).")
    while True:
        try:
            report = boundary.step(directory.sync)
            click.echo(f"checked {report.checked} directory accounts, {len(report.changes)} changed")
            for employee_no, change in report.changes:
                click.echo(f"  {employee_no}: {change}")
        except directory.DirectoryUnavailable as exc:
            click.echo(f"The directory is unavailable ({exc}); nothing was changed.", err=True)
            if not loop:
                sys.exit(1)
        db.session.remove()
        if not loop:
            return
        time.sleep(current_app.config["DIRECTORY_SYNC_SECONDS"])


@console_cli.command("directory-adopt")
@click.argument("employee_no")
def directory_adopt(employee_no: str) -> None:
    """Move a local staff account to the bank's directory (docs/directory.md)."""
    from .models.staff import Staff
    from .services import directory

    if not directory.enabled():
        raise click.ClickException("The directory is off (CONSOLE_DIRECTORY_URL is empty).")
    staff = db.session.scalar(select(Staff).where(Staff.employee_no == employee_no))
    if staff is None:
        raise click.ClickException(f"No staff member {employee_no}.")
    try:
        boundary.perform(Actor.operator(), directory.adopt, staff)
    except directory.DirectoryUnavailable as exc:
        raise click.ClickException(f"The directory is unavailable ({exc}); nothing was changed.") from None
    click.echo(f"{employee_no} now signs in with the bank's directory.")


@console_cli.command("deliver-notifications")
@click.option("--loop", is_flag=True, help="Keep delivering until interrupted.")
@click.option("--interval", default=5.0, show_default=True, help="Seconds between rounds with --loop.")
@click.option("--batch", default=100, show_default=True)
def deliver_notifications(loop: bool, interval: float, batch: int) -> None:
    """Deliver due SMS from the outbox through the configured gateway."""
    gateway = gateway_from_config(current_app.config, current_app.instance_path)
    while True:
        counts = deliver_due(db.session, gateway, limit=batch)
        if counts["sent"] or counts["retry"] or counts["failed"] or not loop:
            click.echo(f"sent {counts['sent']}, to retry {counts['retry']}, failed {counts['failed']} "
                       f"(gateway {gateway.name})")
        db.session.remove()
        if not loop:
            return
        time.sleep(interval)


@audit_cli.command("verify")
@click.option("--anchors", "anchors_path", type=click.Path(exists=True),
              help="Checkpoints held outside the database (a witness file or directory).")
@click.option("--public-key", "public_key_path", type=click.Path(exists=True, dir_okay=False),
              help="The auditor's copy of the checkpoint public key (PEM).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Processes verifying segments in parallel (default: one per CPU; PostgreSQL).")
def verify(anchors_path: str | None, public_key_path: str | None, workers: int | None) -> None:
    """Walk the chain; exit 0 when intact, 1 with the first broken sequence number otherwise."""
    try:
        key = checkpoints.load_public_key(public_key_path) if public_key_path else None
        held = checkpoints.load_anchors(anchors_path) if anchors_path else None
    except ValueError as exc:
        click.echo(f"cannot verify: {exc}", err=True)
        sys.exit(2)
    if held is not None and key is None:
        click.echo("note: held checkpoints are checked with the database's own key; give --public-key "
                   "(the auditor's copy) for a check that does not trust this deployment", err=True)
    report = audit.verify_chain(db.session, public_key=key, anchors=held, workers=workers or os.cpu_count() or 1)
    backlog = (f"; {report.pending} transaction(s) committed and not chained yet, the oldest waiting "
               f"{report.lag_seconds:.1f} s" if report.pending else "; nothing waiting to be chained")
    if report.intact:
        boundary.perform(Actor.operator(), audit.record_verification, report)
        click.echo(f"intact: {report.count} events, head {report.head_seq} {report.head_hash}, "
                   f"{report.checkpoints} signed checkpoint(s) hold"
                   + (f", {report.anchors} held checkpoint(s) hold" if held is not None else "") + backlog)
        return
    boundary.rollback()  # never extend a broken chain: the failed verification is not recorded on it
    click.echo(f"BROKEN at sequence {report.first_bad_seq}: {report.reason} "
               f"({report.count} events verified before it){backlog}")
    sys.exit(1)


@audit_cli.command("anchors")
@click.option("--export", "directory", type=click.Path(file_okay=False), default=None,
              help="Directory to write missing checkpoint files into [default: AUDIT_WITNESS_DIR].")
def anchors(directory: str | None) -> None:
    """Write every signed checkpoint missing from the witness directory (after a crash or an outage,
    or a first copy for an auditor); files already there are compared, never overwritten."""
    directory = directory or policy.current().audit.witness_dir
    if not directory:
        click.echo("no directory: give --export DIR or set CONSOLE_AUDIT_WITNESS_DIR", err=True)
        sys.exit(2)
    result = checkpoints.export_anchors(db.session, directory)
    boundary.rollback()
    click.echo(f"written {len(result.written)}, present {result.present}, conflicts {len(result.conflicts)}, "
               f"errors {len(result.errors)}")
    for line in result.conflicts + result.errors:
        click.echo(f"  {line}", err=True)
    if result.conflicts or result.errors:
        sys.exit(1)


@audit_cli.command("sequencer")
@click.option("--once", is_flag=True, help="Chain what is waiting, then exit.")
@click.option("--interval", default=0.2, show_default=True, type=click.FloatRange(0.01, 5),
              help="Seconds between runs.")
def run_sequencer(once: bool, interval: float) -> None:
    """Number and chain committed audit events (one sequencer at a time across nodes takes them)."""
    from .services import sequencer

    if once:
        click.echo(f"chained {sequencer.chain_pending(db.engine)} event(s)")
        return
    click.echo(f"audit sequencer running (every {interval} s); Ctrl-C stops it")
    sequencer.run(db.engine, interval=interval)


@audit_cli.command("checkpoint")
def checkpoint() -> None:
    """Sign the chain head (sequence, hash, time) with the Ed25519 audit key."""
    row = boundary.perform(Actor.operator(), checkpoints.create_checkpoint)
    click.echo(f"checkpoint {row.id}: seq {row.seq} hash {row.hash} key {row.key_id}")


@audit_cli.command("partitions")
@click.option("--ahead", default=12, show_default=True, type=click.IntRange(1, 120), help="Months to prepare.")
def partitions(ahead: int) -> None:
    """Create the monthly audit partitions ahead of time (PostgreSQL; run it monthly)."""
    from .models.audit_partitions import ensure_partitions, is_partitioned

    connection = db.session.connection()
    if connection.dialect.name != "postgresql" or not is_partitioned(connection):
        click.echo("The audit table is not partitioned here (SQLite); nothing to do.")
        return
    created = boundary.step(lambda session: ensure_partitions(session.connection(), today=utcnow().date(), back=0,
                                                              ahead=ahead))
    click.echo(f"created {len(created)} partition(s): {', '.join(created) or 'none needed'}")


@audit_cli.command("public-key")
def public_key() -> None:
    """Print the PEM public key that verifies checkpoints (give it to auditors)."""
    click.echo(checkpoints.public_key_pem(), nl=False)


def register_cli(app) -> None:
    from . import bundle_cli, siem_cli

    if "bundle" not in audit_cli.commands:
        bundle_cli.register(audit_cli)
    if "siem-export" not in audit_cli.commands:
        siem_cli.register(audit_cli)
    app.cli.add_command(console_cli)
    app.cli.add_command(audit_cli)

