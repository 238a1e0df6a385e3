"""Mark English msgids where ``flask_babel`` does not belong (the services).

``N_("Unlock the wallet")`` returns the text unchanged; ``pybabel extract`` finds it (``N_`` is one
of Babel's default keywords, and the Makefile names it too), and the edge translates it with
``lazy_gettext`` when it shows it.
"""


def N_(message: str) -> str:  # noqa: N802 (the conventional name of the marker)
    return message
