"""Fast yes/no checks for the schema validator, each built once from a keyword's values.

``schema_nodes.build_check`` assembles one of these per schema node. They only say "valid or not":
no paths, no messages, no keyword lookups at run time, and they stop at the first problem. The
sandbox runs them on every event of every request, so they are written for CPython's speed:
C-level callables where one exists, plain loops rather than ``all(<generator>)``, and no work for
keywords a node does not have.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]


def json_type(value: Any) -> str:
    """The JSON name of a Python value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# -- type tests (bool is a subclass of int in Python, but never a JSON number) ---------------------


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ``isinstance(value, str)`` as a C-level callable (type.__instancecheck__ bound to str): a leaf
# check without a Python frame, about three times cheaper than a def. Most leaves are these.
is_string: Check = str.__instancecheck__
is_boolean: Check = bool.__instancecheck__
is_array: Check = list.__instancecheck__
is_object: Check = dict.__instancecheck__


def is_null(value: Any) -> bool:
    return value is None


def always(value: Any) -> bool:
    return True


def never(value: Any) -> bool:
    return False


_TYPE_TESTS: dict[str, Check] = {
    "integer": is_integer,
    "number": is_number,
    "string": is_string,
    "boolean": is_boolean,
    "array": is_array,
    "object": is_object,
    "null": is_null,
}
_NONE = type(None)
# "type: X, nullable: true" and nothing else is common (app_id, currency, click_id...): one call.
_OR_NULL: dict[Check, Check] = {
    is_string: lambda value: isinstance(value, (str, _NONE)),
    is_boolean: lambda value: isinstance(value, (bool, _NONE)),
    is_array: lambda value: isinstance(value, (list, _NONE)),
    is_object: lambda value: isinstance(value, (dict, _NONE)),
    is_integer: lambda value: value is None or (isinstance(value, int) and not isinstance(value, bool)),
    is_number: lambda value: value is None or is_number(value),
}


def type_test(expected: str) -> Check:
    """The test of ``type: <expected>``; an unknown name matches values whose ``json_type`` it is."""
    known = _TYPE_TESTS.get(expected)
    if known is not None:
        return known
    return lambda value: json_type(value) == expected


# -- combining ------------------------------------------------------------------------------------


def all_of(parts: list[Check]) -> Check:
    """Every part holds, tested in order (so a part may rely on the ones before it)."""
    if not parts:
        return always
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        first, second = parts
        return lambda value: first(value) and second(value)

    def check(value: Any) -> bool:
        for part in parts:  # noqa: SIM110 - a loop, not all(<generator>): see the module docstring
            if not part(value):
                return False
        return True

    return check


def any_of(branches: list[Check]) -> Check:
    def check(value: Any) -> bool:
        for branch in branches:  # noqa: SIM110 - a loop, not any(<generator>)
            if branch(value):
                return True
        return False

    return check


def one_of(branches: list[Check]) -> Check:
    def check(value: Any) -> bool:
        return sum(1 for branch in branches if branch(value)) == 1

    return check


def or_null(check: Check) -> Check:
    return _OR_NULL.get(check) or (lambda value: value is None or check(value))


def unless(test: Check, check: Check) -> Check:
    """``check`` for values passing ``test``; anything else passes (keywords of another kind)."""
    return lambda value: not test(value) or check(value)


# -- one kind of value, its type test included -----------------------------------------------------


def string_check(min_length: Any, max_length: Any, pattern: str | None) -> Check:
    if min_length is None and max_length is None and pattern is None:
        return is_string
    shortest = 0 if min_length is None else min_length
    longest = sys.maxsize if max_length is None else max_length
    if pattern is None:
        return lambda value: isinstance(value, str) and shortest <= len(value) <= longest
    search = re.compile(pattern).search
    return lambda value: (
        isinstance(value, str) and shortest <= len(value) <= longest and search(value) is not None
    )


def number_check(low: Any, high: Any, *, integer: bool) -> Check:
    test = is_integer if integer else is_number
    if low is None and high is None:
        return test
    # Written as "not below and not above", like the error side, so a NaN passes both ways.
    if high is None:
        return lambda value: test(value) and not value < low
    if low is None:
        return lambda value: test(value) and not value > high
    if integer:
        return lambda value: (
            isinstance(value, int) and not isinstance(value, bool) and not (value < low or value > high)
        )
    return lambda value: test(value) and not (value < low or value > high)


def array_check(item_ok: Check | None, min_items: Any, max_items: Any) -> Check:
    fewest = 0 if min_items is None else min_items
    most = sys.maxsize if max_items is None else max_items
    if item_ok is None:
        return lambda value: isinstance(value, list) and fewest <= len(value) <= most
    sized = min_items is not None or max_items is not None

    # A loop rather than all(map(...)): the arrays of an event are short (one email, two skus),
    # and for a few items building the map and all() objects costs more than the loop itself.
    def check(value: Any) -> bool:
        if not isinstance(value, list) or (sized and not fewest <= len(value) <= most):
            return False
        for item in value:  # noqa: SIM110
            if not item_ok(item):
                return False
        return True

    return check


def object_check(required: frozenset[str], properties: Mapping[str, Check], other: Check) -> Check:
    """A dict holding ``required``, each property passing its check and any other name ``other``."""
    if not properties and other is always:
        # Only "required" (the user_data anyOf branches): no need to look at the values.
        if not required:
            return is_object
        return lambda value: isinstance(value, dict) and value.keys() >= required
    check_of = dict(properties).get

    def check(value: Any) -> bool:
        if not isinstance(value, dict) or not value.keys() >= required:
            return False
        for name, item in value.items():  # noqa: SIM110
            if not check_of(name, other)(item):
                return False
        return True

    def check_without_required(value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        for name, item in value.items():  # noqa: SIM110
            if not check_of(name, other)(item):
                return False
        return True

    return check if required else check_without_required


def enum_check(options: tuple[Any, ...], *, of_strings: bool) -> Check:
    """``value in options``; ``of_strings``: the value is known to be a string (its type passed)."""
    if of_strings and all(isinstance(option, str) for option in options):
        # A string equals only a string, so set membership answers what "in the list" does.
        allowed = frozenset(options)
        return lambda value: value in allowed
    return lambda value: value in options
