"""The audit report PDF, drawn on the canvas page by page (a single platypus table is
superlinear at this size). The caller splits very large exports into volumes, since
reportlab holds a whole document until it is saved.

Every column has a width; its two-line heading (Chinese above, English below) and every value are
measured against it, so neighbouring columns never collide (a value too wide ends in "…").
"""
from __future__ import annotations

import io
from typing import Iterable

from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas

from .fonts import cjk_font
from .text import fit

PAGE = landscape(A4)
MARGIN = 12 * mm
GAP = 2 * mm  # between a column's text and the next column
HEAD_ZH, HEAD_EN, BODY = 7.5, 6, 7
COLUMNS = (  # (heading zh, heading en, width mm); the widths fill the page between the margins
    ("序号", "Seq.", 14), ("时间（北京）", "Time (Beijing)", 28), ("操作人", "Actor", 20), ("角色", "Role", 24),
    ("网点", "Branch", 20), ("渠道", "Channel", 20), ("操作", "Action", 46), ("结果", "Outcome", 12),
    ("原因", "Reason", 36), ("客户", "Customer", 24), ("受理单", "Case", 29),
)


def column_boxes() -> list[tuple[float, float]]:
    """(x, usable text width) of each column, in points."""
    boxes, x = [], MARGIN
    for _zh, _en, width_mm in COLUMNS:
        boxes.append((x, width_mm * mm - GAP))
        x += width_mm * mm
    return boxes


def build_report_pdf(rows: Iterable[tuple], *, title: str, filter_text: str, generated_at: str, volume: str = "",
                     font_path: str | None = None) -> bytes:
    """``rows`` yields tuples in COLUMNS order (already masked, labelled and formatted)."""
    font, _embedded = cjk_font(font_path)
    buffer = io.BytesIO()
    c = canvas.Canvas(buffer, pagesize=PAGE, invariant=1, pageCompression=1)
    c.setTitle(title)
    width, height = PAGE
    top, bottom, line = height - MARGIN, 14 * mm, 4.4 * mm
    boxes = column_boxes()
    page_no = 0

    def header() -> float:
        nonlocal page_no
        page_no += 1
        c.setFillColorRGB(0, 0, 0)
        c.setFont(font, 13)
        c.drawString(MARGIN, top, title)
        c.setFont(font, 8)
        c.drawRightString(width - MARGIN, top, f"第 {page_no} 页 Page {page_no}")
        c.drawString(MARGIN, top - 5 * mm, fit(f"筛选 Filter: {filter_text}", font, 8, width - 2 * MARGIN))
        c.drawString(MARGIN, top - 9 * mm, f"生成时间（北京时间） Generated (Beijing time): {generated_at}  {volume}")
        y = top - 16 * mm
        for (zh, en, _w), (x, text_width) in zip(COLUMNS, boxes):
            c.setFont(font, HEAD_ZH)
            c.setFillColorRGB(0, 0, 0)
            c.drawString(x, y, fit(zh, font, HEAD_ZH, text_width))
            c.setFont(font, HEAD_EN)
            c.setFillColorRGB(0.36, 0.39, 0.46)
            c.drawString(x, y - 2.8 * mm, fit(en, font, HEAD_EN, text_width))
        c.setFillColorRGB(0, 0, 0)
        c.line(MARGIN, y - 4.3 * mm, width - MARGIN, y - 4.3 * mm)
        return y - 4.3 * mm - line

    y = header()
    count = 0
    for row in rows:
        if y < bottom:
            c.showPage()
            y = header()
        if count % 2:  # banded rows: the eye keeps to its line across eleven columns
            c.setFillColorRGB(0.96, 0.97, 0.98)
            c.rect(MARGIN, y - 1.3 * mm, width - 2 * MARGIN, line, stroke=0, fill=1)
            c.setFillColorRGB(0, 0, 0)
        c.setFont(font, BODY)
        for (x, text_width), value in zip(boxes, row):
            text = "" if value is None else str(value)
            c.drawString(x, y, fit(text, font, BODY, text_width))
        y -= line
        count += 1
    if count == 0:
        c.setFont(font, 9)
        c.drawString(MARGIN, y, "没有符合条件的事件 No events match the filter.")
    c.setFont(font, 7)
    c.drawString(MARGIN, 7 * mm, f"共 {count} 条 {count} events")
    c.showPage()
    c.save()
    return buffer.getvalue()
