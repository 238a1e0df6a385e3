"""Bring the Chinese catalogue up to date with the code, and optionally fill in translations.

    python scripts/translations.py                 # extract, merge (no fuzzy guesses), compile;
                                                   # prints every msgid still untranslated
    python scripts/translations.py --fill F.json   # first sets msgstr from {"msgid": "译文", ...}

Obsolete entries are dropped and the file is written sorted, so concurrent work merges cleanly.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "console/translations/zh_Hans_CN/LC_MESSAGES/messages.po"
MO = PO.with_suffix(".mo")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fill", type=Path, help="JSON object mapping msgid to its Chinese translation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pot = Path(tmp) / "messages.pot"
        subprocess.run([str(Path(sys.executable).parent / "pybabel"), "-q", "extract", "-F", "babel.cfg",
                        "-k", "_l", "-k", "lazy_gettext", "-k", "N_", "-o", str(pot), "console", "templates"],
                       cwd=ROOT, check=True)
        with pot.open("rb") as handle:
            template = read_po(handle)
    with PO.open("rb") as handle:
        catalog = read_po(handle, locale="zh_Hans_CN")
    catalog.update(template, no_fuzzy_matching=True)
    catalog.obsolete.clear()
    if args.fill:
        for msgid, text in json.loads(args.fill.read_text(encoding="utf-8")).items():
            if msgid not in catalog:
                print(f"not in the code (skipped): {msgid!r}", file=sys.stderr)
                continue
            catalog[msgid].string = text
            catalog[msgid].flags.discard("fuzzy")
    with PO.open("wb") as handle:
        write_po(handle, catalog, width=100, sort_output=True)
    with MO.open("wb") as handle:
        write_mo(handle, catalog)
    missing = [m.id for m in catalog if m.id and not m.string]
    for msgid in missing:
        print(f"untranslated: {msgid!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
