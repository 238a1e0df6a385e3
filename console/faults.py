"""Named fault points for tests: where a test may kill the worker or drop the connection.

Production code calls :func:`point` at the places where a crash matters (between the claim
and the check of a sign-in, between the check and its settlement, ...). Nothing is installed
in production, so a point costs one dictionary lookup. Tests install a hook with
:func:`installed` (in process) or run gunicorn through ``tests/faultapp.py``, which installs
``os._exit`` at the point named in its environment: a real crash, not a sleep.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

_hooks: dict[str, Callable[[str], None]] = {}


def point(name: str) -> None:
    hook = _hooks.get(name) or _hooks.get("*")
    if hook is not None:
        hook(name)


@contextlib.contextmanager
def installed(name: str, hook: Callable[[str], None]) -> Iterator[None]:
    """Run ``hook(name)`` whenever execution reaches point ``name`` (``"*"``: every point)."""
    _hooks[name] = hook
    try:
        yield
    finally:
        _hooks.pop(name, None)


def install(name: str, hook: Callable[[str], None]) -> None:
    """Install a hook for the life of the process (a test server's worker)."""
    _hooks[name] = hook
