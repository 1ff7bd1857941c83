"""The pure parts of the ADR-32 micro layer: control subjects and endpoint INFO/STATS entries."""

from __future__ import annotations

import json

from nmc.transport.micro import Endpoint, control_subjects


async def _handler(msg):  # pragma: no cover - never called here
    return None


def test_control_subjects() -> None:
    assert control_subjects("PING", "nmc-node", "abc") == ("$SRV.PING", "$SRV.PING.nmc-node", "$SRV.PING.nmc-node.abc")
    assert control_subjects("INFO", "nmc-policy", "x1")[2] == "$SRV.INFO.nmc-policy.x1"


def test_info_without_queue_group() -> None:
    ep = Endpoint(name="node", subject="nmc.c.node.web1.>", handler=_handler, metadata={"route": "node"})
    assert ep.info() == {"name": "node", "subject": "nmc.c.node.web1.>", "metadata": {"route": "node"}}


def test_info_and_stats_with_queue_group() -> None:
    ep = Endpoint(name="check", subject="nmc.c.authz.check", handler=_handler, queue_group="nmc-policy")
    assert ep.info()["queue_group"] == "nmc-policy"
    assert ep.stats()["queue_group"] == "nmc-policy"


def test_metadata_is_copied_into_info() -> None:
    meta = {"a": "1"}
    ep = Endpoint(name="e", subject="s", handler=_handler, metadata=meta)
    ep.info()["metadata"]["a"] = "changed"
    assert ep.info()["metadata"] == {"a": "1"}


def test_stats_with_no_requests() -> None:
    ep = Endpoint(name="e", subject="s", handler=_handler)
    stats = ep.stats()
    assert stats == {"name": "e", "subject": "s", "num_requests": 0, "num_errors": 0, "last_error": "",
                     "processing_time": 0, "average_processing_time": 0}
    json.dumps(stats)


def test_stats_average_and_errors() -> None:
    ep = Endpoint(name="e", subject="s", handler=_handler, num_requests=3, processing_time_ns=1000)
    ep.record_error("bad filter")
    ep.record_error("security: expired")
    stats = ep.stats()
    assert stats["average_processing_time"] == 333
    assert isinstance(stats["average_processing_time"], int)
    assert (stats["num_errors"], stats["last_error"]) == (2, "security: expired")
    assert "queue_group" not in stats
