"""The worked example of docs/agents.md: an agent with typed inputs, outputs, defaults and summaries.

Loaded from a plugin directory by the tests (client and nodes alike), so what the guide shows is
what the tests run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nmc.protocol.ddl import Aggregate, Input, Output
from nmc.services.agent import ActionFailed, ActionRequest, Agent, action


class Hello(Agent):
    """Greets people and says what kind of node it is."""

    name = "hello"
    description = "Greets people and says what kind of node it is"
    version = "1.2.0"
    concurrency = 4  # at most 4 hello actions at once on a node; more wait for a free slot

    @action(
        "Greet someone and report the node's role, cores and virtualisation",
        inputs=(
            Input("person", "string", "Who to greet", optional=False, validation="shellsafe", maxlength=64),
            Input("times", "integer", "How many times to say hello", default=1),
            Input("shout", "boolean", "Greet in capitals", default=False),
        ),
        outputs=(
            Output("greeting", "The greeting", display_as="Greeting", type="string"),
            Output("role", "The node's role fact", display_as="Role", default="unknown", type="string"),
            Output("cores", "CPU cores of the node", display_as="CPU cores", default=0, type="integer"),
            Output("virtual", "Whether the node is a virtual machine", display_as="Virtual", default=False,
                   type="boolean"),
        ),
        aggregate=(
            Aggregate("summary", "role"),
            Aggregate("sum", "cores"),
            Aggregate("average", "cores", format="%.1f"),
            Aggregate("boolean_summary", "virtual", labels=("virtual", "physical")),
        ),
        timeout=5,
    )
    async def greet(self, req: ActionRequest) -> Mapping[str, Any]:
        """Facts the node lacks are simply left out: the node fills in the outputs' defaults."""
        text = " ".join([f"hello {req.data['person']}"] * req.data["times"])
        facts = self.node.snapshot().facts
        out: dict[str, Any] = {"greeting": text.upper() if req.data["shout"] else text}
        for output, fact in (("role", "role"), ("cores", "cores"), ("virtual", "is_virtual")):
            if fact in facts:
                out[output] = facts[fact]
        return out

    @action(
        "Fail on nodes whose 'healthy' fact is false",
        outputs=(Output("healthy", "Whether the node says it is healthy", display_as="Healthy", default=True,
                        type="boolean"),),
        display="failed",
    )
    async def check(self, req: ActionRequest) -> Mapping[str, Any]:
        """display="failed": by default `nmc rpc` shows only the nodes where this failed."""
        if self.node.snapshot().facts.get("healthy") is False:
            raise ActionFailed("node says it is unhealthy", data={"healthy": False})
        return {"healthy": True}
