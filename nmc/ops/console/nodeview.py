"""What the Node page shows besides the registry record: the node's recent jobs and events, its agents' DDLs.

Kept apart from data.py so the Node page's extra reads (which scan NMC_JOBS and NMC_EVENTS
for one node) are in one place and can fail on their own: a page whose registry record is
there still renders when the jobs stream is missing, and says why the list is empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nmc.client.jobs import node_jobs
from nmc.errors import NmcError, reason_of
from nmc.protocol.ddl import AgentSpec

__all__ = ["agent_ddls", "node_activity"]

RECENT = 20  # jobs and events the Node page lists


def agent_ddls(agents: Sequence[str], known: Mapping[str, AgentSpec]) -> list[dict[str, Any]]:
    """Each agent the node runs with the actions of its DDL, when the console knows it.

    The console knows the built-ins and its own `plugindir`'s agents (as `nmc jobs show`);
    it may not send requests (its role), so it cannot ask a node's `rpcutil agent_inventory`:
    other agents are listed with no actions.
    """
    out = []
    for name in agents:
        spec = known.get(name)
        actions = [] if spec is None else [
            {"name": a.name, "description": a.description, "readonly": a.readonly,
             "inputs": [i.name for i in a.inputs], "outputs": [o.label for o in a.outputs]}
            for a in sorted(spec.actions.values(), key=lambda a: a.name)]
        out.append({"name": name, "known": spec is not None, "description": spec.description if spec else "",
                    "version": spec.version if spec else "", "actions": actions})
    return out


async def node_activity(data: Any, identity: str, agents: Sequence[str]) -> dict[str, Any]:
    """The Node page's extras: recent jobs (verified), recent events, agent DDLs; a failed read says why."""
    out: dict[str, Any] = {"ddls": agent_ddls(agents, data.specs), "jobs": [], "jobs_error": None, "jobs_unverified": 0,
                           "events": [], "events_error": None}
    try:
        jobs, failed = await node_jobs(data.nc, data.verifier, data.collective, identity, limit=RECENT)
        out["jobs"] = [{"id": j.job_id, "caller": j.caller, "agent": j.agent, "action": j.action,
                        "started": j.started, "status": j.status, "ok": j.ok, "message": j.message} for j in jobs]
        out["jobs_unverified"] = failed
    except NmcError as exc:
        out["jobs_error"] = reason_of(exc)
    try:
        out["events"] = await data.events(identity=identity, limit=RECENT)
    except NmcError as exc:
        out["events_error"] = reason_of(exc)
    return out
