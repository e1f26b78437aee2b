"""Normalization and hashing of user data (CONTRACT.md §5).

The expected values come from the normalization rules, never from Pinterest's spec examples
(those hash "male" and "US" un-normalized). Digests are recomputed here with hashlib from the
literal expected strings, plus a few pasted constants that pin sha256_hex itself.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, timedelta

import pytest

from tracklayer_mw import _geo
from tracklayer_mw.hashing import (
    USER_FIELDS,
    UserDataError,
    calling_code,
    hash_user,
    normalize,
    sha256_hex,
)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


VECTORS = [
    # email
    pytest.param("email", " Ann@Example.COM ", "ann@example.com", id="email-contract-example"),
    pytest.param(
        "email", "first.last+tag@Gmail.com", "first.last+tag@gmail.com", id="email-keeps-dots-and-plus"
    ),
    pytest.param("email", "\tBOB@EXAMPLE.ORG\n", "bob@example.org", id="email-tabs-newlines"),
    pytest.param("email", "Ünï@Exämple.de", "ünï@exämple.de", id="email-unicode-lowered"),
    # phone
    pytest.param("phone", "+1 (650) 555-1234", "16505551234", id="phone-contract-example"),
    pytest.param("phone", "0044 20 7946 0958", "442079460958", id="phone-00-prefix"),
    pytest.param("phone", "+44 (0)20 7946 0958", "442079460958", id="phone-bracketed-trunk-zero-dropped"),
    pytest.param("phone", "(+33) 1 23 45 67 89", "33123456789", id="phone-plus-inside-parens"),
    pytest.param("phone", "+49-30-123456", "4930123456", id="phone-plus-dashes"),
    pytest.param("phone", "tel: +1.650.555.1234", "16505551234", id="phone-letters-and-dots-dropped"),
    pytest.param("phone", "+1 ６５０ ５５５ １２３４", "16505551234", id="phone-fullwidth-digits"),
    pytest.param("phone", "6505551234", "6505551234", id="phone-no-default-digits-only"),
    pytest.param("phone", "0650 555 1234", "6505551234", id="phone-no-default-leading-zero-stripped"),
    # phone with default_phone_country (raw value "phone@DEFAULT" is split by the test)
    pytest.param("phone@US", "(650) 555-1234", "16505551234", id="phone-default-us-national"),
    pytest.param("phone@US", "1-650-555-1234", "16505551234", id="phone-default-us-keeps-leading-1"),
    pytest.param("phone@1", "650.555.1234", "16505551234", id="phone-default-numeric-1"),
    pytest.param("phone@+1", "650 555 1234", "16505551234", id="phone-default-plus-1"),
    pytest.param("phone@GB", "020 7946 0958", "442079460958", id="phone-default-gb-trunk-zero"),
    pytest.param("phone@gb", "07946 095800", "447946095800", id="phone-default-gb-lower-mobile"),
    pytest.param("phone@44", "44 20 7946 0958", "442079460958", id="phone-default-44-already-has-code"),
    pytest.param("phone@United Kingdom", "020 7946 0958", "442079460958", id="phone-default-country-name"),
    pytest.param("phone@DE", "030 1234567", "49301234567", id="phone-default-de"),
    pytest.param("phone@US", "+44 20 7946 0958", "442079460958", id="phone-plus-beats-default"),
    pytest.param("phone@US", "0044 20 7946 0958", "442079460958", id="phone-00-beats-default"),
    # first_name, last_name
    pytest.param("first_name", " José ", "josé", id="fn-contract-example"),
    pytest.param("first_name", "ANNE-MARIE", "anne-marie", id="fn-hyphen-kept"),
    pytest.param("first_name", "Jose\u0301", "josé", id="fn-nfd-composed-by-nfkc"),
    pytest.param("first_name", "ｊｏｈｎ", "john", id="fn-fullwidth-nfkc"),
    pytest.param("last_name", "Straße", "straße", id="ln-eszett-not-casefolded"),
    pytest.param("last_name", "O'Brien", "o'brien", id="ln-apostrophe-kept"),
    pytest.param("last_name", "ÇELİK", "çeli̇k", id="ln-turkish-dotted-i-lower"),
    pytest.param("last_name", "\u3000Tanaka\u3000", "tanaka", id="ln-ideographic-spaces-trimmed"),
    # gender
    pytest.param("gender", "Female", "f", id="ge-female"),
    pytest.param("gender", " WOMAN ", "f", id="ge-woman"),
    pytest.param("gender", "w", "f", id="ge-w"),
    pytest.param("gender", "F", "f", id="ge-f"),
    pytest.param("gender", "Male", "m", id="ge-male"),
    pytest.param("gender", "man", "m", id="ge-man"),
    pytest.param("gender", "M", "m", id="ge-m"),
    pytest.param("gender", "non-binary", "n", id="ge-non-binary"),
    pytest.param("gender", "Nonbinary", "n", id="ge-nonbinary"),
    pytest.param("gender", "non_binary", "n", id="ge-non-underscore-binary"),
    pytest.param("gender", "other", "n", id="ge-other"),
    pytest.param("gender", "X", "n", id="ge-x"),
    pytest.param("gender", "n", "n", id="ge-n"),
    # date_of_birth
    pytest.param("date_of_birth", "1990-07-04", "19900704", id="db-iso"),
    pytest.param("date_of_birth", "19900704", "19900704", id="db-compact"),
    pytest.param("date_of_birth", "1990/07/04", "19900704", id="db-iso-slashes"),
    pytest.param("date_of_birth", "1990-7-4", "19900704", id="db-iso-single-digits"),
    pytest.param("date_of_birth", "07/04/1990", "19900704", id="db-us-mm-dd"),
    pytest.param("date_of_birth", "7/4/1990", "19900704", id="db-us-single-digits"),
    pytest.param("date_of_birth", "25/12/1990", "19901225", id="db-dd-mm-when-first-over-12"),
    pytest.param("date_of_birth", "1990-07-04T00:00:00", "19900704", id="db-datetime"),
    pytest.param("date_of_birth", "1990-07-04T13:45:00Z", "19900704", id="db-datetime-utc"),
    pytest.param("date_of_birth", " 2000-02-29 ", "20000229", id="db-leap-day-trimmed"),
    pytest.param("date_of_birth", "1900-01-01", "19000101", id="db-earliest"),
    # city
    pytest.param("city", "Menlo Park", "menlopark", id="ct-contract-example"),
    pytest.param("city", "St. John's", "stjohns", id="ct-punctuation"),
    pytest.param("city", "São Paulo", "sãopaulo", id="ct-accents-kept"),
    pytest.param("city", "Winston-Salem", "winstonsalem", id="ct-hyphen"),
    pytest.param("city", "29 Palms", "29palms", id="ct-digits-kept"),
    pytest.param("city", "MÜNCHEN", "münchen", id="ct-upper-umlaut"),
    pytest.param("city", "東京", "東京", id="ct-cjk"),
    # state
    pytest.param("state", "California", "ca", id="st-contract-example"),
    pytest.param("state", "NEW YORK", "ny", id="st-name-upper"),
    pytest.param("state", "District of Columbia", "dc", id="st-dc"),
    pytest.param("state", "Washington, D.C.", "dc", id="st-washington-dc"),
    pytest.param("state", "Washington", "wa", id="st-washington-state"),
    pytest.param("state", "Puerto Rico", "pr", id="st-territory"),
    pytest.param("state", "CA", "ca", id="st-code-upper"),
    pytest.param("state", " tx ", "tx", id="st-code-trimmed"),
    pytest.param("state", "N.Y.", "ny", id="st-code-with-dots"),
    pytest.param("state", "Québec", "qc", id="st-canadian-province"),
    pytest.param("state", "Île-de-France", "îledefrance", id="st-fallback-other-region"),
    # zip
    pytest.param("zip", "94025-1234", "94025", id="zp-contract-zip-plus-4"),
    pytest.param("zip", "94025", "94025", id="zp-zip5"),
    pytest.param("zip", "94025 1234", "94025", id="zp-zip-plus-4-space"),
    pytest.param("zip", "940251234", "94025", id="zp-zip-plus-4-no-separator"),
    pytest.param("zip", "SW1A 1AA", "sw1a1aa", id="zp-contract-uk-postcode"),
    pytest.param("zip", "ec1a-1bb", "ec1a1bb", id="zp-uk-dash"),
    pytest.param("zip", "K1A 0B1", "k1a0b1", id="zp-canada"),
    pytest.param("zip", "100-0001", "1000001", id="zp-japan"),
    pytest.param("zip", "01310-100", "01310100", id="zp-brazil-not-zip-plus-4"),
    # country
    pytest.param("country", "United States", "us", id="country-contract-example"),
    pytest.param("country", "US", "us", id="country-alpha2"),
    pytest.param("country", "de", "de", id="country-alpha2-lower"),
    pytest.param("country", "USA", "us", id="country-alpha3-usa"),
    pytest.param("country", "GBR", "gb", id="country-alpha3-gbr"),
    pytest.param("country", "deu", "de", id="country-alpha3-lower"),
    pytest.param("country", "United States of America", "us", id="country-usa-long"),
    pytest.param("country", "U.S.", "us", id="country-us-dots"),
    pytest.param("country", "UK", "gb", id="country-uk"),
    pytest.param("country", "Great Britain", "gb", id="country-great-britain"),
    pytest.param("country", "England", "gb", id="country-england"),
    pytest.param("country", "United Kingdom", "gb", id="country-united-kingdom"),
    pytest.param("country", "South Korea", "kr", id="country-south-korea"),
    pytest.param("country", "Korea, Republic of", "kr", id="country-iso-name-comma"),
    pytest.param("country", "Russia", "ru", id="country-russia"),
    pytest.param("country", "Czechia", "cz", id="country-czechia"),
    pytest.param("country", "Czech Republic", "cz", id="country-czech-republic"),
    pytest.param("country", "cote d'ivoire", "ci", id="country-accents-optional"),
    pytest.param("country", "St. Lucia", "lc", id="country-st-for-saint"),
    pytest.param("country", "Trinidad & Tobago", "tt", id="country-ampersand"),
    pytest.param("country", "the Netherlands", "nl", id="country-leading-the"),
    pytest.param("country", "Deutschland", "de", id="country-local-name"),
    # external_id
    pytest.param("external_id", "cust-42", "cust-42", id="external-id-contract-example"),
    pytest.param("external_id", "  Cust-42  ", "Cust-42", id="external-id-trimmed-case-kept"),
]


def _split(field: str) -> tuple[str, str | None]:
    name, _, default = field.partition("@")
    return name, default or None


@pytest.mark.parametrize(("field", "raw", "expected"), VECTORS)
def test_normalize(field: str, raw: str, expected: str) -> None:
    name, default = _split(field)
    assert normalize(name, raw, default_phone_country=default) == expected


@pytest.mark.parametrize(("field", "raw", "expected"), VECTORS)
def test_hash_user_hashes_the_normalized_value(field: str, raw: str, expected: str) -> None:
    name, default = _split(field)
    assert hash_user({name: raw}, default_phone_country=default) == {name: [_sha(expected)]}


def test_vector_table_covers_every_field() -> None:
    fields = {_split(p.values[0])[0] for p in VECTORS}  # type: ignore[arg-type]
    assert fields == set(USER_FIELDS)
    assert len(VECTORS) >= 60


# Pasted once from hashlib, so a change inside sha256_hex itself is caught.
@pytest.mark.parametrize(
    ("text", "digest"),
    [
        ("ann@example.com", "71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476"),
        ("16505551234", "6069d14bf122fdfd931dc7beb58e5dfbba395b1faf05bdcd42d12358d63d8599"),
        ("josé", "d994e1d001886fe5b45b1267bd1fa2b752ac50742579bd3dad7b2a2aa0ed6866"),
        ("f", "252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111"),
        ("19900704", "ab76a422ac8223f4dc26821ade87ad3942389a82d4440b4c500a4f36795b1004"),
        ("menlopark", "0007a3d64c01e23d5075203c5977c14e4f7e01a3fc570686fcc50b5e1dd42685"),
        ("ca", "6959097001d10501ac7d54c0bdb8db61420f658f2922cc26e46d536119a31126"),
        ("94025", "b9a9cf3cd3723a2e91b7c23ecf68456e872b6e5d86e5cab7f3d45a7302da32c7"),
        ("sw1a1aa", "830e1d4b9838bab1f5c2acdb23e0b502ff13a9832c4632e8d67a1d43d3b7f614"),
        ("us", "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"),
        ("cust-42", "8a3c5a67cad508582b5edf6b8352cea3ffbad7f44812c1a736b4444c0f5746aa"),
    ],
)
def test_sha256_hex_literal_constants(text: str, digest: str) -> None:
    assert sha256_hex(text) == digest


def test_contract_example_end_to_end() -> None:
    user = {"email": "Ann@Example.com", "phone": "+1 (650) 555-1234"}
    assert hash_user(user) == {
        "email": ["71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476"],
        "phone": ["6069d14bf122fdfd931dc7beb58e5dfbba395b1faf05bdcd42d12358d63d8599"],
    }


def test_user_fields_map_to_pinterest_keys() -> None:
    assert USER_FIELDS == {
        "email": "em",
        "phone": "ph",
        "first_name": "fn",
        "last_name": "ln",
        "gender": "ge",
        "date_of_birth": "db",
        "city": "ct",
        "state": "st",
        "zip": "zp",
        "country": "country",
        "external_id": "external_id",
    }


# hash_user: shapes, lists, dedup, skipping, passthrough


def test_prehashed_upper_case_hex_passes_through_lower_cased() -> None:
    digest = _sha("ann@example.com")
    assert hash_user({"email": digest.upper()}) == {"email": [digest]}
    assert hash_user({"phone": f"  {digest.upper()}  "}) == {"phone": [digest]}


def test_prehashed_is_never_hashed_twice_even_for_fields_with_rules() -> None:
    digest = "AB" * 32  # not an email, not a country: still passed through
    assert hash_user({"email": digest, "country": digest}) == {
        "email": [digest.lower()],
        "country": [digest.lower()],
    }


def test_list_values_are_normalized_deduplicated_in_order() -> None:
    user = {"email": ["B@x.com", " b@x.com ", "a@x.com", "B@X.COM"]}
    assert hash_user(user) == {"email": [_sha("b@x.com"), _sha("a@x.com")]}


def test_raw_and_prehashed_duplicates_collapse() -> None:
    user = {"email": ["ann@example.com", _sha("ann@example.com").upper()]}
    assert hash_user(user) == {"email": [_sha("ann@example.com")]}


def test_tuple_is_accepted() -> None:
    assert hash_user({"gender": ("Female", "f", "woman")}) == {"gender": [_sha("f")]}


def test_none_blank_and_empty_values_are_skipped_and_fields_omitted() -> None:
    user = {
        "email": None,
        "phone": "",
        "first_name": "   ",
        "last_name": [],
        "city": [None, " ", "\t"],
        "zip": ["", "94025"],
    }
    assert hash_user(user) == {"zip": [_sha("94025")]}


def test_empty_user() -> None:
    assert hash_user({}) == {}


def test_ten_values_are_allowed() -> None:
    emails = [f"u{i}@example.com" for i in range(10)]
    assert hash_user({"email": emails}) == {"email": [_sha(e) for e in emails]}


def test_value_of_exactly_1000_chars_is_allowed() -> None:
    value = "x" * 1000
    assert hash_user({"external_id": value}) == {"external_id": [_sha(value)]}


def test_default_phone_country_only_applies_to_national_numbers() -> None:
    user = {"phone": ["(650) 555-1234", "+44 20 7946 0958"]}
    assert hash_user(user, default_phone_country="US") == {
        "phone": [_sha("16505551234"), _sha("442079460958")],
    }


def test_bad_default_phone_country_is_a_plain_value_error() -> None:
    with pytest.raises(ValueError, match="unknown country or calling code") as info:
        hash_user({"email": "a@b.c"}, default_phone_country="Atlantis")
    assert not isinstance(info.value, UserDataError)


# Errors: each path, field path first, never the raw value

ERRORS = [
    pytest.param({"email": "ann.example.com"}, "user.email: not an email address", id="email-no-at"),
    pytest.param({"email": "ann@@example.com"}, "user.email: not an email address", id="email-two-ats"),
    pytest.param({"email": "@example.com"}, "user.email: not an email address", id="email-empty-local"),
    pytest.param({"email": "secret.person@"}, "user.email: not an email address", id="email-empty-domain"),
    pytest.param({"phone": "call me maybe"}, "user.phone: has no digits", id="phone-no-digits"),
    pytest.param({"phone": "+1 555 12"}, "user.phone: must have 7 to 15 digits", id="phone-too-short"),
    pytest.param({"phone": "+1234567890123456"}, "user.phone: must have 7 to 15 digits", id="phone-too-long"),
    pytest.param({"phone": "000000000"}, "user.phone: must have 7 to 15 digits", id="phone-only-zeros"),
    pytest.param({"gender": "unicorn"}, "user.gender: must be f, m or n", id="gender-unknown"),
    pytest.param({"date_of_birth": "July 4th 1990"}, "user.date_of_birth: not a date", id="db-words"),
    pytest.param({"date_of_birth": "04.07.1990"}, "user.date_of_birth: not a date", id="db-dotted-dmy"),
    pytest.param(
        {"date_of_birth": "1990-07-04 lunch"}, "user.date_of_birth: not a date", id="db-trailing-junk"
    ),
    pytest.param(
        {"date_of_birth": "1990-02-30"}, "user.date_of_birth: not a real calendar date", id="db-feb-30"
    ),
    pytest.param(
        {"date_of_birth": "13/13/1990"}, "user.date_of_birth: not a real calendar date", id="db-13-13"
    ),
    pytest.param(
        {"date_of_birth": "1899-12-31"}, "user.date_of_birth: must be between 1900", id="db-too-old"
    ),
    pytest.param({"date_of_birth": "2999-01-01"}, "user.date_of_birth: must be between 1900", id="db-future"),
    pytest.param({"city": "?!..."}, "user.city: has no letters or digits", id="city-punctuation-only"),
    pytest.param({"state": "--"}, "user.state: has no letters or digits", id="state-punctuation-only"),
    pytest.param({"zip": "- -"}, "user.zip: has no letters or digits", id="zip-separators-only"),
    pytest.param({"country": "Atlantis"}, "user.country: not a known country", id="country-unknown"),
    pytest.param({"country": "XX"}, "user.country: not a known country", id="country-unknown-code"),
    pytest.param(
        {"email": ["ok@example.com", "nope"]}, "user.email[1]: not an email address", id="list-item-path"
    ),
    pytest.param({"email": 42}, "user.email: must be a string or a list of strings", id="non-string"),
    pytest.param({"email": True}, "user.email: must be a string or a list of strings", id="bool"),
    pytest.param({"email": {"a": "b"}}, "user.email: must be a string or a list of strings", id="dict"),
    pytest.param({"email": ["a@b.c", 7]}, "user.email[1]: must be a string", id="non-string-item"),
    pytest.param(
        {"email": [f"u{i}@x.com" for i in range(11)]}, "user.email: more than 10 values", id="11-values"
    ),
    pytest.param({"city": "x" * 1001}, "user.city: longer than 1,000 characters", id="too-long"),
    pytest.param(
        {"city": [" ", "y" * 1001]}, "user.city[1]: longer than 1,000 characters", id="too-long-item"
    ),
    pytest.param(
        {"mail": "ann@example.com"}, "user.mail: unknown field (known fields: email, phone,", id="unknown"
    ),
]


@pytest.mark.parametrize(("user", "message"), ERRORS)
def test_user_data_errors(user: dict[str, object], message: str) -> None:
    with pytest.raises(UserDataError) as info:
        hash_user(user)
    text = str(info.value)
    assert text.startswith(message)
    for value in user.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and len(item) > 2:
                assert item not in text


def test_unknown_field_lists_every_known_field() -> None:
    with pytest.raises(UserDataError) as info:
        hash_user({"mail": "x"})
    assert all(field in str(info.value) for field in USER_FIELDS)


def test_unknown_field_that_looks_like_data_is_not_echoed() -> None:
    with pytest.raises(UserDataError) as info:
        hash_user({"ann@example.com": "x"})
    assert str(info.value).startswith("user: unknown field")
    assert "ann@example.com" not in str(info.value)


def test_user_must_be_a_mapping() -> None:
    with pytest.raises(UserDataError, match=r"^user: must be an object"):
        hash_user(["ann@example.com"])  # type: ignore[arg-type]


def test_yesterday_is_a_valid_birth_date_and_tomorrow_is_not() -> None:
    yesterday = date.today() - timedelta(days=1)
    tomorrow = date.today() + timedelta(days=1)
    assert normalize("date_of_birth", yesterday.isoformat()) == f"{yesterday:%Y%m%d}"
    with pytest.raises(UserDataError, match="between 1900 and today"):
        normalize("date_of_birth", tomorrow.isoformat())


def test_normalize_errors_name_the_field() -> None:
    with pytest.raises(UserDataError, match=r"^user\.phone: has no digits$"):
        normalize("phone", "none at all")
    with pytest.raises(UserDataError, match=r"^user\.email: is empty$"):
        normalize("email", "   ")
    with pytest.raises(UserDataError, match=r"^user\.nope: unknown field"):
        normalize("nope", "x")
    with pytest.raises(UserDataError, match=r"^user\.email: must be a string$"):
        normalize("email", 5)  # type: ignore[arg-type]


# calling_code and the _geo tables


@pytest.mark.parametrize(
    ("country", "code"),
    [
        pytest.param("US", "1", id="iso-us"),
        pytest.param("us", "1", id="iso-us-lower"),
        pytest.param("1", "1", id="numeric-1"),
        pytest.param("+44", "44", id="plus-44"),
        pytest.param("44", "44", id="numeric-44"),
        pytest.param("0044", "44", id="00-44"),
        pytest.param("GB", "44", id="iso-gb"),
        pytest.param("United Kingdom", "44", id="name-uk"),
        pytest.param(" de ", "49", id="iso-de-trimmed"),
        pytest.param("CA", "1", id="nanp-canada"),
        pytest.param("PR", "1", id="nanp-puerto-rico"),
        pytest.param("JM", "1", id="nanp-jamaica"),
        pytest.param("RU", "7", id="russia"),
        pytest.param("KZ", "7", id="kazakhstan-shares-7"),
        pytest.param("FRA", "33", id="alpha3"),
        pytest.param("Antarctica", "672", id="no-libphonenumber-metadata"),
    ],
)
def test_calling_code(country: str, code: str) -> None:
    assert calling_code(country) == code


@pytest.mark.parametrize("bad", ["", "XX", "Atlantis", "999", "+0", "+1-684", "0"])
def test_calling_code_unknown(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown country or calling code"):
        calling_code(bad)


def test_country_table_is_complete_and_consistent() -> None:
    assert len(_geo.COUNTRIES) == 249
    alpha2 = [row[0] for row in _geo.COUNTRIES]
    alpha3 = [row[1] for row in _geo.COUNTRIES]
    assert len(set(alpha2)) == 249
    assert len(set(alpha3)) == 249
    for a2, a3, code, name in _geo.COUNTRIES:
        assert re.fullmatch(r"[A-Z]{2}", a2), a2
        assert re.fullmatch(r"[A-Z]{3}", a3), a3
        assert re.fullmatch(r"[1-9][0-9]{0,2}", code), (a2, code)
        assert re.fullmatch(r"\S(.*\S)?", name), a2


def test_every_name_alias_and_code_resolves_to_its_own_country() -> None:
    # Also proves no two countries share a look-up key.
    for a2, a3, _, name in _geo.COUNTRIES:
        for form in (a2, a2.lower(), a3, name, name.upper()):
            assert normalize("country", form) == a2.lower(), form
    for alias, a2 in _geo.COUNTRY_ALIASES.items():
        assert a2 in _geo.COUNTRY_NAMES, alias
        assert normalize("country", alias) == a2.lower(), alias


def test_nanp_members_have_calling_code_1() -> None:
    nanp = {"US", "CA", "PR", "GU", "VI", "AS", "MP", "UM", "BS", "BB", "JM", "TT", "DO", "BM", "KY"}
    assert {a2 for a2 in nanp if _geo.CALLING_CODES[a2] != "1"} == set()
    assert _geo.CALLING_CODES["GB"] == "44"
    assert _geo.CALLING_CODES["MX"] == "52"


def test_every_state_name_resolves_to_its_code() -> None:
    assert len(_geo.US_STATES) >= 57  # 50 states + DC + 5 inhabited territories (+ aliases)
    for table in (_geo.US_STATES, _geo.CA_PROVINCES):
        for name, code in table.items():
            assert len(code) == 2, name
            assert normalize("state", name) == code.lower(), name
            assert normalize("state", name.upper()) == code.lower(), name
