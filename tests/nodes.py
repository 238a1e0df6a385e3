"""Real gunicorn nodes on local ports, and a small cookie-keeping HTTP client for them."""
from __future__ import annotations

import base64
import contextlib
import http.cookiejar
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NODE_SECRET_KEY = secrets.token_urlsafe(48)  # one per test run, shared by its nodes


def node_env(database_url: str, redis_url: str, **extra) -> dict:
    key = base64.urlsafe_b64encode(b"s" * 32).decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSOLE_")}
    env.update({
        "CONSOLE_ENV": "production", "CONSOLE_DATABASE_URL": database_url, "CONSOLE_SECRET_KEY": NODE_SECRET_KEY,
        "CONSOLE_DATA_ENCRYPTION_KEY": base64.urlsafe_b64encode(b"t" * 32).decode(),
        "CONSOLE_BLIND_INDEX_KEY": base64.urlsafe_b64encode(b"b" * 32).decode(),
        "CONSOLE_AUDIT_SIGNING_KEY": key, "CONSOLE_WALLET_SERVICE_KEY": base64.urlsafe_b64encode(b"w" * 32).decode(),
        "CONSOLE_RATELIMIT_STORAGE_URI": redis_url, "CONSOLE_SESSION_COOKIE_SECURE": "false",
        "CONSOLE_PUBLIC_BASE_URL": "https://console.bank.test",
        "CONSOLE_WORKERS": "2", "CONSOLE_THREADS": "4", "CONSOLE_LOG_LEVEL": "WARNING",
        "CONSOLE_LIMIT_SEARCH": "10000 per minute", "CONSOLE_LIMIT_WALLET_SIGNIN": "10000 per minute",
        "CONSOLE_LIMIT_STAFF_SIGNIN": "10000 per minute", "CONSOLE_GUNICORN_LOGLEVEL": "warning",
    })
    env.update(extra)
    return env


class Node:
    def __init__(self, env: dict, app: str = "wsgi:app"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        import tempfile

        self.log = tempfile.NamedTemporaryFile(prefix=f"node-{self.port}-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), app],
            cwd=ROOT, env={**env, "CONSOLE_BIND": f"127.0.0.1:{self.port}"},
            stdout=subprocess.DEVNULL, stderr=self.log)

    def log_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        with open(self.log.name, encoding="utf-8", errors="replace") as fh:
            return fh.read()[-chars:]

    def wait_ready(self, timeout: float = 60, path: str = "/readyz") -> None:
        """Until ``path`` answers 200 (use /healthz for "the process is up")."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"node exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError("node did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        os.unlink(self.log.name)


@contextlib.contextmanager
def running_nodes(env: dict, count: int = 2):
    """``count`` gunicorn nodes with ``env``, ready to serve; stopped afterwards."""
    nodes = [Node(env) for _ in range(count)]
    try:
        for node in nodes:
            node.wait_ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


class Browser:
    """Keeps cookies like a browser; can talk to any node (the load balancer's job)."""

    def __init__(self):
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  _NoRedirect())

    def request(self, url: str, data: dict | None = None, *, json_body=None, headers=None):
        body, hdrs = None, dict(headers or {})
        if data is not None:
            body = urllib.parse.urlencode(data).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=body, headers=hdrs, method="POST" if body is not None else "GET")
        try:
            with self.opener.open(req, timeout=30) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as exc:
            payload = exc.read().decode()
            exc.close()
            return exc.code, exc.headers, payload

    def csrf(self, url: str) -> str:
        _status, _headers, body = self.request(url)
        return CSRF.search(body).group(1)

    def post_form(self, base: str, path: str, data: dict, token_from: str | None = None):
        token = self.csrf(base + (token_from or path))
        return self.request(base + path, {**data, "csrf_token": token})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
