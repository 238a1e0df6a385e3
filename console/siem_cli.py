"""``flask audit siem-export``: stream the audit chain to the bank's SIEM (docs/siem.md).

Defined as :func:`register` so console/cli.py adds it to its ``audit`` group:
``siem_cli.register(audit_cli)``.
"""
from __future__ import annotations

import signal
import threading

import click
from flask import current_app

from . import boundary
from .extensions import db
from .services import siem


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT end the loop after the batch in hand (its cursor committed)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


def register(audit_cli_group: click.Group) -> click.Command:
    """Add ``siem-export`` to the ``flask audit`` group; returns the command."""

    @audit_cli_group.command("siem-export")
    @click.option("--once", is_flag=True,
                  help="Send every event not yet delivered, then exit (status 1 if that failed).")
    @click.option("--interval", type=click.FloatRange(min=0.05), default=None,
                  help="Seconds between polls once everything is delivered [default: SIEM_INTERVAL_SECONDS].")
    @click.option("--name", default=siem.DEFAULT_STREAM, show_default=True,
                  help="The stream's cursor (audit_stream_cursor.name).")
    def siem_export(once: bool, interval: float | None, name: str) -> None:
        """Stream chained audit events, in order and at least once, as RFC 5424 syslog over TCP or TLS."""
        try:
            settings = siem.settings_from_config(current_app.config)
            if interval is not None:
                settings = siem.with_overrides(settings, interval=interval,
                                               backoff_max=max(settings.backoff_max, interval))
            transport = siem.SyslogTransport.from_settings(settings)
        except siem.SettingsError as exc:
            raise click.ClickException(str(exc)) from exc
        if not 1 <= len(name) <= 32:
            raise click.ClickException("--name must be 1 to 32 characters")
        before = siem.status(db.session, name)
        boundary.rollback()
        click.echo(f"siem {name}: to {settings.url}, from seq {before['cursor_seq']} "
                   f"(head {before['head_seq']}, {before['behind']} behind)", err=True)
        stop = threading.Event()
        if not once:
            _stop_on_signals(stop)
        result = siem.run(db.session, transport, commit=boundary.commit_now, settings=settings, name=name,
                          once=once, stop=stop)
        after = siem.status(db.session, name)
        boundary.rollback()
        if result.standby:
            click.echo(f"siem {name}: another exporter holds this stream; nothing sent")
            return
        click.echo(f"siem {name}: sent {result.sent} message(s); cursor at seq {after['cursor_seq']}, "
                   f"{after['behind']} behind")
        if result.last_error:
            raise click.ClickException(f"siem {name}: {result.last_error}")

    return siem_export
