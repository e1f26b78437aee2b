"""The compiled schema validator says exactly what the keyword-by-keyword reading says.

``sandbox/schema.py`` compiles the schema into fast checks (``schema_nodes.py``). Its contract is
the straightforward interpreter it replaced, kept here as ``reference_errors``: for any instance,
the compiled validator must return the same error strings in the same order (and so also the same
valid/invalid verdict). ``tests/test_sandbox.py`` separately checks both against jsonschema.

The per-event checks (``sandbox/checks.py``) got shortcuts for the usual event too; the last test
compares them with their earlier reading the same way.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_sandbox import INVALID_BODIES, VALID_BODIES, body_of, make_event, sha
from tracklayer_mw.sandbox import checks
from tracklayer_mw.sandbox import schema as mini

# -- the reference: the interpreter the compiled validator replaced, unchanged in behaviour --------

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _is_type(value: Any, expected: str) -> bool:
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return mini.json_type(value) == expected


class _Reference:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document

    def resolve(self, ref: str) -> Mapping[str, Any]:
        node: Any = self._document
        for token in ref[2:].split("/"):
            node = node[token.replace("~1", "/").replace("~0", "~")]
        return node  # type: ignore[no-any-return]

    def check(self, value: Any, schema: Mapping[str, Any], path: tuple[Any, ...], errors: list[str]) -> None:
        where = mini.format_path(path)
        if "$ref" in schema:
            self.check(value, self.resolve(schema["$ref"]), path, errors)
        if value is None and schema.get("nullable") is True:
            return
        expected = schema.get("type")
        if expected is not None and not _is_type(value, expected):
            errors.append(f"{where}: expected {expected}, got {mini.json_type(value)}")
            return
        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(json.dumps(v) for v in schema["enum"])
            errors.append(f"{where}: {json.dumps(value)} is not one of {allowed}")
        if isinstance(value, str):
            self._string(value, schema, where, errors)
        elif _is_type(value, "number"):
            self._number(value, schema, where, errors)
        elif isinstance(value, list):
            self._array(value, schema, path, errors)
        elif isinstance(value, dict):
            self._object(value, schema, path, errors)
        self._combinators(value, schema, path, errors)

    def _string(self, value: str, schema: Mapping[str, Any], where: str, errors: list[str]) -> None:
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{where}: must be at least {schema['minLength']} characters long")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: must be at most {schema['maxLength']} characters long")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: does not match {schema['pattern']}")

    def _number(self, value: float, schema: Mapping[str, Any], where: str, errors: list[str]) -> None:
        low = schema.get("minimum")
        high = schema.get("maximum")
        if schema.get("format") == "int64":
            low = _INT64_MIN if low is None else max(low, _INT64_MIN)
            high = _INT64_MAX if high is None else min(high, _INT64_MAX)
        if low is not None and value < low:
            errors.append(f"{where}: must be >= {low}")
        if high is not None and value > high:
            errors.append(f"{where}: must be <= {high}")

    def _array(
        self, value: list[Any], schema: Mapping[str, Any], path: tuple[Any, ...], errors: list[str]
    ) -> None:
        where = mini.format_path(path)
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{where}: must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: must have at most {schema['maxItems']} items")
        if schema.get("items") is not None:
            for index, item in enumerate(value):
                self.check(item, schema["items"], (*path, index), errors)

    def _object(
        self, value: dict[str, Any], schema: Mapping[str, Any], path: tuple[Any, ...], errors: list[str]
    ) -> None:
        where = mini.format_path(path)
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

    def _combinators(
        self, value: Any, schema: Mapping[str, Any], path: tuple[Any, ...], errors: list[str]
    ) -> None:
        for branch in schema.get("allOf", ()):
            self.check(value, branch, path, errors)
        for keyword in ("anyOf", "oneOf"):
            if keyword not in schema:
                continue
            branches: list[Mapping[str, Any]] = schema[keyword]
            outcomes = []
            for branch in branches:
                branch_errors: list[str] = []
                self.check(value, branch, path, branch_errors)
                outcomes.append(branch_errors)
            passed = sum(1 for outcome in outcomes if not outcome)
            where = mini.format_path(path)
            if passed == 0:
                names = []
                for index, branch in enumerate(branches):
                    required = branch.get("required")
                    names.append(
                        " + ".join(required) if required else branch.get("title", f"alternative {index}")
                    )
                problems = "; ".join(
                    dict.fromkeys(outcome[0].removeprefix(f"{where}: ") for outcome in outcomes if outcome)
                )
                errors.append(f"{where}: must match one of: {' | '.join(names)} ({problems})")
            elif keyword == "oneOf" and passed > 1:
                errors.append(f"{where}: matches {passed} of the oneOf alternatives, not one")


def reference_errors(instance: Any, schema: Mapping[str, Any], document: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    _Reference(document).check(instance, schema, (), errors)
    return errors


def reference_request_errors(body: Any) -> list[str]:
    return reference_errors(body, mini.component(mini.REQUEST_SCHEMA), mini.load_document())


def assert_same_as_reference(validator: mini.Validator, instance: Any, expected: list[str]) -> None:
    """Same errors, and the fast yes/no check alone agrees (the error walk would hide a strict one)."""
    assert validator(instance) == expected
    assert validator.is_valid(instance) == (not expected)


def assert_request_like_reference(body: Any) -> None:
    assert_same_as_reference(mini.request_validator(), body, reference_request_errors(body))
    assert mini.validate_request_body(body) == reference_request_errors(body)


# -- the packaged schema ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [c[1] for c in INVALID_BODIES] + [c[1] for c in VALID_BODIES],
    ids=[f"invalid-{c[0]}" for c in INVALID_BODIES] + [f"valid-{c[0]}" for c in VALID_BODIES],
)
def test_same_errors_as_the_reference_on_the_corpus(build: Any) -> None:
    assert_request_like_reference(build())


def test_many_errors_in_many_events_keep_their_order_and_paths() -> None:
    events = [make_event(event_id=str(i)) for i in range(50)]
    events[3]["event_time"] = "late"
    events[7]["user_data"] = {"ph": ["x"], "em": "not-a-list"}
    events[7]["custom_data"]["contents"] = [{"id": 1, "quantity": 2.5}, {"weird key": True}]
    events[20]["app_info"] = {"window_width": -1, "app_id": "x" * 300, "extra": None}
    events[20]["device_info"] = {"form_factor": "phone", "languages": ["en", 5], "os_family": None}
    events[49].pop("event_id")
    events[49]["surprise"] = 1
    body = body_of(*events)
    assert_request_like_reference(body)
    errors = mini.validate_request_body(body)
    assert len(errors) == 13
    assert "data[7].custom_data.contents[1]: unexpected property 'weird key'" in errors


def test_the_anyof_message_quotes_nested_errors_with_their_full_paths() -> None:
    body = body_of(make_event(user_data={"em": [sha("a"), 7], "click_id": 1}))
    assert_request_like_reference(body)
    assert mini.validate_request_body(body) == [
        "data[0].user_data: must match one of: em | hashed_maids | client_ip_address + client_user_agent "
        "(data[0].user_data.em[1]: expected string, got integer)"  # every branch's first error, once
    ]


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["", "x" * 201, "desktop", "wifi", sha("a"), "1.5"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
RICH_EVENT = make_event(
    action_source="app_ios",
    app_info={"app_id": "429047995", "window_width": 0, "install_time": 0},
    device_info={"form_factor": "cellphone", "languages": ["en"], "battery_level": 100},
    custom_data={
        "currency": "USD",
        "value": "1",
        "content_ids": ["a"],
        "contents": [{"id": "sku", "quantity": 1, "item_price": "1"}],
    },
    opt_out=False,
)
# Every object and array of RICH_EVENT's body a mutation can hit, and keys found in the schema.
PLACES = [
    (),
    ("data",),
    ("data", 0),
    ("data", 0, "user_data"),
    ("data", 0, "user_data", "em"),
    ("data", 0, "custom_data"),
    ("data", 0, "custom_data", "contents"),
    ("data", 0, "custom_data", "contents", 0),
    ("data", 0, "custom_data", "content_ids"),
    ("data", 0, "app_info"),
    ("data", 0, "device_info"),
    ("data", 0, "device_info", "languages"),
]
KEYS = st.sampled_from(
    sorted(
        {
            "data",
            "extra",
            *RICH_EVENT,
            *RICH_EVENT["user_data"],
            "hashed_maids",
            *RICH_EVENT["custom_data"],
            "num_items",
            "quantity",
            "item_price",
            "id",
            *RICH_EVENT["app_info"],
            "window_height",
            "app_name",
            *RICH_EVENT["device_info"],
            "os_family",
            "network_type",
            "storage_size",
        }
    )
)
MUTATION = st.tuples(
    st.sampled_from(PLACES), KEYS, JSON_VALUES, st.sampled_from(["set", "delete", "replace"])
)


def _mutate(body: dict[str, Any], place: tuple[Any, ...], key: str, value: Any, how: str) -> None:
    node: Any = body
    for step in place:
        node = node[step]
    if how == "replace" and place:
        parent: Any = body
        for step in place[:-1]:
            parent = parent[step]
        parent[place[-1]] = value
    elif isinstance(node, dict):
        if how == "delete":
            node.pop(key, None)
        else:
            node[key] = value
    elif isinstance(node, list) and node:
        node[0] = value


@settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4), events=st.integers(min_value=1, max_value=3))
def test_same_errors_as_the_reference_on_mutated_bodies(mutations: list[Any], events: int) -> None:
    body: dict[str, Any] = {"data": [copy.deepcopy(RICH_EVENT) for _ in range(events)]}
    for place, key, value, how in mutations:
        # An earlier mutation may have removed or replaced the place: then this one is skipped.
        with contextlib.suppress(KeyError, IndexError, TypeError):
            _mutate(body, place, key, value, how)
    assert_request_like_reference(body)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(instance=JSON_VALUES, name=st.sampled_from(["ConversionApiResponse", "DetailedError", "Error"]))
def test_same_errors_as_the_reference_on_the_other_components(instance: Any, name: str) -> None:
    document = mini.load_document()
    schema = mini.component(name)
    expected = reference_errors(instance, schema, document)
    assert_same_as_reference(mini.compile_schema(schema, document), instance, expected)


# -- keywords the packaged schema does not use (yet): pattern, oneOf, allOf, recursion... -------

SYNTHETIC: dict[str, Any] = {
    "components": {
        "schemas": {
            "Tree": {  # recursive $ref
                "type": "object",
                "nullable": True,
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z]+$"},
                    "child": {"$ref": "#/components/schemas/Tree"},
                },
                "additionalProperties": {"type": "integer", "minimum": 0},
            },
            "Untyped": {  # keywords of every kind, no type: each applies to its own kind only
                "minLength": 2,
                "maxLength": 4,
                "minimum": 1.5,
                "maximum": 10,
                "minItems": 1,
                "items": {"enum": [1, "a", None, True]},
                "required": ["k"],
            },
            "Choice": {
                "oneOf": [
                    {"type": "string", "title": "Text"},
                    {"type": "integer", "format": "int64", "maximum": 5},
                    {"type": "number", "minimum": 0},
                ],
                "allOf": [{"not_a_keyword": 1}, {"nullable": True, "enum": ["x", 2, 3.5, None]}],
            },
            "Nullable ref": {"$ref": "#/components/schemas/Choice", "nullable": True, "type": "string"},
            "Weird type": {"type": "mystery", "anyOf": [{"required": ["a"]}, {"maxItems": 0}]},
        }
    }
}


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(instance=JSON_VALUES, name=st.sampled_from(sorted(SYNTHETIC["components"]["schemas"])))
def test_same_errors_as_the_reference_on_synthetic_schemas(instance: Any, name: str) -> None:
    schema = SYNTHETIC["components"]["schemas"][name]
    expected = reference_errors(instance, schema, SYNTHETIC)
    assert_same_as_reference(mini.compile_schema(schema, SYNTHETIC), instance, expected)
    assert mini.validate(instance, schema, SYNTHETIC) == expected


@pytest.mark.parametrize(
    ("name", "instance"),
    [
        ("Tree", {"name": "a", "child": {"name": "B", "child": {"child": None, "n": -1}}}),
        ("Tree", {"name": "ab", "child": {"child": {"x": 1}}}),
        ("Untyped", "abcdef"),
        ("Untyped", [2, "a"]),
        ("Untyped", {"j": 1}),
        ("Untyped", 1.0),
        ("Choice", 3),
        ("Choice", 3.5),
        ("Choice", "x"),
        ("Choice", None),
        ("Nullable ref", None),
        ("Nullable ref", 2),
        ("Weird type", {"a": 1}),
    ],
)
def test_synthetic_examples(name: str, instance: Any) -> None:
    schema = SYNTHETIC["components"]["schemas"][name]
    expected = reference_errors(instance, schema, SYNTHETIC)
    assert_same_as_reference(mini.compile_schema(schema, SYNTHETIC), instance, expected)
    assert mini.validate(instance, schema, SYNTHETIC) == expected


def test_a_compiled_validator_is_reusable() -> None:
    validator = mini.compile_schema(SYNTHETIC["components"]["schemas"]["Tree"], SYNTHETIC)
    assert validator({"name": "ok", "child": {"name": "fine"}}) == []
    assert validator({"name": "Bad"}) == ["name: does not match ^[a-z]+$"]
    assert validator([]) == ["body: expected object, got array"]


def test_only_local_refs_compile() -> None:
    with pytest.raises(ValueError, match="only local"):
        mini.compile_schema({"$ref": "https://example.com/schema"}, {})


# -- the per-event checks: the usual event takes a shortcut that must not change any message ---------

_REF_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")  # fullmatch, like checks.py: no trailing "\n"
_REF_DECIMAL = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_REF_CURRENCY = re.compile(r"^[A-Z]{3}$")


def reference_user_and_custom_messages(event: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``checks._check_user_data`` then ``_check_custom_data`` as they read before the shortcuts."""
    errors: list[str] = []
    warnings: list[str] = []
    user_data = event.get("user_data", {})
    for key in checks.HASHED_FIELDS:
        values = user_data.get(key)
        if values is None:
            continue
        if not values:
            warnings.append(f"user_data.{key} is an empty list; it carries no match signal.")
            continue
        if not all(_REF_SHA256_HEX.fullmatch(value) for value in values):
            errors.append(
                f"Invalid user_data.{key} parameter. Values must be SHA-256 hashed "
                "(64 hexadecimal characters)."
            )
        elif any(value != value.lower() for value in values):
            warnings.append(f"user_data.{key} holds upper-case hex; send lower-case SHA-256 digests.")
    custom = event.get("custom_data")
    if not custom:
        return errors, warnings

    def decimal(value: str | None, where: str) -> None:
        if value is not None and not _REF_DECIMAL.match(value):
            errors.append(f"Invalid {where} parameter. {value!r} is not a decimal number.")

    for key in ("value", "predicted_ltv"):
        decimal(custom.get(key), f"custom_data.{key}")
    for index, item in enumerate(custom.get("contents") or ()):
        decimal(item.get("item_price"), f"custom_data.contents[{index}].item_price")
    currency = custom.get("currency")
    if currency is not None and not _REF_CURRENCY.match(currency):
        warnings.append(f"custom_data.currency {currency!r} is not an ISO-4217 code such as 'USD'.")
    if (
        event["event_name"] in ("checkout", "add_to_cart")
        and custom.get("value") is not None
        and not currency
    ):
        warnings.append(
            "custom_data.currency is missing; the value is read in the ad account's default currency."
        )
    return errors, warnings


_DIGEST = sha("ann@example.com")
HASHED_VALUES = st.sampled_from(
    [
        _DIGEST,
        _DIGEST.upper(),
        _DIGEST[:10].upper() + _DIGEST[10:],
        _DIGEST + "\n",
        _DIGEST[:63],
        _DIGEST[:63] + "g",
        "",
        "x",
    ]
)
DECIMALS = st.sampled_from(["49.99", "1", ".5", "1e3", "-2.", "1,5", "NaN", " 1", "", "0x1F"]) | st.none()
CHECKED_EVENT = st.fixed_dictionaries(
    {
        "event_name": st.sampled_from(["checkout", "add_to_cart", "lead"]),
        "user_data": st.dictionaries(
            st.sampled_from([*checks.HASHED_FIELDS, "client_ip_address"]), st.lists(HASHED_VALUES, max_size=3)
        ),
        "custom_data": st.fixed_dictionaries(
            {},
            optional={
                "value": DECIMALS,
                "predicted_ltv": DECIMALS,
                "currency": st.sampled_from(["USD", "usd", "US", ""]) | st.none(),
                "contents": st.lists(
                    st.fixed_dictionaries({}, optional={"item_price": DECIMALS}), max_size=3
                ),
            },
        ),
    }
)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(parts=CHECKED_EVENT)
def test_per_event_checks_say_what_they_said_before(parts: dict[str, Any]) -> None:
    # A recent web event with a URL and known names: only user_data and custom_data have a say.
    event = {**make_event(event_time=1_764_322_000), **parts}
    verdict = checks.check_event(event, now=1_764_322_000)
    assert (verdict.errors, verdict.warnings) == reference_user_and_custom_messages(event)
