"""The CJK font PDFs embed: a TrueType font where one is installed (Debian: fonts-wqy-microhei),
else reportlab's built-in CID font STSong-Light, which viewers must supply (not embedded)."""
from __future__ import annotations

import logging
import os
from functools import lru_cache

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont

log = logging.getLogger(__name__)

CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)
EMBEDDED_NAME = "BCSans"
FALLBACK_NAME = "STSong-Light"


@lru_cache(maxsize=4)
def cjk_font(path: str | None = None) -> tuple[str, bool]:
    """Register and return (font name, embedded?)."""
    for candidate in ([path] if path else []) + [p for p in CANDIDATES if p != path]:
        if candidate and os.path.exists(candidate):
            pdfmetrics.registerFont(TTFont(EMBEDDED_NAME, candidate, subfontIndex=0))
            return EMBEDDED_NAME, True
    log.warning("no CJK TrueType font found (install fonts-wqy-microhei); PDFs use the built-in "
                "CID font %s, which is not embedded", FALLBACK_NAME)
    pdfmetrics.registerFont(UnicodeCIDFont(FALLBACK_NAME))
    return FALLBACK_NAME, False
