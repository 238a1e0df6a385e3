"""gunicorn entry point for fault tests: the real application, plus a worker that really dies.

The test writes a fault point's name (see console/faults.py) into the file named by
``CONSOLE_TEST_FAULT_FILE``; the first worker to reach that point takes the file and exits
on the spot with ``os._exit`` (no cleanup, no rollback, no answer), as a killed worker does.
"""
import os

from console import faults
from wsgi import app  # noqa: F401  (what gunicorn serves)

CONTROL = os.environ["CONSOLE_TEST_FAULT_FILE"]


def _die_here(point: str) -> None:
    try:
        with open(CONTROL, encoding="utf-8") as fh:
            if fh.read().strip() != point:
                return
        os.rename(CONTROL, CONTROL + ".fired")  # exactly one worker takes it
    except FileNotFoundError:
        return
    os._exit(17)


faults.install("*", _die_here)
