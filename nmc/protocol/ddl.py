"""Agent metadata (DDL): actions, typed inputs and their validation, outputs and summaries. Pure.

The client validates inputs before sending (nothing goes on the wire when
they are wrong) and the node validates again (it cannot trust clients), so
both use these same functions. Declarations are checked when they are made
(an unknown type, validator or aggregate function is a ValueError while the
agent's module is imported), so a broken agent never reaches a request.

An input's ``validation`` is a validator name from
:data:`nmc.protocol.validators.VALIDATORS` when it is exactly one of them
(``"shellsafe"``, ``"ipv4address"``, ...), otherwise a regular expression
searched in the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from nmc.errors import ProtocolError
from nmc.protocol.aggregate import FUNCTIONS, AggregateResult, compute
from nmc.protocol.status import Status
from nmc.protocol.regex import regex_problem, search
from nmc.protocol.validators import VALIDATORS

__all__ = ["DISPLAY_POLICIES", "INPUT_TYPES", "REDACTED", "ActionSpec", "AgentSpec", "Aggregate", "Input", "InputError", "Output",
           "coerce_cli_value", "fill_output_defaults", "redact_inputs", "redact_outputs", "summarize", "validate_inputs"]

INPUT_TYPES = ("string", "integer", "float", "number", "boolean", "list", "any")
DISPLAY_POLICIES = ("ok", "failed", "always")
REDACTED = "***"  # what records and kept replies hold instead of a sensitive input or output


class InputError(ProtocolError, ValueError):
    """Inputs that do not fit an action's DDL; `status` is MISSING_DATA or INVALID_DATA."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Input:
    """One declared input of an action."""

    name: str
    type: str = "string"
    description: str = ""
    optional: bool = True
    default: Any = None
    validation: str | None = None  # a validator name (shellsafe, ipv4address, ...) or a regular expression
    maxlength: int = 0  # 0: unlimited
    sensitive: bool = False  # secret (a password, a token): audit records store "***" instead

    def __post_init__(self) -> None:
        if self.type not in INPUT_TYPES:
            raise ValueError(f"input {self.name!r}: unknown type {self.type!r}")
        if self.validation is not None and self.validation not in VALIDATORS:
            problem = regex_problem(self.validation)
            if problem is not None:
                raise ValueError(f"input {self.name!r}: bad validation regex {self.validation!r}: {problem}")
        if self.maxlength < 0:
            raise ValueError(f"input {self.name!r}: maxlength must be 0 (unlimited) or more")

    def check_text(self, value: str) -> None:
        """Length and validation checks of one string value; InputError(INVALID_DATA) when it fails."""
        if self.maxlength and len(value) > self.maxlength:
            raise InputError(Status.INVALID_DATA, f"input '{self.name}' is longer than {self.maxlength} characters")
        if self.validation is None:
            return
        validator = VALIDATORS.get(self.validation)
        if validator is not None:
            why = validator(value)
            if why is not None:
                raise InputError(Status.INVALID_DATA, f"input '{self.name}' {why}")
        elif not search(self.validation, value):  # RE2: the caller's text cannot make it backtrack
            raise InputError(Status.INVALID_DATA, f"input '{self.name}' does not match /{self.validation}/")

    def to_dict(self) -> dict[str, Any]:
        """JSON form for `nmc plugin ddl` and agent_inventory."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "description": self.description,
                               "optional": self.optional, "default": self.default, "validation": self.validation,
                               "maxlength": self.maxlength}
        if self.sensitive:  # only when set, so DDL documents of ordinary inputs keep their shape
            out["sensitive"] = True
        return out


@dataclass(frozen=True)
class Output:
    """One declared output of an action: how to show it and what it is when missing."""

    name: str
    description: str = ""
    display_as: str = ""  # label in text output; defaults to the name
    default: Any = None
    type: str = "any"
    sensitive: bool = False  # secret: the caller gets it, the copy kept in NMC_JOBS holds "***" (docs/jobs.md)

    def __post_init__(self) -> None:
        if self.type not in INPUT_TYPES:
            raise ValueError(f"output {self.name!r}: unknown type {self.type!r}")

    @property
    def label(self) -> str:
        """What text output calls this output."""
        return self.display_as or self.name

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        out = {"name": self.name, "description": self.description, "display_as": self.display_as or self.name,
               "default": self.default, "type": self.type}
        if self.sensitive:  # only when set, as an input's, so other DDL documents keep their shape
            out["sensitive"] = True
        return out


@dataclass(frozen=True)
class Aggregate:
    """A summary computed over every node's value of one output (MCollective's aggregate plugins)."""

    function: str  # summary | average | sum | boolean_summary
    output: str
    format: str = ""  # optional printf ("%.1f") or str.format ("{:.1f}") of each shown value
    labels: tuple[str, str] | None = None  # boolean_summary: what to call true and false

    def __post_init__(self) -> None:
        if self.function not in FUNCTIONS:
            raise ValueError(f"aggregate of {self.output!r}: unknown function {self.function!r} "
                             f"(known: {', '.join(sorted(FUNCTIONS))})")
        if self.labels is not None and (len(self.labels) != 2 or self.function != "boolean_summary"):
            raise ValueError(f"aggregate of {self.output!r}: labels are (true_label, false_label) of a "
                             "boolean_summary")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        labels = None if self.labels is None else {"true": self.labels[0], "false": self.labels[1]}
        return {"function": self.function, "output": self.output, "format": self.format, "labels": labels}


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
    # The action only reads (changes nothing on the node), so running it again is harmless: only such
    # actions may be answered without a signature (security.unsigned_actions, docs/nats-tools.md).
    readonly: bool = False

    def __post_init__(self) -> None:
        if self.display not in DISPLAY_POLICIES:
            raise ValueError(f"action {self.name!r}: display must be one of {', '.join(DISPLAY_POLICIES)}, "
                             f"got {self.display!r}")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"action {self.name!r}: timeout must be a positive number of seconds")
        for kind, names in (("input", [i.name for i in self.inputs]), ("output", [o.name for o in self.outputs])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"action {self.name!r}: {kind} {', '.join(dupes)} declared twice")
        declared = {o.name for o in self.outputs}
        for agg in self.aggregates:
            if agg.output not in declared:
                raise ValueError(f"action {self.name!r}: aggregate {agg.function}({agg.output}) needs "
                                 f"{agg.output!r} declared in outputs")

    def output(self, name: str) -> Output | None:
        """The declared output called `name`, if any."""
        return next((o for o in self.outputs if o.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the action's DDL."""
        out: dict[str, Any] = {"name": self.name, "description": self.description, "display": self.display,
                               "timeout": self.timeout, "inputs": [i.to_dict() for i in self.inputs],
                               "outputs": [o.to_dict() for o in self.outputs],
                               "aggregates": [a.to_dict() for a in self.aggregates]}
        if self.readonly:  # only when set, like an input's `sensitive`, so other DDL documents keep their shape
            out["readonly"] = True
        return out


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
        inp.check_text(value)
    elif isinstance(value, list):
        # A list of arguments is as dangerous as one: every string in it passes the same check.
        for item in value:
            if isinstance(item, str):
                inp.check_text(item)
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


def fill_output_defaults(spec: ActionSpec, data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with every declared output it lacks set to that output's default (the node does this before replying)."""
    out = dict(data)
    for o in spec.outputs:
        out.setdefault(o.name, o.default)
    return out


def redact_inputs(spec: ActionSpec | None, data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with every input the DDL marks `sensitive` as REDACTED (audit records, job start records).

    Unknown actions (no spec) and undeclared inputs are kept as sent: only the
    DDL can say what is secret, and the request is refused anyway when the
    action does not exist.
    """
    out = dict(data)
    if spec is None:
        return out
    for inp in spec.inputs:
        if inp.sensitive and inp.name in out:
            out[inp.name] = REDACTED
    return out


def redact_outputs(spec: ActionSpec | None, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """`data` with every output the DDL marks `sensitive` as REDACTED, or None when nothing needs it.

    None lets the node keep the very bytes it sent (one signature) for the usual reply
    that carries no secret; a reply that does gets a second, separately signed copy.
    """
    if spec is None:
        return None
    secret = [o.name for o in spec.outputs if o.sensitive and data.get(o.name) not in (None, REDACTED)]
    return {**data, **dict.fromkeys(secret, REDACTED)} if secret else None


def summarize(spec: ActionSpec, ok_data: Iterable[Mapping[str, Any]]) -> list[AggregateResult]:
    """The action's aggregate summaries over the data of its OK replies (missing values count as the default)."""
    rows = list(ok_data)
    results = []
    for agg in spec.aggregates:
        out = spec.output(agg.output)
        default = out.default if out is not None else None
        results.append(compute(agg.function, (row.get(agg.output, default) for row in rows), output=agg.output,
                               label=out.label if out is not None else agg.output, format=agg.format,
                               labels=agg.labels, replies=len(rows)))
    return results


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
