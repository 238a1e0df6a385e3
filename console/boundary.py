"""The one transaction boundary: where an entry point's work becomes durable, or is refused.

In the spirit of indico's ``RH.process``. An entry point (a page, a staff- or wallet-API endpoint,
a Flask-Admin hook, a CLI command) parses its input and calls a service with an explicit actor;
the service changes state, queues its audit events and never commits. The boundary then:

- **on success** commits the change together with its audit events, once: at once outside a
  request, or with the request's answer when the request defers its commits (the desk and both
  APIs; see console/answers.py for why the answer is built before that commit);
- **on a** :class:`~console.services.errors.DomainError` rolls back (nothing the service did
  stays), records the refusal's audit event (``exc.audit``) in a fresh transaction, and re-raises:
  the edge maps the error to a page in one place (``console/web/refusals.py``) and to JSON in one
  place (``console/api/common.py``).

Refusals decided at the edge itself (a permission guard, a malformed reference, a rate limit)
go through :func:`refuse` with the same guarantee: whatever the request had started is rolled
back and the refusal's event is committed on its own.

Steps that must be durable before the request goes on (a sign-in step whose attempt counts, an
idempotency key's reservation, the wallet lockout engine's claim, which the engine commits through
the ``commit`` its entry point hands it) use :func:`step` or :func:`commit_now`; the request's
final commit, with its answer, is :func:`commit_answer` (console/web/once.py).

``.commit(`` appears only here and in the one documented exception, the SMS worker
(console/services/notifications.py), which commits each delivery attempt on its own. A test
(tests/test_boundary.py) keeps it so.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from flask import g, has_request_context

from .extensions import db
from .services import audit
from .services.actor import Actor
from .services.errors import DomainError

T = TypeVar("T")


def commit() -> None:
    """Make the current work durable: now, or with the answer when the request defers its commits."""
    if has_request_context() and g.get("defer_commit"):
        db.session.flush()
        return
    db.session.commit()


def commit_now() -> None:
    """Make the current work durable before the request goes on, even when it defers.

    Only for the steps that must outlive a later failure of the same request: a staff sign-in's
    counted attempt (reserve, then verify), an idempotency key's reservation, a session's end.
    """
    db.session.commit()


def commit_answer() -> None:
    """The request's final commit: its work together with its answer (``console.web.once.finish``)."""
    db.session.commit()


def rollback() -> None:
    db.session.rollback()


def perform(actor: Actor, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(db.session, actor, *args, **kwargs)``: its change is committed with its audit events,
    or, on a DomainError, rolled back and the refusal recorded on its own; the error is re-raised."""
    try:
        result = fn(db.session, actor, *args, **kwargs)
    except DomainError as exc:
        refused(actor, exc)
        raise
    commit()
    return result


def step(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(db.session, *args, **kwargs)``, committed at once: a step that acts before anyone is
    signed in, or that must be durable before the request goes on whatever happens next (a
    sign-in step, whose attempt counts; a session's end; a one-time secret kept for one page)."""
    try:
        result = fn(db.session, *args, **kwargs)
    except Exception:
        db.session.rollback()
        raise
    commit_now()
    return result


def refused(actor: Actor, exc: DomainError) -> None:
    """Roll back what the request started and record ``exc``'s refusal event, if it has one."""
    db.session.rollback()
    if exc.audit:
        audit.record_refusal(db.session, actor, exc.audit)
        commit()


def refuse(actor: Actor, action: str, **fields: Any) -> None:
    """A refusal decided at the edge: roll back, record ``action`` (outcome ``denied`` unless
    given) on its own and commit it. The caller answers (403, 404, 429, ...)."""
    db.session.rollback()
    fields.setdefault("outcome", "denied")
    audit.record(db.session, actor, action, **fields)
    commit()


def record(actor: Actor, action: str, **fields: Any) -> None:
    """An event of its own (a read audit at the edge, an export's record): queued and committed."""
    audit.record(db.session, actor, action, **fields)
    commit()
