"""Turning CallResults into text for people and JSON for scripts.

With the action's DDL (an :class:`ActionSpec`) the text forms label data with
the outputs' ``display_as``, show a declared output a reply lacks as its
default, and print the aggregate summaries under the results; without one
(an agent this client does not know) they show the data keys as they came.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import click

from nmc.cli.terminal import choose_color  # re-exported: render is where commands look for it
from nmc.client.fleet import CallResult, NodeResult
from nmc.client.results import fmt_value as _fmt_value
from nmc.client.results import labelled as _labelled
from nmc.client.results import said as _said
from nmc.protocol.aggregate import AggregateResult
from nmc.protocol.ddl import ActionSpec

__all__ = ["DISPLAY_MODES", "call_json", "choose_color", "default_display", "print_aggregates", "print_call", "print_jsonl",
           "print_summary", "print_table", "reply_json", "shown_replies", "summary_json"]

DISPLAY_MODES = ("ok", "failed", "all", "none")


def default_display(spec: ActionSpec | None) -> str:
    """The --display mode the DDL asks for: its `always` is `all`; unknown actions show everything."""
    if spec is None or spec.display == "always":
        return "all"
    return spec.display


def shown_replies(result: CallResult, display: str) -> list[NodeResult]:
    """The replies a --display mode shows, sorted by identity."""
    keep = {"all": lambda r: True, "ok": lambda r: r.ok, "failed": lambda r: not r.ok, "none": lambda r: False}
    return [r for r in sorted(result.results, key=lambda r: r.identity) if keep[display](r)]


def _data_lines(pairs: Sequence[tuple[str, Any]]) -> list[str]:
    if not pairs:
        return []
    width = max(len(k) for k, _ in pairs)
    return [f"   {k.rjust(width)}: {_fmt_value(v)}" for k, v in pairs]


def reply_json(r: NodeResult, agent: str, action: str) -> dict[str, Any]:
    """One reply in MCollective's JSON shape (sender, statuscode, statusmsg, data) plus timing."""
    return {"sender": r.identity, "agent": agent, "action": action, "statuscode": int(r.status),
            "statusmsg": r.message, "data": dict(r.data), "elapsed_ms": round(r.elapsed * 1000, 3)}


def summary_json(result: CallResult) -> dict[str, Any]:
    """The counts of a call: discovered, replies, ok, failed, silent, dropped, time."""
    return {
        "discovered": len(result.discovered) if result.discovered is not None else None,
        "replies": len(result.results), "ok": len(result.results) - len(result.failed),
        "failed": len(result.failed), "no_response": len(result.no_response),
        "dropped": result.dropped, "elapsed_ms": round(result.elapsed * 1000, 3),
        "no_node_serves_agent": result.agent_unserved,
    }


def call_json(result: CallResult, aggregates: Sequence[AggregateResult] | None = None,
              replies: Iterable[NodeResult] | None = None) -> dict[str, Any]:
    """A whole call as one JSON object: replies (all, or `replies`), silent nodes, summary, and aggregates if given."""
    chosen = sorted(result.results if replies is None else replies, key=lambda r: r.identity)
    out: dict[str, Any] = {
        "request_id": result.request_id, "agent": result.agent, "action": result.action,
        "replies": [reply_json(r, result.agent, result.action) for r in chosen],
        "no_response": list(result.no_response),
        "summary": summary_json(result),
    }
    if result.job_id is not None:
        out["job_id"] = result.job_id
    if aggregates is not None:
        out["aggregates"] = [a.to_dict() for a in aggregates]
    return out


def print_jsonl(result: CallResult, replies: Iterable[NodeResult], aggregates: Sequence[AggregateResult]) -> None:
    """One JSON object per reply line, then `{"summary": ..., "no_response": [...], "aggregates": [...]}`."""
    for r in replies:
        click.echo(json.dumps(reply_json(r, result.agent, result.action), sort_keys=True))
    click.echo(json.dumps({"summary": summary_json(result), "no_response": list(result.no_response),
                           "aggregates": [a.to_dict() for a in aggregates]}, sort_keys=True))


def print_call(result: CallResult, *, verbose: bool = False, spec: ActionSpec | None = None,
               display: str = "all", aggregates: Sequence[AggregateResult] = ()) -> None:
    """Per-node blocks (identity, status when not OK, then the data), aggregates, then the summary.

    A failed reply shows its failure message and only the data it really carries (see `_said`).
    """
    for r in shown_replies(result, display):
        if r.ok:
            click.echo(click.style(r.identity, bold=True))
        else:
            click.echo(f"{click.style(r.identity, bold=True)}  "
                       f"{click.style(f'{r.status.label}: {r.message}', fg='red')}")
        for line in _data_lines(_labelled(r.data, spec) if r.ok else _said(r.data, spec)):
            click.echo(line)
        click.echo()
    print_aggregates(aggregates)
    print_summary(result)


def _table_columns(replies: Sequence[NodeResult], spec: ActionSpec | None) -> list[tuple[str, str, Any]]:
    """(key, heading, default) of the data columns: the declared outputs, else every data key seen."""
    if spec is not None and spec.outputs:
        return [(o.name, o.label, o.default) for o in spec.outputs]
    keys: dict[str, None] = {}
    for r in replies:
        keys.update(dict.fromkeys(r.data))
    return [(k, k, None) for k in keys]


def print_table(result: CallResult, *, spec: ActionSpec | None = None, display: str = "all",
                aggregates: Sequence[AggregateResult] = ()) -> None:
    """One row per node: identity, status, then the outputs; aggregates and the summary below."""
    replies = shown_replies(result, display)
    columns = _table_columns(replies, spec)
    header = ["identity", "status", *(heading for _, heading, _ in columns)]
    rows = [[r.identity, r.status.label if r.ok else f"{r.status.label}: {r.message}",
             *(_fmt_value(r.data.get(key, default)) for key, _, default in columns)] for r in replies]
    if rows:
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        for n, row in enumerate([header, *rows]):
            line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
            click.echo(click.style(line, bold=True) if n == 0 else line)
        click.echo()
    print_aggregates(aggregates)
    print_summary(result)


def print_aggregates(aggregates: Sequence[AggregateResult]) -> None:
    """MCollective's summaries under the results: `Summary of X:` tables and `Average of Y: 1.23` lines."""
    for agg in aggregates:
        click.echo(agg.text())
        click.echo()


def print_summary(result: CallResult) -> None:
    """MCollective's closing lines, plus who did not answer."""
    total = len(result.discovered) if result.discovered is not None else len(result.results)
    ok = len(result.results) - len(result.failed)
    click.echo(click.style("Summary", bold=True))
    click.echo(f"  Nodes: {total} discovered, {len(result.results)} replied, {ok} ok, {len(result.failed)} failed")
    if result.agent_unserved:
        among = f": none of the {total} discovered node(s) has it" if total else ""
        click.echo(click.style(f"  No node serves agent {result.agent!r}{among}; nothing ran", fg="yellow"))
    if result.no_response:
        click.echo(click.style(f"  No response from {len(result.no_response)} node(s):", fg="yellow"))
        for name in result.no_response:
            click.echo(f"    {name}")
    if result.dropped:
        click.echo(click.style(f"  {result.dropped} reply(ies) dropped: bad signature", fg="red"))
    click.echo(f"Finished processing {len(result.results)} / {total} hosts in {result.elapsed * 1000:.2f} ms")
