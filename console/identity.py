"""Personal identifiers: validation, normalisation and the one masking helper.

Every page, API answer, log line, audit event and PDF masks through this module:
resident ID ``110105********1234`` (first 6 + last 4), mobile ``138****5678``.
"""
from __future__ import annotations

import re
import unicodedata
from datetime import date

from flask_babel import lazy_gettext as _l

# GB 11643-1999: ISO 7064 MOD 11-2 over the first 17 digits.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_MOBILE_RE = re.compile(r"^1[3-9]\d{9}$")

ID_TYPES = {
    "resident_id": _l("Resident identity card"),
    "passport": _l("Passport"),
    "hk_macau_permit": _l("Mainland travel permit for Hong Kong and Macao residents"),
}

ID_ERRORS = {
    "id_format": _l("A resident ID number has 17 digits followed by a digit or X."),
    "id_checksum": _l("The ID number's check digit is wrong; please check the number on the card."),
    "id_birth_date": _l("The ID number does not contain a valid date of birth."),
    "mobile_format": _l("Enter an 11-digit mainland mobile number starting with 1."),
    "passport_format": _l("A document number has 5 to 20 letters and digits."),
}


def to_halfwidth(text: str) -> str:
    """Full-width letters, digits and punctuation become their ASCII forms (NFKC)."""
    return unicodedata.normalize("NFKC", text)


def normalise_id_number(raw: str) -> str:
    return re.sub(r"\s+", "", to_halfwidth(raw or "")).upper()


def normalise_wallet_no(raw: str) -> str:
    """A wallet number as typed: full-width digits, spaces and dashes allowed."""
    return re.sub(r"[\s\-]", "", to_halfwidth(raw or ""))


def normalise_mobile(raw: str) -> str:
    value = re.sub(r"[\s\-()]", "", to_halfwidth(raw or ""))
    if value.startswith("+86"):
        value = value[3:]
    elif value.startswith("0086"):
        value = value[4:]
    return value


def resident_id_check_char(first17: str) -> str:
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS))
    return _CHECK_CHARS[total % 11]


def birth_date_from_resident_id(number: str) -> date | None:
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return None
    return born


def resident_id_problem(number: str, *, today: date | None = None) -> str | None:
    """The first thing wrong with a (normalised) resident ID number, or None."""
    if not re.fullmatch(r"\d{17}[\dX]", number or ""):
        return "id_format"
    born = birth_date_from_resident_id(number)
    today = today or date.today()
    if born is None or born.year < 1900 or born > today:
        return "id_birth_date"
    if resident_id_check_char(number[:17]) != number[17]:
        return "id_checksum"
    return None


def document_problem(id_type: str, number: str) -> str | None:
    if id_type == "resident_id":
        return resident_id_problem(number)
    if not re.fullmatch(r"[A-Z0-9]{5,20}", number or ""):
        return "passport_format"
    return None


def mobile_problem(mobile: str) -> str | None:
    return None if _MOBILE_RE.fullmatch(mobile or "") else "mobile_format"


def mask_id_number(number: str | None) -> str:
    if not number:
        return ""
    if len(number) <= 10:
        return number[:2] + "*" * max(len(number) - 4, 0) + number[-2:]
    return number[:6] + "*" * (len(number) - 10) + number[-4:]


def mask_mobile(mobile: str | None) -> str:
    if not mobile:
        return ""
    if len(mobile) < 8:
        return "*" * len(mobile)
    return mobile[:3] + "*" * (len(mobile) - 7) + mobile[-4:]


def mask_name(name: str | None) -> str:
    """张三 -> 张*, 欧阳明月 -> 欧阳**; Latin names keep their initial."""
    if not name:
        return ""
    if len(name) <= 1:
        return name
    keep = 2 if len(name) >= 4 else 1
    return name[:keep] + "*" * (len(name) - keep)


def normalise_answer(answer: str) -> str:
    """Security answers: full-width to half-width, trimmed, case-folded, inner spaces collapsed."""
    return re.sub(r"\s+", " ", to_halfwidth(answer or "")).strip().casefold()
