"""Normalisation and validation of referrals, with hypothesis properties for the normaliser."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from careops.domain.referrals import (
    PatientIn,
    ReferralIn,
    ReferrerIn,
    clean_text,
    missing_fields,
    normalise,
    normalise_code,
    normalise_name,
    parse_date,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1980-04-12", dt.date(1980, 4, 12)),
        ("19800412", dt.date(1980, 4, 12)),
        ("12.04.1980", dt.date(1980, 4, 12)),
        ("12/04/1980", dt.date(1980, 4, 12)),
        (" 1980-04-12T00:00:00Z ", dt.date(1980, 4, 12)),
    ],
)
def test_dates_in_common_formats(text: str, expected: dt.date) -> None:
    assert parse_date(text) == expected


def test_month_first_order_is_a_setting() -> None:
    assert parse_date("04/12/1980", "MDY") == dt.date(1980, 4, 12)


@pytest.mark.parametrize("text", ["12th April", "1980-13-01", "31/02/1980", "yesterday"])
def test_unreadable_dates_raise(text: str) -> None:
    with pytest.raises(ValueError):
        parse_date(text)


def test_fields_are_cleaned_and_problems_named() -> None:
    referral = ReferralIn(
        location=" North ",
        service_code=" mri  knee ",
        patient=PatientIn(
            given_name="  ALEX ", family_name="o'neil-SMITH", birth_date="31/02/1980", phone="abc"
        ),
        referrer=ReferrerIn(code="gp_001"),
    )
    normalised = normalise(referral)
    assert normalised.location == "north"
    assert normalised.service_code == "MRI-KNEE"
    assert normalised.given_name == "Alex"
    assert normalised.family_name == "o'neil-SMITH"
    assert normalised.referrer_code == "GP-001"
    assert normalised.problems == ["invalid_field:patient.birth_date", "invalid_field:patient.phone"]


def test_phone_becomes_e164() -> None:
    patient = PatientIn(given_name="A", family_name="B", phone="020 7946 0958")
    assert normalise(ReferralIn(patient=patient)).phone == "+442079460958"
    assert normalise(ReferralIn(patient=patient), phone_region="GB").phone == "+442079460958"


def test_missing_fields_lists_always_required_then_service_fields() -> None:
    normalised = normalise(ReferralIn(location="north", patient=PatientIn(given_name="A")))
    assert missing_fields(normalised, ["patient.birth_date", "member_id"]) == [
        "missing_field:service_code",
        "missing_field:patient.family_name",
        "missing_field:patient.birth_date",
        "missing_field:member_id",
    ]


def test_an_invalid_field_is_not_also_reported_missing() -> None:
    normalised = normalise(ReferralIn(patient=PatientIn(birth_date="soon")))
    assert "missing_field:patient.birth_date" not in missing_fields(normalised, ["patient.birth_date"])


@given(st.text(max_size=80))
def test_normalising_text_is_idempotent(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once
    assert once is None or (once == once.strip() and "  " not in once)


@given(st.text(max_size=40))
def test_code_normalisation_is_idempotent_and_upper(text: str) -> None:
    code = normalise_code(text)
    assert normalise_code(code) == code
    assert code is None or (code == code.upper() and " " not in code)


@given(st.text(alphabet=st.characters(categories=["Lu", "Ll"]), min_size=1, max_size=30))
def test_name_normalisation_is_idempotent(text: str) -> None:
    name = normalise_name(text)
    assert normalise_name(name) == name


@given(st.dates(min_value=dt.date(1880, 1, 1), max_value=dt.date(2100, 1, 1)))
def test_every_date_round_trips_through_each_format(date: dt.date) -> None:
    assert parse_date(date.isoformat()) == date
    assert parse_date(date.strftime("%Y%m%d")) == date
    assert parse_date(date.strftime("%d.%m.%Y")) == date
    assert parse_date(date.strftime("%m/%d/%Y"), "MDY") == date


@given(st.text(max_size=30))
def test_garbage_dates_raise_value_error_or_parse(text: str) -> None:
    try:
        result = parse_date(text)
    except ValueError:
        return
    assert result is None or isinstance(result, dt.date)
