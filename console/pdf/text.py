"""Measuring text on the canvas: wrap Chinese and English to a width, fit a cell, size an identifier.

Chinese has no spaces, so a line may break after any Han character or full-width punctuation;
Latin words, numbers and identifiers are never split (they move to the next line whole).
"""
from __future__ import annotations

import re

from reportlab.pdfbase.pdfmetrics import stringWidth

# A run of non-space Latin characters (a word, a number, an identifier), a run of spaces, or one
# character of anything else (a Han character, full-width punctuation).
_TOKENS = re.compile(r"[\u0021-\u024f]+|\s+|.", re.S)
# Full-width punctuation that must not start a line (line-breaking rules, 避头点).
_NO_START = set("，。、；：！？）」』”’》〉")


def width(text: str, font: str, size: float) -> float:
    return stringWidth(text, font, size)


def wrap(text: str, font: str, size: float, max_width: float) -> list[str]:
    """``text`` in lines no wider than ``max_width`` (a single over-long token stands alone)."""
    lines: list[str] = []
    line = ""
    for token in _TOKENS.findall(text):
        candidate = line + token
        if not line or width(candidate.rstrip(), font, size) <= max_width or token in _NO_START:
            line = candidate
            continue
        lines.append(line.rstrip())
        line = "" if token.isspace() else token
    if line.strip():
        lines.append(line.rstrip())
    return lines or [""]


def fit(text: str, font: str, size: float, max_width: float) -> str:
    """``text``, cut with an ellipsis if it is wider than ``max_width`` (for table cells)."""
    if len(text) * size <= max_width or width(text, font, size) <= max_width:  # no glyph is wider than 1 em
        return text
    while text and width(text + "…", font, size) > max_width:
        text = text[:-1]
    return text + "…"


def size_to_fit(text: str, font: str, size: float, max_width: float, minimum: float = 4.5) -> float:
    """The largest font size up to ``size`` at which ``text`` fits on one line: identifiers and
    digests are made smaller, never cut or wrapped."""
    at_one = width(text, font, 1) or 1
    return max(minimum, min(size, max_width / at_one))
