"""Running test work at once in threads: the one helper the concurrency tests share."""
from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from typing import Any, Callable

from console.extensions import db


def run_together(work: Callable[[Any], Any], n: int, *, app=None, setup: Callable[[int], Any] | None = None,
                 during: Callable[[], Any] | None = None, timeout: float | None = 300) -> list:
    """Run ``work`` in ``n`` threads released at the same moment; return their results in order.

    Thread ``i`` calls ``work(i)``; with ``setup``, it calls ``setup(i)`` first and then ``work``
    with what that returned, so what ``setup`` does (loading rows, say) is done by every thread
    before any of them starts ``work``. With ``app``, each thread runs in its own application
    context and removes its database session at the end, as a request does. ``during``, if
    given, runs in the calling thread as soon as the threads are released (a fault injected
    while they are in flight).

    The first exception raised in a thread is re-raised here once every thread has ended (any
    others are attached to it as notes). Threads still running ``timeout`` seconds after the
    start (None: no limit) fail the test.
    """
    barrier = threading.Barrier(n + (during is not None), timeout=timeout)
    results: list = [None] * n
    errors: list[tuple[int, BaseException]] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        released = False
        try:
            with app.app_context() if app is not None else nullcontext():
                try:
                    arg = setup(i) if setup is not None else i
                    barrier.wait()
                    released = True
                    results[i] = work(arg)
                finally:
                    if app is not None:
                        db.session.remove()
        except BaseException as exc:  # re-raised in the calling thread
            with lock:
                errors.append((i, exc))
            if not released:
                barrier.abort()  # nobody waits for a thread that will never arrive

    threads = [threading.Thread(target=run, args=(i,), name=f"together-{i}", daemon=True) for i in range(n)]
    deadline = None if timeout is None else time.monotonic() + timeout
    for t in threads:
        t.start()
    try:
        if during is not None:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass  # a thread failed before the start: its error is raised below
            else:
                during()
    finally:
        for t in threads:
            t.join(None if deadline is None else max(deadline - time.monotonic(), 0))
    running = [t.name for t in threads if t.is_alive()]
    if errors:
        first = errors[0][1]
        for i, exc in errors[1:]:
            first.add_note(f"thread {i} raised too: {exc!r}")
        if running:
            first.add_note(f"still running: {running}")
        raise first
    assert not running, f"still running after {timeout} seconds: {running}"
    return results
