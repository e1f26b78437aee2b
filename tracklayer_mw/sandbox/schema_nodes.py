"""The schema compiled once into a tree of nodes, so validating a body costs little more than walking it.

Each ``Node`` is one schema object with its ``$ref`` resolved, its keywords read once and its
children compiled. It answers two questions:

- ``node.ok(value)``: valid or not, as fast as possible: a closure assembled at compile time from
  ``schema_checks.py``, with no paths, no messages and no keyword lookups, stopping at the first
  problem.
- ``node.errors(value)``: every violation, worded and ordered as a keyword-by-keyword walk finds
  them (``$ref``, ``nullable``, ``type``, ``enum``, the keywords of the value's kind, then
  ``allOf``/``anyOf``/``oneOf``). Only asked when ``ok`` said no, and it only descends into the
  children whose ``ok`` says no, so even an invalid body is cheap.

Error paths are built on the way back up (each container prepends its key to its children's
violations) and formatted only at the end, so a valid body never formats a path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import schema_checks as checks
from .schema_checks import Check, json_type

__all__ = ["Compiler", "Node", "Path", "Violation", "build_check", "format_path", "json_type"]

Path = tuple[str | int, ...]

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


@dataclass(eq=False)
class Node:
    """One compiled schema object: its keywords, pre-digested, and its two checks."""

    ref: Node | None = None
    nullable: bool = False
    expected: str | None = None
    type_ok: Check = checks.always
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
    ok: Check = checks.always  # replaced by the compiled check once every field is set
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
        elif checks.is_number(value):
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
            node.type_ok = checks.type_test(node.expected)
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
        if "anyOf" in schema:
            node.any_of = tuple(self.compile(branch) for branch in schema["anyOf"])
            node.branch_names["anyOf"] = _branch_names(schema["anyOf"])
        if "oneOf" in schema:
            node.one_of = tuple(self.compile(branch) for branch in schema["oneOf"])
            node.branch_names["oneOf"] = _branch_names(schema["oneOf"])
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


# -- the fast check ------------------------------------------------------------------------------


def build_check(node: Node) -> Check:
    """``node.ok``: one closure doing what ``node.errors`` does, minus the words.

    A yes/no answer does not depend on the order of the keywords, so the cheap tests go first
    (a branch's ``required`` before its ``$ref``'d property walk, say).
    """
    parts: list[Check] = []
    kind = node.expected
    if kind in ("string", "integer", "number", "array", "object"):
        parts.append(_kind_check(node, kind))  # includes the type test
    else:
        if kind is not None:
            parts.append(node.type_ok)
        # No (or a non-container) type: each kind's keywords apply to values of that kind only.
        for test, facet_kind in (
            (checks.is_string, "string"),
            (checks.is_number, "number"),
            (checks.is_array, "array"),
            (checks.is_object, "object"),
        ):
            if _has_keywords(node, facet_kind):
                parts.append(checks.unless(test, _kind_check(node, facet_kind)))
    if node.enum is not None:
        parts.append(checks.enum_check(node.enum, of_strings=kind == "string"))
    parts.extend(_late(branch) for branch in node.all_of)
    if node.any_of is not None:
        parts.append(checks.any_of([_late(branch) for branch in node.any_of]))
    if node.one_of is not None:
        parts.append(checks.one_of([_late(branch) for branch in node.one_of]))
    body = checks.all_of(parts)
    ref = None if node.ref is None else _late(node.ref)
    if node.nullable:
        if ref is not None:
            return lambda value: ref(value) if value is None else body(value) and ref(value)
        return checks.or_null(body)
    if ref is not None:
        return ref if body is checks.always else lambda value: body(value) and ref(value)
    return body


def _late(node: Node) -> Check:
    """``node.ok``, or a call through the node while it is still being compiled (recursive ``$ref``)."""
    # The lambda is the point: it reads node.ok at call time, after compiling replaced it.
    return node.ok if node.finished else lambda value: node.ok(value)  # noqa: PLW0108


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
        return checks.string_check(node.min_length, node.max_length, node.pattern)
    if kind in ("integer", "number"):
        return checks.number_check(node.low, node.high, integer=kind == "integer")
    if kind == "array":
        return checks.array_check(
            None if node.items is None else _late(node.items), node.min_items, node.max_items
        )
    extra = node.extra
    other = checks.never if extra is False else _late(extra) if isinstance(extra, Node) else checks.always
    properties = {name: _late(child) for name, child in node.properties.items()}
    return checks.object_check(frozenset(node.required), properties, other)
