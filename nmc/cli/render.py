"""Turning CallResults into text for people and JSON for scripts."""

from __future__ import annotations

import json
from typing import Any, Mapping

import click

from nmc.client.fleet import CallResult, NodeResult

__all__ = ["call_json", "print_call", "print_summary"]


def _fmt_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    return str(value)


def _data_lines(data: Mapping[str, Any]) -> list[str]:
    if not data:
        return []
    width = max(len(k) for k in data)
    return [f"   {k.rjust(width)}: {_fmt_value(v)}" for k, v in data.items()]


def reply_json(r: NodeResult, agent: str, action: str) -> dict[str, Any]:
    """One reply in MCollective's JSON shape (sender, statuscode, statusmsg, data) plus timing."""
    return {"sender": r.identity, "agent": agent, "action": action, "statuscode": int(r.status),
            "statusmsg": r.message, "data": dict(r.data), "elapsed_ms": round(r.elapsed * 1000, 3)}


def call_json(result: CallResult) -> dict[str, Any]:
    """A whole call as one JSON object: replies, silent nodes, summary."""
    replies = sorted(result.results, key=lambda r: r.identity)
    return {
        "request_id": result.request_id, "agent": result.agent, "action": result.action,
        "replies": [reply_json(r, result.agent, result.action) for r in replies],
        "no_response": list(result.no_response),
        "summary": {
            "discovered": len(result.discovered) if result.discovered is not None else None,
            "replies": len(result.results), "ok": len(result.results) - len(result.failed),
            "failed": len(result.failed), "no_response": len(result.no_response),
            "dropped": result.dropped, "elapsed_ms": round(result.elapsed * 1000, 3),
        },
    }


def print_call(result: CallResult, *, verbose: bool = False) -> None:
    """Per-node blocks: identity, status when not OK, then the data."""
    for r in sorted(result.results, key=lambda r: r.identity):
        if r.ok:
            click.echo(click.style(r.identity, bold=True))
        else:
            click.echo(f"{click.style(r.identity, bold=True)}  "
                       f"{click.style(f'{r.status.label}: {r.message}', fg='red')}")
        for line in _data_lines(r.data):
            click.echo(line)
        click.echo()
    print_summary(result)


def print_summary(result: CallResult) -> None:
    """MCollective's closing lines, plus who did not answer."""
    total = len(result.discovered) if result.discovered is not None else len(result.results)
    ok = len(result.results) - len(result.failed)
    click.echo(click.style("Summary", bold=True))
    click.echo(f"  Nodes: {total} discovered, {len(result.results)} replied, {ok} ok, {len(result.failed)} failed")
    if result.no_response:
        click.echo(click.style(f"  No response from {len(result.no_response)} node(s):", fg="yellow"))
        for name in result.no_response:
            click.echo(f"    {name}")
    if result.dropped:
        click.echo(click.style(f"  {result.dropped} reply(ies) dropped: bad signature", fg="red"))
    click.echo(f"Finished processing {len(result.results)} / {total} hosts in {result.elapsed * 1000:.2f} ms")
