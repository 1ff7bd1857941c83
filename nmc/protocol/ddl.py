"""Agent metadata (DDL): actions, typed inputs and their validation. Pure.

The client validates inputs before sending (nothing goes on the wire when
they are wrong) and the node validates again (it cannot trust clients), so
both use these same functions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from nmc.protocol.status import Status

__all__ = ["ActionSpec", "AgentSpec", "Aggregate", "Input", "InputError", "Output", "coerce_cli_value",
           "validate_inputs"]

INPUT_TYPES = ("string", "integer", "float", "number", "boolean", "list", "any")


class InputError(ValueError):
    """Inputs that do not fit an action's DDL; `status` is MISSING_DATA or INVALID_DATA."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Input:
    """One declared input of an action."""

    name: str
    type: str = "string"
    description: str = ""
    optional: bool = True
    default: Any = None
    validation: str | None = None  # a regular expression the string form must match
    maxlength: int = 0  # 0: unlimited

    def __post_init__(self) -> None:
        if self.type not in INPUT_TYPES:
            raise ValueError(f"input {self.name!r}: unknown type {self.type!r}")
        if self.validation is not None:
            re.compile(self.validation)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for `nmc plugin ddl` and agent_inventory."""
        return {"name": self.name, "type": self.type, "description": self.description,
                "optional": self.optional, "default": self.default, "validation": self.validation,
                "maxlength": self.maxlength}


@dataclass(frozen=True)
class Output:
    """One declared output of an action: how to show it and what it is when missing."""

    name: str
    description: str = ""
    display_as: str = ""  # label in text output; defaults to the name
    default: Any = None
    type: str = "any"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "description": self.description, "display_as": self.display_as or self.name,
                "default": self.default, "type": self.type}


@dataclass(frozen=True)
class Aggregate:
    """A summary computed over every node's value of one output (MCollective's aggregate plugins)."""

    function: str  # summary | average | sum | boolean_summary
    output: str
    format: str = ""  # optional printf/str.format of the result

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"function": self.function, "output": self.output, "format": self.format}


@dataclass(frozen=True)
class ActionSpec:
    """One action of an agent: its inputs, outputs, display policy, summaries and time limit."""

    name: str
    description: str = ""
    inputs: tuple[Input, ...] = ()
    display: str = "always"  # ok | failed | always
    timeout: float | None = None
    outputs: tuple[Output, ...] = ()
    aggregates: tuple[Aggregate, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the action's DDL."""
        return {"name": self.name, "description": self.description, "display": self.display,
                "timeout": self.timeout, "inputs": [i.to_dict() for i in self.inputs],
                "outputs": [o.to_dict() for o in self.outputs],
                "aggregates": [a.to_dict() for a in self.aggregates]}


@dataclass(frozen=True)
class AgentSpec:
    """An agent's DDL: metadata plus its actions."""

    name: str
    description: str = ""
    version: str = "1.0.0"
    actions: Mapping[str, ActionSpec] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the whole DDL."""
        return {"agent": self.name, "description": self.description, "version": self.version,
                "actions": {n: a.to_dict() for n, a in sorted(self.actions.items())}}


def _check_type(inp: Input, value: Any) -> Any:
    t = inp.type
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "list": isinstance(value, list),
        "any": True,
    }[t]
    if not ok:
        raise InputError(Status.INVALID_DATA, f"input '{inp.name}' must be of type {t}, got {type(value).__name__}")
    if t in ("float", "number") and isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN/Infinity: such a value could not even be put in a request.
        raise InputError(Status.INVALID_DATA, f"input '{inp.name}' must be a finite number, got {value!r}")
    if isinstance(value, str):
        if inp.maxlength and len(value) > inp.maxlength:
            raise InputError(Status.INVALID_DATA, f"input '{inp.name}' is longer than {inp.maxlength} characters")
        if inp.validation is not None and not re.search(inp.validation, value):
            raise InputError(Status.INVALID_DATA, f"input '{inp.name}' does not match /{inp.validation}/")
    return value


def validate_inputs(spec: ActionSpec, data: Mapping[str, Any]) -> dict[str, Any]:
    """Check `data` against the action's inputs; returns it with defaults filled in."""
    known = {i.name: i for i in spec.inputs}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InputError(Status.INVALID_DATA, f"unknown input(s) for {spec.name}: {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for inp in spec.inputs:
        if inp.name in data:
            out[inp.name] = _check_type(inp, data[inp.name])
        elif not inp.optional and inp.default is None:
            raise InputError(Status.MISSING_DATA, f"missing required input '{inp.name}'")
        elif inp.default is not None:
            out[inp.name] = inp.default
    return out


_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


def coerce_cli_value(inp: Input | None, text: str) -> Any:
    """Turn a `key=value` command-line string into the input's declared type."""
    if inp is None or inp.type in ("string", "any"):
        return text
    try:
        if inp.type == "integer":
            return int(text)
        if inp.type in ("float", "number"):
            number = float(text)
            if not math.isfinite(number):
                raise ValueError(text)  # nan, inf, 1e400: not sendable as JSON
            return int(number) if inp.type == "number" and number.is_integer() and "." not in text else number
    except ValueError as exc:
        raise InputError(Status.INVALID_DATA, f"input '{inp.name}' must be of type {inp.type}, got {text!r}") from exc
    if inp.type == "boolean":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise InputError(Status.INVALID_DATA, f"input '{inp.name}' must be true or false, got {text!r}")
    if inp.type == "list":
        return [part.strip() for part in text.split(",") if part.strip()]
    return text
