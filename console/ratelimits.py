"""Rate limits (Flask-Limiter): counters in Redis so every node shares them (memory in development).

If Redis is down, Flask-Limiter falls back to per-process memory counters, so limits still hold
per node (each node allows the full limit) and nothing else breaks; /readyz reports Redis as
unreachable. A staff member who hits a limit gets a 429 page and an audit event.

The Limiter is built per application in ``create_app`` (its storage lives on the instance), and
the limits are attached to the endpoints here, in one table, rather than scattered in decorators.
"""
from __future__ import annotations

import hashlib
import ipaddress
from functools import lru_cache

from flask import current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import current_user


def staff_key() -> str:
    """Per staff member: the console session's staff id, or the API token (the limiter runs before
    the API blueprint has resolved its bearer token)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if request.path.startswith("/api/") and scheme.lower() == "bearer" and token:
        return f"token:{hashlib.sha256(token.strip().encode()).hexdigest()[:24]}"
    if current_user and current_user.is_authenticated:
        return f"staff:{current_user.id}"
    return f"ip:{get_remote_address()}"


def customer_address_key() -> str:
    """The wallet API limits per customer address (as the wallet back end reports it)."""
    data = request.get_json(silent=True) if request.is_json else None
    value = data.get("client_ip") if isinstance(data, dict) else None
    try:
        return f"client:{ipaddress.ip_address(value)}" if isinstance(value, str) else f"ip:{get_remote_address()}"
    except ValueError:
        return f"ip:{get_remote_address()}"


def _config(name):
    return lambda: current_app.config[name]


# endpoint -> (config key of the limit, key function, methods)
LIMITS = {
    "auth.login": ("LIMIT_STAFF_SIGNIN", get_remote_address, ["POST"]),
    "auth.totp": ("LIMIT_STAFF_SIGNIN", get_remote_address, ["POST"]),
    "staff_api.issue_token": ("LIMIT_STAFF_SIGNIN", get_remote_address, ["POST"]),
    "wallet_api.sign_in": ("LIMIT_WALLET_SIGNIN", customer_address_key, ["POST"]),
    "wallet_api.change_password": ("LIMIT_WALLET_SIGNIN", customer_address_key, ["POST"]),
    "wallet_api.set_security_questions": ("LIMIT_WALLET_SIGNIN", customer_address_key, ["PUT"]),
    "desk.verify_phone_start": ("LIMIT_OTP_SEND", staff_key, ["POST"]),
    "desk.verify_phone_resend": ("LIMIT_OTP_SEND", staff_key, ["POST"]),
    "staff_api.verify_phone_start": ("LIMIT_OTP_SEND", staff_key, ["POST"]),
    "desk.search": ("LIMIT_SEARCH", staff_key, ["POST"]),
    "staff_api.search_customers": ("LIMIT_SEARCH", staff_key, ["POST"]),
}


def init_app(app) -> Limiter:
    limiter = Limiter(get_remote_address, app=app, headers_enabled=True, key_prefix="bc",
                      in_memory_fallback_enabled=True, swallow_errors=True)
    for endpoint, (config_key, key_func, methods) in LIMITS.items():
        view = app.view_functions[endpoint]
        app.view_functions[endpoint] = limiter.limit(_config(config_key), key_func=key_func, methods=methods,
                                                     scope=config_key.lower())(view)
    app.extensions["rate_limiter"] = limiter
    return limiter


@lru_cache(maxsize=4)
def _redis_client(uri: str):
    import redis

    return redis.Redis.from_url(uri, socket_connect_timeout=0.5, socket_timeout=0.5)


def redis_ok(uri: str) -> bool:
    try:
        return bool(_redis_client(uri).ping())
    except Exception:
        return False
