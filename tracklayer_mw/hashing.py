"""Normalize and SHA-256 the `user` fields of an event, exactly once (CONTRACT.md §5).

Raw personal data passes through this module and nowhere else: what leaves it is hex digests.
Error messages start with the field path and say what is wrong in words; they never quote the
value, because it is personal data and messages end up in logs and 400 answers.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Final

from tracklayer_mw import _geo

# tracklayer field -> Pinterest `user_data` key.
USER_FIELDS: Final[dict[str, str]] = {
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

MAX_VALUES: Final = 10
MAX_LENGTH: Final = 1000
MIN_PHONE_DIGITS: Final = 7
MAX_PHONE_DIGITS: Final = 15  # E.164
# A number typed without "+" that starts with the default country's code and is longer than this
# already carries the code ("1 650 555 1234", "44 20 7946 0958"); shorter ones are national.
MAX_NATIONAL_DIGITS: Final = 10
EARLIEST_BIRTH: Final = date(1900, 1, 1)


class UserDataError(ValueError):
    """A user value that cannot be normalized. The message starts with the field path
    (``user.phone``, ``user.email[2]``) and never contains the value itself."""


class _Invalid(Exception):
    """Raised by the per-field rules with the reason only; the caller adds the field path."""


# Digit patterns are ASCII-only: values are NFKC-normalized first, which turns full-width
# digits into ASCII ones, and other scripts' digits are not dates or ZIP codes.
_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII | re.IGNORECASE)
_ISO_DATE = re.compile(r"(\d{4})([-/.])(\d{1,2})\2(\d{1,2})(?:[T ]\d{1,2}:\d{2}.*)?", re.ASCII)
_COMPACT_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})", re.ASCII)
_SLASH_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})", re.ASCII)
_US_ZIP = re.compile(r"(\d{5})(?:[-\s]?\d{4})?", re.ASCII)
_ZIP_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]+")
# Phone: a "+" before the first digit, e.g. "+44 ..." or "(+44) ...".
_LEADING_PLUS = re.compile(r"[^\d+]*\+")
# "+44 (0)20 ...": the bracketed zero is the national trunk prefix, not part of the number.
_OPTIONAL_TRUNK_ZERO = re.compile(r"\(\s*0\s*\)")
_NOT_KEY_CHARS = re.compile(r"[\W_]+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}", re.ASCII)

_GENDERS: Final[dict[str, str]] = {
    **dict.fromkeys(("f", "female", "woman", "w"), "f"),
    **dict.fromkeys(("m", "male", "man"), "m"),
    # Keys are compared without spaces and punctuation: "non-binary", "non_binary" -> "nonbinary".
    **dict.fromkeys(("n", "nonbinary", "other", "x"), "n"),
}


def sha256_hex(text: str) -> str:
    """SHA-256 of the UTF-8 bytes of `text`, lower-case hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _lookup_key(text: str) -> str:
    """Loose form for name look-ups: "Côte d'Ivoire", "COTE D IVOIRE" and "cote-d'ivoire" all match."""
    decomposed = unicodedata.normalize("NFKD", text)
    without_accents = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NOT_KEY_CHARS.sub("", without_accents.casefold().replace("&", "and"))


def _build_index(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    index: dict[str, str] = {}
    for name, code in pairs:
        key = _lookup_key(name)
        keys = [key, "st" + key[5:]] if key.startswith("saint") else [key]  # "St. Lucia" = "Saint Lucia"
        for k in keys:
            # Two codes under one key would silently make a name mean the wrong place.
            if index.setdefault(k, code) != code:
                raise RuntimeError(f"_geo: {name!r} is ambiguous ({index[k]} or {code})")
    return index


_COUNTRY_INDEX: Final = _build_index(
    [
        *((alpha2, alpha2) for alpha2 in _geo.COUNTRY_NAMES),
        *_geo.ALPHA3_TO_ALPHA2.items(),
        *((name, alpha2) for alpha2, name in _geo.COUNTRY_NAMES.items()),
        *_geo.COUNTRY_ALIASES.items(),
    ]
)
_STATE_INDEX: Final = _build_index([*_geo.US_STATES.items(), *_geo.CA_PROVINCES.items()])
_KNOWN_CALLING_CODES: Final = frozenset(_geo.CALLING_CODES.values())


def _country_alpha2(text: str) -> str | None:
    key = _lookup_key(text)
    found = _COUNTRY_INDEX.get(key)
    if found is None and key.startswith("the"):  # "the Netherlands", "The Bahamas", "the UK"
        found = _COUNTRY_INDEX.get(key[3:])
    return found


def calling_code(country: str) -> str:
    """The international calling code digits for an ISO country ("US", "gb", "United Kingdom")
    or a calling code ("1", "+44", "0044"). Raises ValueError when unknown."""
    text = country.strip()
    digits = text.removeprefix("+")
    if digits.isascii() and digits.isdigit():
        code = digits.lstrip("0")
        if code in _KNOWN_CALLING_CODES:
            return code
    else:
        alpha2 = _country_alpha2(text)
        if alpha2 is not None:
            return _geo.CALLING_CODES[alpha2]
    # A settings value, not personal data: quoting it helps fix the configuration.
    raise ValueError(f"unknown country or calling code: {country!r}")


# Per-field rules: raw value in (already checked to be non-blank and not too long), normalized
# string out, or _Invalid(reason).


def _email(value: str) -> str:
    text = value.strip().lower()
    local, _, domain = text.partition("@")
    if text.count("@") != 1 or not local or not domain:
        raise _Invalid("not an email address")
    return text


def _phone(value: str, default_code: str | None) -> str:
    text = _OPTIONAL_TRUNK_ZERO.sub("", unicodedata.normalize("NFKC", value).strip())
    # isdecimal()/decimal() also read other scripts' digits ("٠٥٥٥...") as the numbers they are.
    digits = "".join(str(unicodedata.decimal(ch)) for ch in text if ch.isdecimal())
    if not digits:
        raise _Invalid("has no digits")
    if _LEADING_PLUS.match(text) or digits.startswith("00"):
        number = digits.lstrip("0")  # carries its code; "00" is the international prefix
    elif default_code is not None:
        national = digits.lstrip("0")  # trunk prefix: "020 7946 0958" -> "2079460958"
        if national.startswith(default_code) and len(national) > MAX_NATIONAL_DIGITS:
            number = national
        else:
            number = default_code + national
    else:
        number = digits.lstrip("0")
    if not MIN_PHONE_DIGITS <= len(number) <= MAX_PHONE_DIGITS:
        raise _Invalid(f"must have {MIN_PHONE_DIGITS} to {MAX_PHONE_DIGITS} digits with the country code")
    return number


def _name(value: str) -> str:
    # .lower(), not .casefold(): Pinterest lower-cases, and casefold would turn "ß" into "ss".
    return unicodedata.normalize("NFKC", value).strip().lower()


def _gender(value: str) -> str:
    found = _GENDERS.get(_lookup_key(value))
    if found is None:
        raise _Invalid("must be f, m or n (female, male, non-binary)")
    return found


def _date_of_birth(value: str) -> str:
    text = unicodedata.normalize("NFKC", value).strip()
    if match := _ISO_DATE.fullmatch(text):
        year, month, day = int(match[1]), int(match[3]), int(match[4])
    elif match := _COMPACT_DATE.fullmatch(text):
        year, month, day = int(match[1]), int(match[2]), int(match[3])
    elif match := _SLASH_DATE.fullmatch(text):
        first, second, year = int(match[1]), int(match[2]), int(match[3])
        # US order (MM/DD) unless the first number cannot be a month.
        month, day = (second, first) if first > 12 else (first, second)
    else:
        raise _Invalid("not a date in a known format (YYYY-MM-DD, YYYYMMDD or MM/DD/YYYY)")
    try:
        born = date(year, month, day)
    except ValueError:
        raise _Invalid("not a real calendar date") from None
    if not EARLIEST_BIRTH <= born <= date.today():
        raise _Invalid("must be between 1900 and today")
    return f"{born:%Y%m%d}"


def _letters_and_digits(value: str) -> str:
    """Lower-cased, NFKC, only letters (with their combining marks) and digits."""
    text = unicodedata.normalize("NFKC", value).lower()
    squeezed = "".join(ch for ch in text if unicodedata.category(ch)[0] in "LMN")
    if not squeezed:
        raise _Invalid("has no letters or digits")
    return squeezed


def _state(value: str) -> str:
    code = _STATE_INDEX.get(_lookup_key(value))
    if code is not None:
        return code.lower()
    # Two-letter codes pass through; other regions' names: the city rule, documented fallback.
    return _letters_and_digits(value)


def _zip(value: str) -> str:
    text = unicodedata.normalize("NFKC", value).strip()
    if match := _US_ZIP.fullmatch(text):
        return match[1]  # ZIP+4 -> ZIP
    squeezed = _ZIP_SEPARATORS.sub("", text.lower())
    if not squeezed:
        raise _Invalid("has no letters or digits")
    return squeezed


def _country(value: str) -> str:
    alpha2 = _country_alpha2(unicodedata.normalize("NFKC", value))
    if alpha2 is None:
        raise _Invalid("not a known country name or ISO 3166-1 code")
    return alpha2.lower()


def _external_id(value: str) -> str:
    return value.strip()


_RULES: Final[dict[str, Callable[[str], str]]] = {
    "email": _email,
    "first_name": _name,
    "last_name": _name,
    "gender": _gender,
    "date_of_birth": _date_of_birth,
    "city": _letters_and_digits,
    "state": _state,
    "zip": _zip,
    "country": _country,
    "external_id": _external_id,
}


def _unknown_field(field: object) -> UserDataError:
    known = ", ".join(USER_FIELDS)
    # Echo the key only when it looks like a field name: a key can be personal data too.
    if isinstance(field, str) and _IDENTIFIER.fullmatch(field):
        return UserDataError(f"user.{field}: unknown field (known fields: {known})")
    return UserDataError(f"user: unknown field (known fields: {known})")


def _normalize(field: str, value: str, path: str, phone_code: str | None) -> str:
    if len(value) > MAX_LENGTH:
        raise UserDataError(f"{path}: longer than {MAX_LENGTH:,} characters")
    if not value.strip():
        raise UserDataError(f"{path}: is empty")
    try:
        if field == "phone":
            return _phone(value, phone_code)
        return _RULES[field](value)
    except _Invalid as exc:
        raise UserDataError(f"{path}: {exc}") from None


def normalize(field: str, value: str, *, default_phone_country: str | None = None) -> str:
    """The normalized string that gets hashed for one raw value of `field`."""
    if field not in USER_FIELDS:
        raise _unknown_field(field)
    path = f"user.{field}"
    if not isinstance(value, str):
        raise UserDataError(f"{path}: must be a string")
    phone_code = calling_code(default_phone_country) if default_phone_country else None
    return _normalize(field, value, path, phone_code)


def hash_user(
    user: Mapping[str, object], *, default_phone_country: str | None = None
) -> dict[str, list[str]]:
    """{field: [sha256 hex, ...]} for an event's `user` object; see the module docstring.

    Each field takes a string or a list/tuple of strings. None and blank values are skipped,
    duplicates (after normalization) dropped in order, and values that already are SHA-256 hex
    pass through lower-cased so nothing is hashed twice. Fields left empty are omitted.
    """
    if not isinstance(user, Mapping):
        raise UserDataError("user: must be an object")
    # Resolved up front so a bad setting fails loudly (ValueError), not only on national numbers.
    phone_code = calling_code(default_phone_country) if default_phone_country else None
    result: dict[str, list[str]] = {}
    for field, raw in user.items():
        if not isinstance(field, str) or field not in USER_FIELDS:
            raise _unknown_field(field)
        path = f"user.{field}"
        if raw is None:
            continue
        if isinstance(raw, str):
            items: list[tuple[str, object]] = [(path, raw)]
        elif isinstance(raw, list | tuple):
            if len(raw) > MAX_VALUES:
                raise UserDataError(f"{path}: more than {MAX_VALUES} values")
            items = [(f"{path}[{i}]", item) for i, item in enumerate(raw)]
        else:
            raise UserDataError(f"{path}: must be a string or a list of strings")
        digests: list[str] = []
        for item_path, item in items:
            if item is None:
                continue
            if not isinstance(item, str):
                raise UserDataError(f"{item_path}: must be a string")
            digest = _digest(field, item, item_path, phone_code)
            if digest is not None and digest not in digests:
                digests.append(digest)
        if digests:
            result[field] = digests
    return result


def _digest(field: str, value: str, path: str, phone_code: str | None) -> str | None:
    if len(value) > MAX_LENGTH:
        raise UserDataError(f"{path}: longer than {MAX_LENGTH:,} characters")
    text = value.strip()
    if not text:
        return None
    if _HEX64.fullmatch(text):
        return text.lower()  # already hashed by the caller
    return sha256_hex(_normalize(field, value, path, phone_code))
