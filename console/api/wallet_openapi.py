"""OpenAPI 3.1 description of the wallet API, generated from the operations declared beside their views
(console/api/wallet.py) and the pydantic models that validate their requests and shape their answers
(console/api/wallet_schemas.py); checked against the real routes by a test."""
from __future__ import annotations


def openapi_document() -> dict:
    from .wallet import api

    return api.document()
