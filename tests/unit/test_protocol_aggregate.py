"""Aggregate summaries (summary, boolean_summary, sum, average), output defaults and DDL checks."""

from __future__ import annotations

import json

import pytest

from nmc.protocol.aggregate import FUNCTIONS, AggregateResult, compute, format_value
from nmc.protocol.ddl import (
    ActionSpec,
    Aggregate,
    Output,
    fill_output_defaults,
    summarize,
)
from nmc.services.agent import action


def test_summary_counts_each_value_most_common_first() -> None:
    result = compute("summary", ["running", "stopped", "running", None, "running", "stopped", "failed"],
                     output="state", label="State")
    assert result.value == {"running": 3, "stopped": 2, "failed": 1}
    assert result.count == 6  # None: the node had nothing to say
    assert result.text() == "Summary of State:\n\n   running = 3\n   stopped = 2\n    failed = 1"
    assert result.to_dict() == {"function": "summary", "output": "state", "label": "State",
                                "value": {"running": 3, "stopped": 2, "failed": 1}, "count": 6}


def test_summary_keys_of_non_strings_are_their_json_text() -> None:
    result = compute("summary", [1, 1, True, [1, 2], {"b": 1, "a": 2}], output="v")
    assert result.value == {"1": 2, "[1, 2]": 1, "true": 1, '{"a": 2, "b": 1}': 1}
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()


def test_boolean_summary_with_and_without_labels() -> None:
    labelled = compute("boolean_summary", [True, False, True, "false", None], output="enabled", label="Enabled",
                       labels=("enabled", "disabled"))
    assert labelled.value == {"enabled": 2, "disabled": 1}  # the string "false" is not a boolean: left out
    assert labelled.count == 3
    assert labelled.text() == "Summary of Enabled:\n\n    enabled = 2\n   disabled = 1"
    plain = compute("boolean_summary", [False], output="ok")
    assert plain.value == {"true": 0, "false": 1}


def test_sum_and_average_use_numbers_only() -> None:
    values = [2, 4.5, "3", True, None, 1]
    total = compute("sum", values, output="cores", label="CPU cores")
    assert (total.value, total.count) == (7.5, 3)
    assert total.text() == "Sum of CPU cores: 7.50"
    assert compute("sum", [1, 2], output="n").text() == "Sum of n: 3"
    mean = compute("average", [1, 2, 2], output="load", label="Load")
    assert mean.value == pytest.approx(5 / 3)
    assert mean.text() == "Average of Load: 1.67"
    assert compute("average", [1, 2], output="load", format="%.3f").text() == "Average of load: 1.500"
    assert compute("average", [1, 2], output="load", format="{:.0f}").text() == "Average of load: 2"


def test_no_numbers_is_said_not_crashed_on() -> None:
    empty = compute("average", ["x", None], output="load")
    assert (empty.value, empty.count) == (None, 0)
    assert empty.text() == "Average of load: (no numeric values)"
    assert compute("summary", [], output="x").text() == "Summary of x:\n\n   (no values)"


def test_format_that_does_not_fit_falls_back_to_the_value() -> None:
    assert format_value("%d", "abc") == "abc"
    assert format_value("{:.1f}", 2) == "2.0"
    assert format_value("", 2.0) == "2.00"


def test_unknown_function_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown aggregate function 'median'"):
        compute("median", [1], output="x")
    assert set(FUNCTIONS) == {"summary", "boolean_summary", "sum", "average"}


def test_unknown_function_in_a_ddl_fails_at_agent_definition_time() -> None:
    with pytest.raises(ValueError, match="unknown function 'median'.*known: average, boolean_summary, sum, summary"):
        @action("x", outputs=(Output("v"),), aggregate=(Aggregate("median", "v"),))
        async def act(self, req):  # pragma: no cover - never defined
            return {}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"aggregates": (Aggregate("sum", "nope"),)}, "needs 'nope' declared in outputs"),
    ({"display": "all"}, "display must be one of ok, failed, always"),
    ({"timeout": 0}, "timeout must be a positive"),
    ({"outputs": (Output("a"), Output("a"))}, "output a declared twice"),
])
def test_bad_action_declarations_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ActionSpec("act", **kwargs)


def test_labels_belong_to_boolean_summary() -> None:
    with pytest.raises(ValueError, match="labels"):
        Aggregate("summary", "v", labels=("a", "b"))


SPEC = ActionSpec("status", outputs=(
    Output("state", display_as="State", default="unknown"), Output("cores", default=0), Output("note")),
    aggregates=(Aggregate("summary", "state"), Aggregate("average", "cores")))


def test_fill_output_defaults_adds_only_missing_declared_outputs() -> None:
    assert fill_output_defaults(SPEC, {"state": "up", "extra": 1}) == {
        "state": "up", "extra": 1, "cores": 0, "note": None}
    assert fill_output_defaults(ActionSpec("x"), {"a": 1}) == {"a": 1}


def test_summarize_counts_missing_values_as_the_default() -> None:
    results = summarize(SPEC, [{"state": "up", "cores": 4}, {"cores": 2}, {"state": "up"}])
    assert [r.function for r in results] == ["summary", "average"]
    assert isinstance(results[0], AggregateResult)
    assert results[0].value == {"up": 2, "unknown": 1} and results[0].label == "State"
    assert results[1].value == 2  # (4 + 2 + 0) / 3


def test_summaries_over_no_successful_reply_say_so() -> None:
    # Every node failed: nothing to sum up, and the text says that rather than "(no values)".
    texts = [r.text() for r in summarize(SPEC, [])]
    assert texts == ["Summary of State: no successful replies", "Average of cores: no successful replies"]
    spec = ActionSpec("x", outputs=(Output("up", default=False), Output("n", default=0)), aggregates=(
        Aggregate("boolean_summary", "up", labels=("up", "down")), Aggregate("sum", "n")))
    assert [r.text() for r in summarize(spec, [])] == ["Summary of up: no successful replies",
                                                      "Sum of n: no successful replies"]
    # With replies, as before; the JSON form is unchanged either way.
    assert summarize(spec, [{"up": True}])[0].text() == "Summary of up:\n\n     up = 1\n   down = 0"
    assert summarize(SPEC, [])[0].to_dict() == {"function": "summary", "output": "state", "label": "State",
                                                "value": {}, "count": 0}

