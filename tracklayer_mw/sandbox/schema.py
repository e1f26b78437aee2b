"""A small validator for the OpenAPI 3.0 subset used by Pinterest's Conversions API schema.

jsonschema is not a runtime dependency, so the sandbox checks request bodies with this instead. It
covers exactly what ``conversions-v5.openapi.json`` uses: ``type``, ``properties``,
``additionalProperties``, ``required``, ``items``, ``minItems``/``maxItems``, ``anyOf`` (plus
``allOf``/``oneOf``, which Pinterest's 5.28 schema moves to), ``$ref`` into the same document,
``nullable``, ``enum``, ``minLength``/``maxLength``, ``pattern``, ``minimum``/``maximum`` and
``format: int64``.

Two deliberate readings, shared with the jsonschema helper in ``tests/pinterest_schema.py`` so both
always agree:

- ``$ref`` with sibling keywords applies both (JSON Schema 2020-12). ``ConversionEventsUserData``
  relies on this: each ``anyOf`` branch is ``$ref`` + ``required``, and under OpenAPI 3.0's literal
  rule (siblings ignored) the "at least one of em / hashed_maids / IP+UA" rule would vanish.
- ``integer`` means a JSON integer written without a fraction: ``1.0`` is rejected. JSON Schema
  would accept it, but the spec says int64 Unix *seconds* and a float there is a client bug.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_FILE = "conversions-v5.openapi.json"

#: The request body schema of ``POST /ad_accounts/{ad_account_id}/events``.
REQUEST_SCHEMA = "ConversionEvents"

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

JSONSchema = Mapping[str, Any]


@cache
def load_document() -> dict[str, Any]:
    """The packaged OpenAPI extract, parsed once (read through importlib.resources so wheels work)."""
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def component(name: str) -> dict[str, Any]:
    """``#/components/schemas/<name>`` of the packaged document."""
    schema: dict[str, Any] = load_document()["components"]["schemas"][name]
    return schema


def validate_request_body(body: Any) -> list[str]:
    """Errors of an events request body (parsed JSON) against ``ConversionEvents``; empty when valid."""
    return validate(body, component(REQUEST_SCHEMA), load_document())


def validate(instance: Any, schema: JSONSchema, document: Mapping[str, Any]) -> list[str]:
    """All errors of ``instance`` against ``schema``; ``$ref``s resolve inside ``document``.

    Each error reads ``"<json path>: <what is wrong>"``, e.g. ``"data[0].user_data: ..."``; the path
    of the body itself is ``body``.
    """
    errors: list[str] = []
    _Validator(document).check(instance, schema, (), errors)
    return errors


def format_path(parts: tuple[str | int, ...]) -> str:
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


def _is_type(value: Any, expected: str) -> bool:
    # bool is a subclass of int in Python, but never a JSON number.
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return json_type(value) == expected


class _Validator:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document

    def resolve(self, ref: str) -> JSONSchema:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, got {ref!r}")
        node: Any = self._document
        for token in ref[2:].split("/"):
            node = node[token.replace("~1", "/").replace("~0", "~")]
        if not isinstance(node, Mapping):
            raise ValueError(f"$ref {ref!r} does not point at a schema")
        return node

    def check(self, value: Any, schema: JSONSchema, path: tuple[str | int, ...], errors: list[str]) -> None:
        where = format_path(path)
        if "$ref" in schema:
            self.check(value, self.resolve(schema["$ref"]), path, errors)
        if value is None and schema.get("nullable") is True:
            return  # OpenAPI 3.0: null is allowed and no other keyword applies to it
        expected = schema.get("type")
        if expected is not None and not _is_type(value, expected):
            errors.append(f"{where}: expected {expected}, got {json_type(value)}")
            return  # the remaining keywords would only repeat the same mistake
        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(json.dumps(v) for v in schema["enum"])
            errors.append(f"{where}: {json.dumps(value)} is not one of {allowed}")
        if isinstance(value, str):
            self._check_string(value, schema, where, errors)
        elif _is_type(value, "number"):
            self._check_number(value, schema, where, errors)
        elif isinstance(value, list):
            self._check_array(value, schema, path, errors)
        elif isinstance(value, dict):
            self._check_object(value, schema, path, errors)
        self._check_combinators(value, schema, path, errors)

    def _check_string(self, value: str, schema: JSONSchema, where: str, errors: list[str]) -> None:
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{where}: must be at least {schema['minLength']} characters long")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: must be at most {schema['maxLength']} characters long")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: does not match {schema['pattern']}")

    def _check_number(self, value: float, schema: JSONSchema, where: str, errors: list[str]) -> None:
        low = schema.get("minimum")
        high = schema.get("maximum")
        if schema.get("format") == "int64":
            low = _INT64_MIN if low is None else max(low, _INT64_MIN)
            high = _INT64_MAX if high is None else min(high, _INT64_MAX)
        if low is not None and value < low:
            errors.append(f"{where}: must be >= {low}")
        if high is not None and value > high:
            errors.append(f"{where}: must be <= {high}")

    def _check_array(
        self, value: list[Any], schema: JSONSchema, path: tuple[str | int, ...], errors: list[str]
    ) -> None:
        where = format_path(path)
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{where}: must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: must have at most {schema['maxItems']} items")
        items = schema.get("items")
        if items is not None:
            for index, item in enumerate(value):
                self.check(item, items, (*path, index), errors)

    def _check_object(
        self, value: dict[str, Any], schema: JSONSchema, path: tuple[str | int, ...], errors: list[str]
    ) -> None:
        where = format_path(path)
        properties: Mapping[str, Any] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                errors.append(f"{where}: {name!r} is required")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                self.check(item, properties[name], (*path, name), errors)
            elif extra is False:
                errors.append(f"{where}: unexpected property {name!r}")
            elif isinstance(extra, Mapping):
                self.check(item, extra, (*path, name), errors)

    def _check_combinators(
        self, value: Any, schema: JSONSchema, path: tuple[str | int, ...], errors: list[str]
    ) -> None:
        for branch in schema.get("allOf", ()):
            self.check(value, branch, path, errors)
        for keyword in ("anyOf", "oneOf"):
            if keyword not in schema:
                continue
            branches: list[JSONSchema] = schema[keyword]
            outcomes = []
            for branch in branches:
                branch_errors: list[str] = []
                self.check(value, branch, path, branch_errors)
                outcomes.append(branch_errors)
            passed = sum(1 for outcome in outcomes if not outcome)
            if passed == 0:
                errors.append(self._no_branch_message(format_path(path), branches, outcomes))
            elif keyword == "oneOf" and passed > 1:
                errors.append(f"{format_path(path)}: matches {passed} of the oneOf alternatives, not one")

    @staticmethod
    def _no_branch_message(where: str, branches: list[JSONSchema], outcomes: list[list[str]]) -> str:
        # Name each alternative by what it requires (that is how the user_data rule reads best:
        # "em", "hashed_maids", "client_ip_address + client_user_agent"), else by its title.
        names = []
        for index, branch in enumerate(branches):
            required = branch.get("required")
            names.append(" + ".join(required) if required else branch.get("title", f"alternative {index}"))
        # dict.fromkeys: the same nested mistake usually fails every branch; say it once.
        first_problems = "; ".join(
            dict.fromkeys(outcome[0].removeprefix(f"{where}: ") for outcome in outcomes if outcome)
        )
        return f"{where}: must match one of: {' | '.join(names)} ({first_problems})"
