"""The audit report PDF, drawn on the canvas page by page (a single platypus table is
superlinear at this size). The caller splits very large exports into volumes, since
reportlab holds a whole document until it is saved."""
from __future__ import annotations

import io
from typing import Iterable

from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas

from .fonts import cjk_font

COLUMNS = (  # (title zh, title en, x offset mm, max characters)
    ("序号", "Seq.", 0, 10), ("时间(北京)", "Time", 18, 19), ("操作人", "Actor", 52, 12), ("角色", "Role", 74, 10),
    ("网点", "Branch", 92, 10), ("渠道", "Channel", 110, 8), ("操作", "Action", 125, 30), ("结果", "Outcome", 180, 8),
    ("原因", "Reason", 196, 24), ("客户", "Customer", 238, 12), ("受理单", "Case", 258, 16),
)


def build_report_pdf(rows: Iterable[tuple], *, title: str, filter_text: str, generated_at: str, volume: str = "",
                     font_path: str | None = None) -> bytes:
    """``rows`` yields tuples in COLUMNS order (already masked and formatted)."""
    font, _embedded = cjk_font(font_path)
    buffer = io.BytesIO()
    size = landscape(A4)
    c = canvas.Canvas(buffer, pagesize=size, invariant=1, pageCompression=1)
    c.setTitle(title)
    width, height = size
    left, top, bottom, line = 12 * mm, height - 12 * mm, 14 * mm, 4.2 * mm
    page_no = 0

    def header() -> float:
        nonlocal page_no
        page_no += 1
        c.setFont(font, 13)
        c.drawString(left, top, title)
        c.setFont(font, 8)
        c.drawString(left, top - 5 * mm, f"筛选 Filter: {filter_text}")
        c.drawString(left, top - 9 * mm, f"生成时间 Generated: {generated_at}  {volume}")
        c.drawRightString(width - left, top, f"第 {page_no} 页 Page {page_no}")
        y = top - 16 * mm
        c.setFont(font, 7)
        for zh, en, x, _n in COLUMNS:
            c.drawString(left + x * mm, y, f"{zh} {en}")
        c.line(left, y - 1.5 * mm, width - left, y - 1.5 * mm)
        return y - line - 1 * mm

    y = header()
    count = 0
    for row in rows:
        if y < bottom:
            c.showPage()
            y = header()
        c.setFont(font, 7)
        for (_zh, _en, x, limit), value in zip(COLUMNS, row):
            text = "" if value is None else str(value)
            c.drawString(left + x * mm, y, text if len(text) <= limit else text[: limit - 1] + "…")
        y -= line
        count += 1
    if count == 0:
        c.setFont(font, 9)
        c.drawString(left, y, "没有符合条件的事件 No events match the filter.")
    c.setFont(font, 7)
    c.drawString(left, 7 * mm, f"共 {count} 条 {count} events")
    c.showPage()
    c.save()
    return buffer.getvalue()
