"""OpenAPI 3.1 description of the staff API, generated from the operations declared beside their views
(console/api/staff.py) and the pydantic models that validate their requests and shape their answers
(console/api/staff_schemas.py); checked against the real routes by a test."""
from __future__ import annotations


def openapi_document() -> dict:
    from .staff import api

    return api.document()
