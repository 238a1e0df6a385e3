"""Language (Chinese by default, English switchable) and time zone selection."""
from __future__ import annotations

from flask import current_app, session

from .. import policy
from ..extensions import babel


def select_locale() -> str:
    lang = session.get("lang")
    if lang in current_app.config["LANGUAGES"]:
        return lang
    return current_app.config["BABEL_DEFAULT_LOCALE"]


def select_timezone() -> str:
    return policy.current().time_zone


def init_app(app) -> None:
    babel.init_app(app, locale_selector=select_locale, timezone_selector=select_timezone)

    @app.context_processor
    def _lang():
        return {"current_lang": select_locale(),
                "languages": app.config["LANGUAGES"]}
