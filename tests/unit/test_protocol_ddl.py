"""Agent DDL: input validation, CLI coercion and the JSON shape of a DDL."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nmc.protocol.ddl import (ActionSpec, AgentSpec, Aggregate, Input, InputError, Output, coerce_cli_value,
                              validate_inputs)
from nmc.protocol.envelope import Request
from nmc.protocol.status import Status


def _spec(*inputs: Input) -> ActionSpec:
    return ActionSpec("act", inputs=inputs)


def _reject(spec: ActionSpec, data: dict[str, Any]) -> InputError:
    with pytest.raises(InputError) as info:
        validate_inputs(spec, data)
    return info.value


def test_missing_required_input_is_missing_data() -> None:
    err = _reject(_spec(Input("fact", "string", optional=False)), {})
    assert err.status is Status.MISSING_DATA
    assert "fact" in err.reason


def test_required_input_with_default_takes_the_default() -> None:
    spec = _spec(Input("count", "integer", optional=False, default=3))
    assert validate_inputs(spec, {}) == {"count": 3}


def test_defaults_filled_and_optional_inputs_without_default_left_out() -> None:
    spec = _spec(Input("a", "string", default="x"), Input("b", "boolean", default=False), Input("c", "integer"))
    assert validate_inputs(spec, {}) == {"a": "x", "b": False}
    assert validate_inputs(spec, {"a": "given", "c": 2}) == {"a": "given", "b": False, "c": 2}


def test_validate_does_not_change_the_callers_dict() -> None:
    data = {"c": 1}
    validate_inputs(_spec(Input("a", default="x"), Input("c", "integer")), data)
    assert data == {"c": 1}


def test_unknown_input_is_invalid_data_and_named() -> None:
    err = _reject(_spec(Input("a")), {"a": "x", "zzz": 1, "yyy": 2})
    assert err.status is Status.INVALID_DATA
    assert "yyy" in err.reason and "zzz" in err.reason


@pytest.mark.parametrize(
    ("type_", "good", "bad"),
    [
        ("string", ["", "x", "ü"], [1, 1.5, True, None, ["x"], {"a": 1}]),
        ("integer", [0, -7, 2**70], [True, False, 1.0, "1", None, [1]]),
        ("float", [1.5, 2, -0.0], [True, "1.5", None]),
        ("number", [1, 1.5], [False, "1", None]),
        ("boolean", [True, False], [0, 1, "true", None]),
        ("list", [[], [1, "a"]], ["a,b", {"a": 1}, None, 1]),
        ("any", [None, 1, "x", [1], {"a": 1}, True], []),
    ],
)
def test_types(type_: str, good: list[Any], bad: list[Any]) -> None:
    spec = _spec(Input("v", type_))
    for value in good:
        assert validate_inputs(spec, {"v": value}) == {"v": value}
    for value in bad:
        err = _reject(spec, {"v": value})
        assert err.status is Status.INVALID_DATA, value
        assert type_ in err.reason


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("type_", ["float", "number"])
def test_non_finite_numbers_are_invalid(type_: str, value: float) -> None:
    # They cannot be put in a request body (JSON has no NaN/Infinity).
    assert _reject(_spec(Input("v", type_)), {"v": value}).status is Status.INVALID_DATA


def test_validation_regex_is_searched() -> None:
    spec = _spec(Input("fact", validation=r"^[\w.:@-]+$"))
    assert validate_inputs(spec, {"fact": "os.family"}) == {"fact": "os.family"}
    err = _reject(spec, {"fact": "os family"})
    assert err.status is Status.INVALID_DATA and "fact" in err.reason
    # search, not fullmatch: an unanchored pattern may match anywhere
    assert validate_inputs(_spec(Input("x", validation="b")), {"x": "abc"}) == {"x": "abc"}


def test_maxlength() -> None:
    spec = _spec(Input("s", maxlength=3))
    assert validate_inputs(spec, {"s": "abc"}) == {"s": "abc"}
    err = _reject(spec, {"s": "abcd"})
    assert err.status is Status.INVALID_DATA and "3" in err.reason
    # 0 means unlimited
    assert validate_inputs(_spec(Input("s")), {"s": "x" * 10_000})["s"] == "x" * 10_000


def test_bad_input_declarations_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown type"):
        Input("x", "str")
    with pytest.raises(Exception):  # re.error
        Input("x", validation="(")


@pytest.mark.parametrize(
    ("type_", "text", "expected"),
    [
        ("string", "42", "42"),
        ("any", "true", "true"),
        ("integer", "42", 42),
        ("integer", "-3", -3),
        ("float", "1.5", 1.5),
        ("float", "2", 2.0),
        ("number", "7", 7),
        ("number", "7.0", 7.0),
        ("number", "2.5", 2.5),
        ("number", "1e3", 1000),
        ("boolean", "true", True),
        ("boolean", "Yes", True),
        ("boolean", "on", True),
        ("boolean", "1", True),
        ("boolean", "FALSE", False),
        ("boolean", "n", False),
        ("boolean", "off", False),
        ("boolean", "0", False),
        ("list", "a, b,,c ", ["a", "b", "c"]),
        ("list", "", []),
    ],
)
def test_coerce_cli_value(type_: str, text: str, expected: Any) -> None:
    value = coerce_cli_value(Input("v", type_), text)
    assert value == expected
    assert type(value) is type(expected)


def test_coerce_without_declared_input_keeps_text() -> None:
    assert coerce_cli_value(None, "12") == "12"


@pytest.mark.parametrize(
    ("type_", "text"),
    [
        ("integer", "1.5"),
        ("integer", "x"),
        ("integer", ""),
        ("float", "abc"),
        ("float", "nan"),
        ("float", "inf"),
        ("float", "1e400"),
        ("number", "-Infinity"),
        ("number", "NaN"),
        ("boolean", "maybe"),
        ("boolean", ""),
    ],
)
def test_coerce_cli_value_rejects(type_: str, text: str) -> None:
    with pytest.raises(InputError) as info:
        coerce_cli_value(Input("v", type_), text)
    assert info.value.status is Status.INVALID_DATA
    assert "'v'" in info.value.reason


@settings(max_examples=100)
@given(st.sampled_from(["float", "number"]), st.text(max_size=12))
@example("float", "nan")
@example("number", "1e999")
def test_coerced_numbers_can_be_sent(type_: str, text: str) -> None:
    """Whatever a number input accepts from the command line fits in a request body."""
    try:
        value = coerce_cli_value(Input("v", type_), text)
    except InputError:
        return
    req = Request(id="i", collective="c", agent="a", action="b", caller="cert=x", sender="s",
                  time=1.0, ttl=60, data={"v": value})
    assert Request.from_bytes(req.to_bytes()).data == {"v": value}


def test_agent_spec_to_dict_shape() -> None:
    spec = AgentSpec(
        "rpcutil", description="utility", version="2.0.0",
        actions={
            "ping": ActionSpec("ping", "pong"),
            "get_fact": ActionSpec("get_fact", "one fact", inputs=(
                Input("fact", "string", "which fact", optional=False, validation="^x$", maxlength=9),),
                display="ok", timeout=5.0),
        },
    )
    out = spec.to_dict()
    assert out == {
        "agent": "rpcutil", "description": "utility", "version": "2.0.0",
        "actions": {
            "get_fact": {"name": "get_fact", "description": "one fact", "display": "ok", "timeout": 5.0,
                         "inputs": [{"name": "fact", "type": "string", "description": "which fact",
                                     "optional": False, "default": None, "validation": "^x$", "maxlength": 9}],
                         "outputs": [], "aggregates": []},
            "ping": {"name": "ping", "description": "pong", "display": "always", "timeout": None, "inputs": [],
                     "outputs": [], "aggregates": []},
        },
    }
    assert list(out["actions"]) == ["get_fact", "ping"]  # sorted by name
    assert json.loads(json.dumps(out)) == out


def test_outputs_and_aggregates_in_to_dict() -> None:
    spec = ActionSpec("status", outputs=(Output("state", "service state", display_as="State", default="unknown"),
                                         Output("enabled", type="boolean")),
                      aggregates=(Aggregate("summary", "state"),
                                  Aggregate("boolean_summary", "enabled", labels=("on", "off"))))
    out = spec.to_dict()
    assert out["outputs"] == [
        {"name": "state", "description": "service state", "display_as": "State", "default": "unknown",
         "type": "any"},
        {"name": "enabled", "description": "", "display_as": "enabled", "default": None, "type": "boolean"}]
    assert out["aggregates"] == [
        {"function": "summary", "output": "state", "format": "", "labels": None},
        {"function": "boolean_summary", "output": "enabled", "format": "", "labels": {"true": "on", "false": "off"}}]
    assert json.loads(json.dumps(out)) == out
