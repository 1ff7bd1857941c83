"""The Job page's view of a job: each reply labelled as `nmc jobs show` labels it, the DDL's aggregates, charts.

Pure functions over the job dict ConsoleData.job returns (plain data, so the JSON API
carries the same view the page renders). The labelling is nmc.client.results', which
the CLI prints as text: the console cannot import nmc.cli (one-way dependencies), so
the display-neutral part lives in the client library and both use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from nmc.client.results import fmt_value, labelled, said
from nmc.protocol.aggregate import AggregateResult, format_value
from nmc.protocol.ddl import ActionSpec, AgentSpec, summarize

__all__ = ["BUCKETS", "action_spec", "aggregate_view", "duration_histogram", "reply_fields", "status_chart"]

BUCKETS = 10  # bars of the durations histogram


def action_spec(specs: Mapping[str, AgentSpec], agent: str, action: str) -> ActionSpec | None:
    """The action's DDL if the console knows the agent (None: the data keys are shown as they came)."""
    known = specs.get(agent)
    return known.actions.get(action) if known is not None else None


def reply_fields(reply: Mapping[str, Any], spec: ActionSpec | None) -> list[dict[str, str]]:
    """The reply's (label, text) rows as `nmc jobs show` prints them: a failed one only with what it carries."""
    pairs = labelled(reply["data"], spec) if reply["ok"] else said(reply["data"], spec)
    return [{"label": str(label), "value": fmt_value(value)} for label, value in pairs]


def _percent(part: float, whole: float) -> int:
    return round(100 * part / whole) if whole else 0


def status_chart(replies: Sequence[Mapping[str, Any]], missing: Sequence[str]) -> list[dict[str, Any]]:
    """ok / failed / no reply counts, each with its share of every target (for the bars)."""
    ok = sum(1 for r in replies if r["ok"])
    counts = (("ok", ok), ("failed", len(replies) - ok), ("no reply", len(missing)))
    total = sum(n for _, n in counts)
    return [{"status": name, "count": n, "percent": _percent(n, total)} for name, n in counts]


def duration_histogram(elapsed: Sequence[float], buckets: int = BUCKETS) -> list[dict[str, Any]]:
    """How many replies took how long: `buckets` equal ranges from 0 to the slowest reply (empty: no replies).

    Bars are sized against the fullest bucket, so one slow node still shows as a visible bar.
    """
    if not elapsed:
        return []
    top = max(elapsed)
    step = _nice_step(top / buckets) if top > 0 else 0.001
    counts = [0] * buckets
    for value in elapsed:
        counts[min(buckets - 1, int(value / step))] += 1
    fullest = max(counts)
    return [{"low": round(i * step, 3), "high": round((i + 1) * step, 3), "count": n,
             "percent": _percent(n, fullest)} for i, n in enumerate(counts)]


def _nice_step(raw: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at least `raw`: bucket edges people can read."""
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def aggregate_view(spec: ActionSpec | None, replies: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The DDL's aggregate summaries over the OK replies: MCollective's text, and rows for a bar chart."""
    if spec is None or not spec.aggregates:
        return []
    return [_aggregate(agg) for agg in summarize(spec, (r["data"] for r in replies if r["ok"]))]


def _aggregate(agg: AggregateResult) -> dict[str, Any]:
    rows = []
    if agg.is_table and agg.replies != 0:
        rows = [{"value": format_value(agg.format, key), "count": n, "percent": _percent(n, agg.count)}
                for key, n in agg.value.items()]
    return {**agg.to_dict(), "text": agg.text(), "rows": rows}
