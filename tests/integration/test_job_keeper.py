"""A node without an NMC_JOBS stream to store into: the reply still goes out, the loss is said once."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs


async def test_without_the_jobs_stream_replies_go_out_and_the_node_says_so_once(fleet):
    node = await fleet.add("keeper.test", {"role": "web"})
    with capture_logs() as logs:
        async with fleet.client() as fc:
            for job in ("job1", "job2", "job3"):
                result = await fc.call("rpcutil", "ping", expect=["keeper.test"], direct=True, timeout=5, job=job)
                assert [r.identity for r in result.results] == ["keeper.test"]  # the caller got its reply
            deadline = time.monotonic() + 10
            while node.jobs.refused < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # the acknowledgements are read by the node's own subscription
    assert node.jobs.refused == 3 and node.jobs.stored == 0
    warnings = [e for e in logs if e["event"] == "job_reply_not_stored" and e["log_level"] == "warning"]
    assert len(warnings) == 1 and "NMC_JOBS" in warnings[0]["error"]

