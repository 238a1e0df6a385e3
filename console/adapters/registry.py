"""Citizen-ID registry (联网核查). ``local``: a table seeded with demo data; ``http``: a JSON
service. Both answer ``match``, ``mismatch`` (name differs), ``not_found`` or ``revoked``;
``unavailable`` means the check could not run (and the verification fails closed)."""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from sqlalchemy import select

from ..identity import mask_id_number

log = logging.getLogger(__name__)


class LocalRegistry:
    name = "local"

    def __init__(self, session):
        self.session = session

    def check(self, id_type: str, id_number: str, name: str) -> str:
        from ..models.service import RegistryEntry
        from ..services.customers import document_index

        entry = self.session.scalar(select(RegistryEntry).where(
            RegistryEntry.id_number_index == document_index(id_type, id_number)))
        if entry is None:
            return "not_found"
        if entry.status != "valid":
            return "revoked"
        return "match" if entry.name == name else "mismatch"


class HttpRegistry:
    """POST ``{"id_type", "id_number", "name"}``; expects ``{"result": "match" | ...}``."""

    name = "http"
    RESULTS = {"match", "mismatch", "not_found", "revoked"}

    def __init__(self, url: str, token: str | None, *, timeout: float = 5):
        if not url:
            raise ValueError("REGISTRY_HTTP_URL is required for the http registry")
        self.url, self.token, self.timeout = url, token, timeout

    def check(self, id_type: str, id_number: str, name: str) -> str:
        body = json.dumps({"id_type": id_type, "id_number": id_number, "name": name}, ensure_ascii=False).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8",
            **({"Authorization": f"Bearer {self.token}"} if self.token else {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                result = json.loads(response.read(65536)).get("result")
        except urllib.error.HTTPError as exc:
            exc.close()
            log.warning("registry answered HTTP %s for %s", exc.code, mask_id_number(id_number))
            return "unavailable"
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            log.warning("registry unreachable for %s: %s", mask_id_number(id_number), type(exc).__name__)
            return "unavailable"
        return result if result in self.RESULTS else "unavailable"


def registry_from_config(config, session):
    kind = config.get("REGISTRY_ADAPTER", "local")
    if kind == "local":
        return LocalRegistry(session)
    if kind == "http":
        return HttpRegistry(config.get("REGISTRY_HTTP_URL"), config.get("REGISTRY_HTTP_TOKEN"),
                            timeout=config.get("REGISTRY_HTTP_TIMEOUT_SECONDS", 5))
    raise ValueError(f"unknown REGISTRY_ADAPTER {kind!r}; use local or http")
