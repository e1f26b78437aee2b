"""Validate bodies against Pinterest's official schema extract with jsonschema (tests only).

Every test that builds a Conversions API body checks it here::

    from tests.pinterest_schema import validate_request_body
    validate_request_body(body)        # AssertionError listing every violation

The OpenAPI 3.0 document is turned into JSON Schema 2020-12 once, at import:

- ``nullable: true`` becomes a ``"null"`` member of ``type`` (and of ``enum`` when there is one);
- ``format: int64`` becomes the int64 range as ``minimum``/``maximum`` (jsonschema treats format as
  an annotation);
- ``$ref`` + sibling ``required`` (``ConversionEventsUserData``'s ``anyOf``) already means "both" in
  2020-12;
- ``integer`` rejects floats such as ``1.0``, on purpose: the spec says int64 Unix seconds and a
  float there is a bug in our code. The sandbox's own validator (``tracklayer_mw.sandbox.schema``)
  reads the schema the same way; ``tests/test_sandbox.py`` checks that the two agree.

``$ref``s resolve against the whole document through a ``referencing`` registry.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.protocols import Validator
from jsonschema.validators import extend
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_PACKAGE = "tracklayer_mw.sandbox"
SCHEMA_FILE = "conversions-v5.openapi.json"
DOCUMENT_URI = "urn:pinterest:conversions-v5.openapi.json"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def load_document() -> dict[str, Any]:
    """The OpenAPI extract shipped inside the package (the file the sandbox uses)."""
    text = resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def to_json_schema(node: Any) -> Any:
    """A copy of an OpenAPI 3.0 schema (or any part of the document) in JSON Schema 2020-12 terms."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: to_json_schema(value) for key, value in node.items()}
    if converted.pop("nullable", False) is True:
        if "type" in converted:
            types = converted["type"] if isinstance(converted["type"], list) else [converted["type"]]
            converted["type"] = [*types, "null"]
        if "enum" in converted and None not in converted["enum"]:
            converted["enum"] = [*converted["enum"], None]
    if converted.get("format") == "int64":
        converted["minimum"] = max(converted.get("minimum", INT64_MIN), INT64_MIN)
        converted["maximum"] = min(converted.get("maximum", INT64_MAX), INT64_MAX)
    return converted


def _strict_integer(checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


# Draft 2020-12 with one change: "integer" means a JSON number written without a fraction.
_Draft202012Strict = extend(  # type: ignore[no-untyped-call]  # types-jsonschema leaves extend untyped
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)


@cache
def _registry() -> Registry[Any]:
    document = load_document()
    document = {**document, "components": to_json_schema(copy.deepcopy(document["components"]))}
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, resource)
    return registry


@cache
def validator_for(component: str) -> Validator:
    """A validator (built once per component) for ``#/components/schemas/<component>``."""
    schema = {"$ref": f"{DOCUMENT_URI}#/components/schemas/{component}"}
    validator: Validator = _Draft202012Strict(schema, registry=_registry())
    return validator


def errors_of(instance: Any, component: str = "ConversionEvents") -> list[str]:
    """Every violation as ``"<json path>: <message>"``; empty when valid."""
    found = sorted(validator_for(component).iter_errors(instance), key=lambda error: list(error.path))
    return [f"{error.json_path}: {error.message}" for error in found]


def assert_valid(instance: Any, component: str) -> None:
    errors = errors_of(instance, component)
    if errors:
        raise AssertionError(f"not a valid {component}:\n  " + "\n  ".join(errors))


def validate_request_body(body: dict[str, Any]) -> None:
    """Raise ``AssertionError`` listing every violation when ``body`` is not a valid ``ConversionEvents``."""
    assert_valid(body, "ConversionEvents")


def validate_response_body(status: int, body: Any) -> None:
    """Raise ``AssertionError`` when an events answer does not match the spec's schema for ``status``."""
    if status == 200:
        assert_valid(body, "ConversionApiResponse")
    elif status == 422:
        assert_valid(body, "DetailedError")
        # The spec types details as any object; Pinterest puts a ConversionApiResponse there.
        assert_valid(body["details"], "ConversionApiResponse")
    else:
        assert_valid(body, "Error")
