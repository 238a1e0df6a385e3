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
    "bank": "演示银行", "bank_en": "Branch Console Demo Bank", "hotline": "95588",
    "hotline_line": ("如非本人办理，或对本回单有疑问，请致电客服热线 95588。",
                     "Not you, or any question about this receipt? Call our hotline 95588."),
    "branch": "北京西城支行", "receipt_no": "R20261125123456", "case_no": "K20261125123456", "customer": "李*",
    "id_number": "110105********0018", "wallets": ["0031 **** **** 1234"], "channel_zh": "柜面", "channel_en": "Counter",
    "served_by": {"name": "王芳", "employee_no": "T1001"}, "issued_at": "2026-11-25 14:02:11",
    "operations": [{"time": "14:01", "label_zh": "柜面证件核验", "label_en": "ID document verification",
                    "outcome_zh": "成功", "outcome_en": "Succeeded", "outcome": "success", "wallet": "", "seq": 1041},
                   {"time": "14:02", "label_zh": "重置登录密码", "label_en": "Password reset",
                    "outcome_zh": "成功", "outcome_en": "Succeeded", "outcome": "success",
                    "wallet": "0031 **** **** 1234", "seq": 1042}],
    "next_steps": [("临时登录密码将以短信发送至您的预留手机 138****5678，24 小时内有效，仅可使用一次；首次登录时须设置新密码。",
                    "A temporary password is on its way by SMS to your registered mobile 138****5678. It is valid "
                    "for 24 hours and works once; choose a new password when you first sign in."),
                   ("办理结果均以短信通知您的预留手机 138****5678。",
                    "Each operation is confirmed by SMS to your registered mobile 138****5678.")],
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
