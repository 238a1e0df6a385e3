"""Resident ID validation, normalisation and masking, with property tests."""
from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from console.identity import (mask_id_number, mask_mobile, mask_name, mobile_problem, normalise_answer,
                              normalise_id_number, normalise_mobile, resident_id_check_char, resident_id_problem)

births = st.dates(min_value=date(1900, 1, 1), max_value=date.today() - timedelta(days=1))
regions = st.from_regex(r"[1-6][0-9]{5}", fullmatch=True)
sequences = st.integers(min_value=0, max_value=999)


def make_id(region, born, seq):
    first17 = f"{region}{born:%Y%m%d}{seq:03d}"
    return first17 + resident_id_check_char(first17)


def test_known_valid_number():
    # The example from GB 11643-1999.
    assert resident_id_check_char("11010519491231002") == "X"
    assert resident_id_problem("11010519491231002X") is None


@given(regions, births, sequences)
def test_every_generated_number_is_valid(region, born, seq):
    assert resident_id_problem(make_id(region, born, seq)) is None


@given(regions, births, sequences, st.integers(min_value=0, max_value=16), st.integers(min_value=1, max_value=9))
def test_changing_one_digit_is_caught(region, born, seq, position, delta):
    number = make_id(region, born, seq)
    digit = (int(number[position]) + delta) % 10
    changed = number[:position] + str(digit) + number[position + 1:]
    assert resident_id_problem(changed) in ("id_checksum", "id_birth_date")


@given(regions, births, sequences)
def test_wrong_check_character_is_caught(region, born, seq):
    number = make_id(region, born, seq)
    for check in "0123456789X":
        if check != number[-1]:
            assert resident_id_problem(number[:-1] + check) == "id_checksum"


def test_impossible_and_future_birth_dates():
    assert resident_id_problem(make_id("110105", date(2000, 1, 1), 1)[:10] + "0230" + "0011") == "id_birth_date"
    future = date.today() + timedelta(days=30)
    first17 = f"110105{future:%Y%m%d}001"
    assert resident_id_problem(first17 + resident_id_check_char(first17)) == "id_birth_date"
    assert resident_id_problem("12345") == "id_format"


@given(regions, births, sequences)
def test_full_width_and_spaces_normalise(region, born, seq):
    number = make_id(region, born, seq)
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in number)
    assert normalise_id_number(" " + full_width[:6] + " " + full_width[6:].lower()) == number


@given(regions, births, sequences)
def test_id_mask_shows_first_six_and_last_four_only(region, born, seq):
    number = make_id(region, born, seq)
    masked = mask_id_number(number)
    assert masked == number[:6] + "********" + number[-4:]
    assert number[6:14] not in masked  # the birth date never shows


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_mobile_mask_and_validation(mobile):
    assert mobile_problem(mobile) is None
    assert mask_mobile(mobile) == mobile[:3] + "****" + mobile[-4:]
    assert normalise_mobile("+86 " + mobile[:3] + "-" + mobile[3:]) == mobile


def test_mobile_problems():
    for bad in ("12812345678", "1381234567", "138123456789", "abc"):
        assert mobile_problem(bad) == "mobile_format"


@given(st.text(max_size=40))
def test_answer_normalisation_is_idempotent(text):
    once = normalise_answer(text)
    assert normalise_answer(once) == once
    assert once == once.strip()


def test_answer_normalisation_examples():
    assert normalise_answer("  ＨＡＮＧ　zhou ") == "hang zhou"
    assert normalise_answer("实验小学") == normalise_answer(" 实验小学　")


def test_name_mask():
    assert mask_name("张伟") == "张*" and mask_name("欧阳明月") == "欧阳**" and mask_name("王小明") == "王**"
