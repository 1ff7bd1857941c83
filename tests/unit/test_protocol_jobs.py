"""Job records on the wire (nmc.protocol.jobs): the end record's optional OK/failed counts."""

from __future__ import annotations

import json

import pytest

from nmc.protocol.jobs import JobEnd, JobError

ID = "0123456789abcdef0123456789abcdef"


def test_an_end_record_with_counts_round_trips_and_one_without_stays_as_it_was():
    counted = JobEnd(id=ID, caller="alice", ended=1.5, answered=("a", "b"), missing=("c",), ok=1, failed=1)
    assert JobEnd.from_bytes(counted.to_bytes()) == counted
    plain = JobEnd(id=ID, caller="alice", ended=1.5, answered=("a",), missing=())
    assert "ok" not in json.loads(plain.to_bytes()) and JobEnd.from_bytes(plain.to_bytes()) == plain


@pytest.mark.parametrize("counts", [{"ok": 1}, {"ok": -1, "failed": 0}, {"ok": True, "failed": 0},
                                    {"ok": 1.5, "failed": 0}, {"ok": "1", "failed": 0}])
def test_bad_counts_are_refused_with_the_reason(counts):
    body = json.loads(JobEnd(id=ID, caller="alice", ended=1.5, answered=(), missing=()).to_bytes())
    with pytest.raises(JobError, match="'ok'|'failed'"):
        JobEnd.from_bytes(json.dumps({**body, **counts}).encode())
