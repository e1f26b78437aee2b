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

The schema is compiled once into a tree of checks (``schema_nodes.py``); a valid 1,000-event body
then costs a few milliseconds, so the sandbox is never what limits a delivery benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from .schema_nodes import Compiler, Node, format_path, json_type

__all__ = [
    "REQUEST_SCHEMA",
    "SCHEMA_FILE",
    "Validator",
    "compile_schema",
    "component",
    "format_path",
    "json_type",
    "load_document",
    "request_validator",
    "validate",
    "validate_request_body",
]

SCHEMA_FILE = "conversions-v5.openapi.json"

#: The request body schema of ``POST /ad_accounts/{ad_account_id}/events``.
REQUEST_SCHEMA = "ConversionEvents"

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


class Validator:
    """A schema compiled once; calling it returns the errors of one instance (empty when valid).

    Each error reads ``"<json path>: <what is wrong>"``, e.g. ``"data[0].user_data: ..."``; the path
    of the body itself is ``body``.
    """

    def __init__(self, schema: JSONSchema, document: Mapping[str, Any]) -> None:
        self._root: Node = Compiler(document).compile(schema)

    def __call__(self, instance: Any) -> list[str]:
        if self._root.ok(instance):
            return []
        return [violation.render() for violation in self._root.errors(instance)]

    def is_valid(self, instance: Any) -> bool:
        """The verdict alone, from the fast checks (what ``__call__`` tries first)."""
        return self._root.ok(instance)


def compile_schema(schema: JSONSchema, document: Mapping[str, Any]) -> Validator:
    """``schema`` (``$ref``s resolve inside ``document``) compiled for repeated use."""
    return Validator(schema, document)


@cache
def request_validator() -> Validator:
    """The compiled ``ConversionEvents`` schema (compiled on first use)."""
    return compile_schema(component(REQUEST_SCHEMA), load_document())


def validate_request_body(body: Any) -> list[str]:
    """Errors of an events request body (parsed JSON) against ``ConversionEvents``; empty when valid."""
    return request_validator()(body)


def validate(instance: Any, schema: JSONSchema, document: Mapping[str, Any]) -> list[str]:
    """All errors of ``instance`` against ``schema``; ``$ref``s resolve inside ``document``.

    Compiles ``schema`` on every call: to check many instances, keep a ``compile_schema`` result.
    """
    return compile_schema(schema, document)(instance)
