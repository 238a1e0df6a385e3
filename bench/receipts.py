"""Receipts per second (QR code + embedded CJK font) against a bare canvas page, same run.

    .venv/bin/python bench/receipts.py [--seconds 5]
"""
from __future__ import annotations

import argparse
import io
import time

import _common  # noqa: F401  (sys.path)
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from console.pdf.fonts import cjk_font
from console.pdf.receipt import build_receipt_pdf

DATA = {
    "bank": "演示银行", "branch": "北京西城支行 Beijing Xicheng Branch", "receipt_no": "R20261125123456",
    "case_no": "K20261125123456", "customer": "李*", "id_number": "110105********0018", "channel": "柜面 Counter",
    "issued_at": "2026-11-25 14:02:11",
    "operations": [{"time": "14:01:05", "label_zh": "柜面证件核验", "label_en": "ID document verification",
                    "outcome_zh": "成功", "outcome_en": "Succeeded", "seq": 1041},
                   {"time": "14:02:00", "label_zh": "解锁钱包", "label_en": "Wallet unlocked",
                    "outcome_zh": "成功", "outcome_en": "Succeeded", "seq": 1042}],
    "last_seq": 1042, "last_hash": "ab" * 32,
    "check_url": "https://console.example/receipts/check/R20261125123456?c=0123456789abcdef", "counter": True,
}


def bare_page() -> bytes:
    buffer = io.BytesIO()
    c = canvas.Canvas(buffer, pagesize=A4, invariant=1)
    c.showPage()
    c.save()
    return buffer.getvalue()


def rate(fn, seconds: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    font, embedded = cjk_font()
    bare = rate(bare_page, args.seconds)
    receipt = rate(lambda: build_receipt_pdf(DATA), args.seconds)
    size = len(build_receipt_pdf(DATA))
    print(f"font: {font} (embedded: {embedded}); receipt size {size / 1024:.1f} KiB")
    print(f"{'bare canvas page':<40}{bare:>9.1f} /s   baseline")
    print(f"{'receipt (QR + embedded CJK font)':<40}{receipt:>9.1f} /s   {receipt / bare:>6.3f} x baseline"
          f"   ({1000 / receipt:.1f} ms each)")


if __name__ == "__main__":
    main()
