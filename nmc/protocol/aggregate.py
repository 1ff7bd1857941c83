"""Aggregate summaries over every node's value of one output (MCollective's aggregate plugins). Pure.

Each function takes the values one output had in the OK replies (missing
ones already replaced by the output's default by the caller) and returns
an :class:`AggregateResult` that renders itself as text (what `nmc rpc`
prints under the results) and as JSON (what `--json` puts under
``"aggregates"``).

=================  ====================================================
``summary``        how many nodes had each value
``boolean_summary``  how many were true and false, with optional labels
``sum``            the sum of the numeric values
``average``        the mean of the numeric values
=================  ====================================================
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["FUNCTIONS", "AggregateResult", "compute", "format_value"]


@dataclass(frozen=True)
class AggregateResult:
    """The outcome of one aggregate function: `value` is a count table or a number (None: no numbers)."""

    function: str
    output: str
    label: str  # the output's display_as, used in the heading
    value: Any  # dict[str, int] for summary/boolean_summary; int | float | None for sum/average
    count: int  # how many values went into it
    format: str = ""
    replies: int | None = None  # how many OK replies it was computed over (None: not known)

    @property
    def is_table(self) -> bool:
        """True for the count-per-value functions."""
        return isinstance(self.value, dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (under "aggregates" in `nmc rpc --json`)."""
        return {"function": self.function, "output": self.output, "label": self.label, "value": self.value,
                "count": self.count}

    def text(self) -> str:
        """MCollective's rendering: `Summary of X:` and aligned `value = count` lines, or `Average of X: 1.23`.

        Over no successful replies at all, one line says so: every node failed, so there is nothing to sum up.
        """
        if self.replies == 0:
            return f"{self._heading} of {self.label}: no successful replies"
        if self.is_table:
            rows = [(format_value(self.format, key), str(n)) for key, n in self.value.items()]
            width = max((len(k) for k, _ in rows), default=0)
            lines = [f"Summary of {self.label}:", ""]
            lines += [f"   {k.rjust(width)} = {n}" for k, n in rows] or ["   (no values)"]
            return "\n".join(lines)
        shown = "(no numeric values)" if self.value is None else format_value(self.format, self.value)
        return f"{self._heading} of {self.label}: {shown}"

    @property
    def _heading(self) -> str:
        if self.is_table:
            return "Summary"
        return {"average": "Average", "sum": "Sum"}.get(self.function, self.function)


def format_value(fmt: str, value: Any) -> str:
    """`value` through a printf (`%.1f`) or str.format (`{:.1f}`) format; plain text when none or it does not fit."""
    try:
        if "%" in fmt:
            return fmt % (value,)
        if "{" in fmt:
            return fmt.format(value)
    except (TypeError, ValueError, IndexError, KeyError):
        pass  # a format meant for numbers meeting a string: show the value rather than fail the whole output
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _key(value: Any) -> str:
    """A count-table key: strings as they are, anything else as its JSON text (true, 3, ["a"])."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _summary(values: list[Any], labels: tuple[str, str] | None) -> tuple[Any, int]:
    counts = Counter(_key(v) for v in values)
    # Most common first, ties by value, so the same replies always print the same way.
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))), len(values)


def _boolean_summary(values: list[Any], labels: tuple[str, str] | None) -> tuple[Any, int]:
    # Only real booleans count: the string "false" being tallied as true would be worse than leaving it out.
    true_label, false_label = labels or ("true", "false")
    flags = [v for v in values if isinstance(v, bool)]
    return {true_label: sum(flags), false_label: len(flags) - sum(flags)}, len(flags)


def _sum(values: list[Any], labels: tuple[str, str] | None) -> tuple[Any, int]:
    numbers = [v for v in values if _is_number(v)]
    return (sum(numbers) if numbers else None), len(numbers)


def _average(values: list[Any], labels: tuple[str, str] | None) -> tuple[Any, int]:
    numbers = [v for v in values if _is_number(v)]
    return (sum(numbers) / len(numbers) if numbers else None), len(numbers)


FUNCTIONS: Mapping[str, Callable[[list[Any], tuple[str, str] | None], tuple[Any, int]]] = MappingProxyType({
    "summary": _summary,
    "boolean_summary": _boolean_summary,
    "sum": _sum,
    "average": _average,
})


def compute(function: str, values: Iterable[Any], *, output: str, label: str = "", format: str = "",
            labels: tuple[str, str] | None = None, replies: int | None = None) -> AggregateResult:
    """Run one aggregate function over `values` (None values are left out: the node had nothing to say).

    `replies`: how many OK replies the values came from, when the caller knows (0: the text says so).
    """
    try:
        fn = FUNCTIONS[function]
    except KeyError:
        raise ValueError(f"unknown aggregate function {function!r} (known: {', '.join(sorted(FUNCTIONS))})") from None
    value, count = fn([v for v in values if v is not None], labels)
    return AggregateResult(function=function, output=output, label=label or output, value=value, count=count,
                           format=format, replies=replies)
