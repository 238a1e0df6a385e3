"""SMS gateways. ``log`` writes each message to a local outbox file (the default);
``http`` posts it to an SMS provider with timeouts and retries with backoff."""
from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..identity import mask_mobile
from ..timeutil import utcnow

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A message was not delivered. ``permanent`` ones are not retried."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass
class SmsMessage:
    ref: str
    mobile: str
    text: str
    kind: str


class LogGateway:
    """Delivers into a local file, one JSON line per message: the demo's customer handset.

    The application log gets only the masked number and the kind, never the text.
    """

    name = "log"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def send(self, message: SmsMessage) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"at": utcnow().isoformat(), "ref": message.ref, "to": mask_mobile(message.mobile),
                           "kind": message.kind, "text": message.text}, ensure_ascii=False)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        log.info("sms delivered to outbox file ref=%s kind=%s to=%s", message.ref, message.kind,
                 mask_mobile(message.mobile))
        return f"log-{message.ref}"


class HttpGateway:
    """POSTs ``{"ref", "to", "text"}`` as JSON with a bearer token.

    2xx is delivered; 408, 429 and 5xx and network errors are retried with exponential
    backoff up to ``retries`` times; any other 4xx is permanent.
    """

    name = "http"
    RETRYABLE = {408, 425, 429, 500, 502, 503, 504}

    def __init__(self, url: str, token: str | None, *, timeout: float = 5, retries: int = 3,
                 backoff: float = 0.5, sleep=time.sleep):
        if not url:
            raise ValueError("SMS_HTTP_URL is required for the http gateway")
        self.url, self.token, self.timeout = url, token, timeout
        self.retries, self.backoff, self.sleep = retries, backoff, sleep

    def send(self, message: SmsMessage) -> str:
        body = json.dumps({"ref": message.ref, "to": message.mobile, "text": message.text},
                          ensure_ascii=False).encode()
        last_error = "not attempted"
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * (2 ** (attempt - 1)))
            request = urllib.request.Request(self.url, data=body, method="POST", headers={
                "Content-Type": "application/json; charset=utf-8",
                "Idempotency-Key": message.ref,
                **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
            })
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read(65536)
                    try:
                        return str(json.loads(payload or b"{}").get("id") or f"http-{message.ref}")[:64]
                    except ValueError:
                        return f"http-{message.ref}"
            except urllib.error.HTTPError as exc:
                last_error = f"HTTP {exc.code}"
                exc.close()
                if exc.code not in self.RETRYABLE:
                    raise DeliveryError(last_error, permanent=True) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            log.warning("sms gateway attempt %s failed ref=%s to=%s: %s", attempt + 1, message.ref,
                        mask_mobile(message.mobile), last_error)
        raise DeliveryError(last_error)


def gateway_from_config(config, instance_path: str):
    kind = config.get("SMS_GATEWAY", "log")
    if kind == "log":
        return LogGateway(config.get("SMS_LOG_PATH") or Path(instance_path) / "sms-outbox.log")
    if kind == "http":
        return HttpGateway(config.get("SMS_HTTP_URL"), config.get("SMS_HTTP_TOKEN"),
                           timeout=config.get("SMS_HTTP_TIMEOUT_SECONDS", 5),
                           retries=config.get("SMS_HTTP_RETRIES", 3))
    raise ValueError(f"unknown SMS_GATEWAY {kind!r}; use log or http")
