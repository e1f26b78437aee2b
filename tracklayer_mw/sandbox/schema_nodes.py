"""The schema compiled once into a tree of nodes, so validating a body costs little more than walking it.

Each ``Node`` is one schema object with its ``$ref`` resolved, patterns compiled and property
tables built. It answers two questions:

- ``node.ok(value)``: valid or not, as fast as possible. A specialised closure built at compile
  time: no paths, no messages, no keyword lookups, and it stops at the first problem.
- ``node.errors(value)``: every violation, worded and ordered exactly as the keyword-by-keyword
  reading in ``schema.py``'s docstring says. Only asked when ``ok`` said no, and it only descends
  into the children whose ``ok`` says no, so even an invalid body is cheap.

Error paths are built on the way back up (each container prepends its key to its children's
violations) and formatted only at the end, so a valid body never formats a path.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Path = tuple[str | int, ...]
Check = Callable[[Any], bool]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def format_path(parts: Path) -> str:
    """``("data", 0, "user_data")`` -> ``data[0].user_data``; the empty path is ``body``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text or "body"


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


@dataclass(frozen=True, slots=True)
class Violation:
    """One error, with its path relative to the node that found it.

    ``detail`` is the text after ``"<path>: "``, or a function of the absolute path for messages
    that quote nested errors with their full paths (``anyOf``/``oneOf``).
    """

    path: Path
    detail: str | Callable[[Path], str]

    def under(self, key: str | int) -> Violation:
        return Violation((key, *self.path), self.detail)

    def render(self, base: Path = ()) -> str:
        where = base + self.path
        detail = self.detail if isinstance(self.detail, str) else self.detail(where)
        return f"{format_path(where)}: {detail}"


# -- type tests (bool is a subclass of int in Python, but never a JSON number) -----------------


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ``isinstance(value, str)`` as a C-level callable (type.__instancecheck__ bound to str): a leaf
# check without a Python frame, about three times cheaper than a def. Most leaves are these.
_is_string: Check = str.__instancecheck__
_is_boolean: Check = bool.__instancecheck__
_is_array: Check = list.__instancecheck__
_is_object: Check = dict.__instancecheck__


def _is_null(value: Any) -> bool:
    return value is None


def _always(value: Any) -> bool:
    return True


def _never(value: Any) -> bool:
    return False


_TYPE_TESTS: dict[str, Check] = {
    "integer": _is_integer,
    "number": _is_number,
    "string": _is_string,
    "boolean": _is_boolean,
    "array": _is_array,
    "object": _is_object,
    "null": _is_null,
}
# "type: X, nullable: true" and nothing else is common (app_id, currency, click_id...): one call.
_NONE = type(None)
_OR_NULL: dict[Check, Check] = {
    _is_string: lambda value: isinstance(value, (str, _NONE)),
    _is_boolean: lambda value: isinstance(value, (bool, _NONE)),
    _is_array: lambda value: isinstance(value, (list, _NONE)),
    _is_object: lambda value: isinstance(value, (dict, _NONE)),
    _is_integer: lambda value: value is None or (isinstance(value, int) and not isinstance(value, bool)),
    _is_number: lambda value: value is None or _is_number(value),
}


def _type_test(expected: str) -> Check:
    known = _TYPE_TESTS.get(expected)
    if known is not None:
        return known
    return lambda value: json_type(value) == expected


@dataclass(eq=False)
class Node:
    """One compiled schema object: its keywords, pre-digested, and its two checks."""

    ref: Node | None = None
    nullable: bool = False
    expected: str | None = None
    type_ok: Check = _always
    enum: tuple[Any, ...] | None = None
    min_length: Any = None
    max_length: Any = None
    pattern: str | None = None
    low: Any = None  # minimum, narrowed to the int64 range for format: int64
    high: Any = None
    min_items: Any = None
    max_items: Any = None
    items: Node | None = None
    required: tuple[str, ...] = ()
    properties: dict[str, Node] = field(default_factory=dict)
    extra: bool | Node = True  # additionalProperties: False forbids, a Node checks, anything else allows
    all_of: tuple[Node, ...] = ()
    any_of: tuple[Node, ...] | None = None
    one_of: tuple[Node, ...] | None = None
    branch_names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "anyOf"/"oneOf" -> names
    ok: Check = _always  # replaced by the compiled check once every field is set
    finished: bool = False

    def errors(self, value: Any) -> list[Violation]:
        """Every violation of ``value``, in keyword order; empty when valid."""
        found: list[Violation] = []
        if self.ref is not None and not self.ref.ok(value):
            found += self.ref.errors(value)
        if value is None and self.nullable:
            return found  # OpenAPI 3.0: null is allowed and no other keyword applies to it
        if self.expected is not None and not self.type_ok(value):
            found.append(Violation((), f"expected {self.expected}, got {json_type(value)}"))
            return found  # the remaining keywords would only repeat the same mistake
        if self.enum is not None and value not in self.enum:
            allowed = ", ".join(json.dumps(option) for option in self.enum)
            found.append(Violation((), f"{json.dumps(value)} is not one of {allowed}"))
        if isinstance(value, str):
            self._string_errors(value, found)
        elif _is_number(value):
            self._number_errors(value, found)
        elif isinstance(value, list):
            self._array_errors(value, found)
        elif isinstance(value, dict):
            self._object_errors(value, found)
        self._combinator_errors(value, found)
        return found

    def _string_errors(self, value: str, found: list[Violation]) -> None:
        if self.min_length is not None and len(value) < self.min_length:
            found.append(Violation((), f"must be at least {self.min_length} characters long"))
        if self.max_length is not None and len(value) > self.max_length:
            found.append(Violation((), f"must be at most {self.max_length} characters long"))
        if self.pattern is not None and not re.search(self.pattern, value):
            found.append(Violation((), f"does not match {self.pattern}"))

    def _number_errors(self, value: float, found: list[Violation]) -> None:
        if self.low is not None and value < self.low:
            found.append(Violation((), f"must be >= {self.low}"))
        if self.high is not None and value > self.high:
            found.append(Violation((), f"must be <= {self.high}"))

    def _array_errors(self, value: list[Any], found: list[Violation]) -> None:
        if self.min_items is not None and len(value) < self.min_items:
            found.append(Violation((), f"must have at least {self.min_items} items"))
        if self.max_items is not None and len(value) > self.max_items:
            found.append(Violation((), f"must have at most {self.max_items} items"))
        items = self.items
        if items is not None:
            for index, item in enumerate(value):
                if not items.ok(item):
                    found += [violation.under(index) for violation in items.errors(item)]

    def _object_errors(self, value: dict[str, Any], found: list[Violation]) -> None:
        for name in self.required:
            if name not in value:
                found.append(Violation((), f"{name!r} is required"))
        for name, item in value.items():
            child = self.properties.get(name)
            if child is None and self.extra is False:
                found.append(Violation((), f"unexpected property {name!r}"))
                continue
            if child is None:
                child = self.extra if isinstance(self.extra, Node) else None
            if child is not None and not child.ok(item):
                found += [violation.under(name) for violation in child.errors(item)]

    def _combinator_errors(self, value: Any, found: list[Violation]) -> None:
        for branch in self.all_of:
            if not branch.ok(value):
                found += branch.errors(value)
        for keyword, branches in (("anyOf", self.any_of), ("oneOf", self.one_of)):
            if branches is None:
                continue
            outcomes = [[] if branch.ok(value) else branch.errors(value) for branch in branches]
            passed = sum(1 for outcome in outcomes if not outcome)
            if passed == 0:
                found.append(Violation((), _no_branch_detail(self.branch_names[keyword], outcomes)))
            elif keyword == "oneOf" and passed > 1:
                found.append(Violation((), f"matches {passed} of the oneOf alternatives, not one"))


def _no_branch_detail(names: tuple[str, ...], outcomes: list[list[Violation]]) -> Callable[[Path], str]:
    def detail(where_path: Path) -> str:
        where = format_path(where_path)
        # dict.fromkeys: the same nested mistake usually fails every branch; say it once.
        first_problems = "; ".join(
            dict.fromkeys(
                outcome[0].render(where_path).removeprefix(f"{where}: ") for outcome in outcomes if outcome
            )
        )
        return f"must match one of: {' | '.join(names)} ({first_problems})"

    return detail


# -- compiling ---------------------------------------------------------------------------------


class Compiler:
    """Turns schemas of one document into ``Node``s; each ``$ref`` target is compiled once."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document
        self._by_ref: dict[str, Node] = {}

    def compile(self, schema: Mapping[str, Any]) -> Node:
        node = Node()
        self._fill(node, schema)
        return node

    def _resolve(self, ref: str) -> Node:
        known = self._by_ref.get(ref)
        if known is not None:
            return known
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, got {ref!r}")
        target: Any = self._document
        for token in ref[2:].split("/"):
            target = target[token.replace("~1", "/").replace("~0", "~")]
        if not isinstance(target, Mapping):
            raise ValueError(f"$ref {ref!r} does not point at a schema")
        node = self._by_ref[ref] = Node()  # registered first, so a recursive schema ends
        self._fill(node, target)
        return node

    def _fill(self, node: Node, schema: Mapping[str, Any]) -> None:
        if "$ref" in schema:
            node.ref = self._resolve(schema["$ref"])
        node.nullable = schema.get("nullable") is True
        node.expected = schema.get("type")
        if node.expected is not None:
            node.type_ok = _type_test(node.expected)
        if "enum" in schema:
            node.enum = tuple(schema["enum"])
        node.min_length = schema.get("minLength")
        node.max_length = schema.get("maxLength")
        node.pattern = schema.get("pattern")
        node.low, node.high = _bounds(schema)
        node.min_items = schema.get("minItems")
        node.max_items = schema.get("maxItems")
        if schema.get("items") is not None:
            node.items = self.compile(schema["items"])
        node.required = tuple(schema.get("required", ()))
        node.properties = {name: self.compile(sub) for name, sub in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties", True)
        node.extra = False if extra is False else self.compile(extra) if isinstance(extra, Mapping) else True
        node.all_of = tuple(self.compile(branch) for branch in schema.get("allOf", ()))
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                node.branch_names[keyword] = _branch_names(schema[keyword])
        if "anyOf" in schema:
            node.any_of = tuple(self.compile(branch) for branch in schema["anyOf"])
        if "oneOf" in schema:
            node.one_of = tuple(self.compile(branch) for branch in schema["oneOf"])
        node.ok = build_check(node)
        node.finished = True


def _bounds(schema: Mapping[str, Any]) -> tuple[Any, Any]:
    low = schema.get("minimum")
    high = schema.get("maximum")
    if schema.get("format") == "int64":
        low = _INT64_MIN if low is None else max(low, _INT64_MIN)
        high = _INT64_MAX if high is None else min(high, _INT64_MAX)
    return low, high


def _branch_names(branches: list[Mapping[str, Any]]) -> tuple[str, ...]:
    # Name each alternative by what it requires (that is how the user_data rule reads best:
    # "em", "hashed_maids", "client_ip_address + client_user_agent"), else by its title.
    names = []
    for index, branch in enumerate(branches):
        required = branch.get("required")
        names.append(" + ".join(required) if required else branch.get("title", f"alternative {index}"))
    return tuple(names)


# -- the fast checks -----------------------------------------------------------------------------


def build_check(node: Node) -> Check:
    """``node.ok``: one closure doing what ``node.errors`` does, minus the words.

    A yes/no answer does not depend on the order of the keywords, so each closure tests the cheap
    ones first (``required`` before a ``$ref``'d property walk, say).
    """
    parts: list[Check] = []
    kind = node.expected
    if kind in ("string", "integer", "number", "array", "object"):
        parts.append(_kind_check(node, kind))  # includes the type test
    else:
        if node.expected is not None:
            parts.append(node.type_ok)
        # No (or a non-container) type: each kind's keywords apply to values of that kind only.
        for test, facet_kind in (
            (_is_string, "string"),
            (_is_number, "number"),
            (_is_array, "array"),
            (_is_object, "object"),
        ):
            if _has_keywords(node, facet_kind):
                parts.append(_unless(test, _kind_check(node, facet_kind)))
    if node.enum is not None:
        parts.append(_enum_check(node))
    parts.extend(_late(branch) for branch in node.all_of)
    if node.any_of is not None:
        parts.append(_any_check([_late(branch) for branch in node.any_of]))
    if node.one_of is not None:
        parts.append(_one_check([_late(branch) for branch in node.one_of]))
    body = _conjunction(parts)
    ref = None if node.ref is None else _late(node.ref)
    if node.nullable:
        if ref is not None:
            return lambda value: ref(value) if value is None else body(value) and ref(value)
        return _OR_NULL.get(body) or (lambda value: value is None or body(value))
    if ref is not None:
        return ref if body is _always else lambda value: body(value) and ref(value)
    return body


def _late(node: Node) -> Check:
    """``node.ok``, or a call through the node while it is still being compiled (recursive ``$ref``)."""
    # The lambda is the point: it reads node.ok at call time, after compiling replaced it.
    return node.ok if node.finished else lambda value: node.ok(value)  # noqa: PLW0108


def _conjunction(parts: list[Check]) -> Check:
    if not parts:
        return _always
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        first, second = parts
        return lambda value: first(value) and second(value)
    return lambda value: all(part(value) for part in parts)


def _unless(test: Check, check: Check) -> Check:
    return lambda value: not test(value) or check(value)


def _has_keywords(node: Node, kind: str) -> bool:
    if kind == "string":
        return node.min_length is not None or node.max_length is not None or node.pattern is not None
    if kind == "number":
        return node.low is not None or node.high is not None
    if kind == "array":
        return node.min_items is not None or node.max_items is not None or node.items is not None
    return bool(node.required or node.properties) or node.extra is not True


def _kind_check(node: Node, kind: str) -> Check:
    """The check of a value that must be of ``kind`` (type test included) with ``node``'s keywords."""
    if kind == "string":
        return _string_check(node)
    if kind in ("integer", "number"):
        return _number_check(node, integer=kind == "integer")
    if kind == "array":
        return _array_check(node)
    return _object_check(node)


def _string_check(node: Node) -> Check:
    if not _has_keywords(node, "string"):
        return _is_string
    shortest = 0 if node.min_length is None else node.min_length
    longest = sys.maxsize if node.max_length is None else node.max_length
    if node.pattern is None:
        return lambda value: isinstance(value, str) and shortest <= len(value) <= longest
    search = re.compile(node.pattern).search
    return lambda value: (
        isinstance(value, str) and shortest <= len(value) <= longest and search(value) is not None
    )


def _number_check(node: Node, *, integer: bool) -> Check:
    test = _is_integer if integer else _is_number
    low, high = node.low, node.high
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


def _array_check(node: Node) -> Check:
    fewest = 0 if node.min_items is None else node.min_items
    most = sys.maxsize if node.max_items is None else node.max_items
    if node.items is None:
        return lambda value: isinstance(value, list) and fewest <= len(value) <= most
    item_ok = _late(node.items)
    sized = node.min_items is not None or node.max_items is not None

    # Loops rather than all(map(...)): the arrays of an event are short (one email, two skus), and
    # for a few items building the map and all() objects costs more than the loop itself.
    def check(value: Any) -> bool:
        if not isinstance(value, list) or (sized and not fewest <= len(value) <= most):
            return False
        for item in value:  # noqa: SIM110
            if not item_ok(item):
                return False
        return True

    return check


def _object_check(node: Node) -> Check:
    required = frozenset(node.required)
    extra = node.extra
    other = _never if extra is False else _late(extra) if isinstance(extra, Node) else _always
    if not node.properties and other is _always:
        # Only "required" (the user_data anyOf branches): no need to look at the values.
        if not required:
            return _is_object
        return lambda value: isinstance(value, dict) and value.keys() >= required
    check_of = {name: _late(child) for name, child in node.properties.items()}.get

    # Plain loops: all() over a generator costs a generator frame switch per property.
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


def _enum_check(node: Node) -> Check:
    options = node.enum or ()
    if node.expected == "string" and all(isinstance(option, str) for option in options):
        # A string equals only a string, so set membership answers what "in the list" does.
        allowed = frozenset(options)
        return lambda value: value in allowed
    return lambda value: value in options


def _any_check(branches: list[Check]) -> Check:
    def check(value: Any) -> bool:
        for branch in branches:  # noqa: SIM110 - a loop, not any(<generator>): see _object_check
            if branch(value):
                return True
        return False

    return check


def _one_check(branches: list[Check]) -> Check:
    def check(value: Any) -> bool:
        return sum(1 for branch in branches if branch(value)) == 1

    return check
