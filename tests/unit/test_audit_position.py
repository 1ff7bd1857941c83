"""The audit service's position file (nmc.audit.position): its format, atomic saves, and what is not a position."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from nmc.audit.errors import PositionError, SinkError
from nmc.audit.position import Position, PositionCorrupt, PositionFile, default_position_file


def test_saved_and_loaded_as_one_json_line(tmp_path: Path) -> None:
    file = PositionFile(tmp_path / "state" / "audit.jsonl.position")
    assert file.load() is None  # none yet
    position = Position(next_seq=1235, stream_created="2026-12-03T17:04:20.123456+00:00")
    file.save(position)
    text = file.path.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    assert json.loads(text) == {"stream": "NMC_AUDIT", "stream_created": "2026-12-03T17:04:20.123456+00:00",
                                "next_seq": 1235}
    assert file.load() == position
    assert stat.S_IMODE(file.path.stat().st_mode) & 0o007 == 0  # nobody else's business
    file.save(Position(next_seq=1300, stream_created=position.stream_created))
    assert file.load().next_seq == 1300
    assert sorted(p.name for p in file.path.parent.iterdir()) == ["audit.jsonl.position"]  # no temporary left


def test_a_position_without_the_streams_creation_time_is_still_one() -> None:
    assert Position.from_bytes(b'{"next_seq": 7}') == Position(next_seq=7, stream_created=None)


@pytest.mark.parametrize("data", [
    b"", b"{", b'{"stream":"NMC_AUDIT","next_s', b"[1]", b'"7"', b'{"stream":"NMC_AUDIT"}', b'{"next_seq": 0}',
    b'{"next_seq": -3}', b'{"next_seq": "12"}', b'{"next_seq": 1.5}', b'{"next_seq": true}',
    b'{"next_seq": 5, "stream_created": 17}', b"\xff\xfe", b'{"next_seq": 5}' + b" " * 5000,
])
def test_anything_else_is_corrupt_with_a_one_line_reason(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "audit.jsonl.position"
    path.write_bytes(data)
    with pytest.raises(PositionCorrupt) as info:
        PositionFile(path).load()
    assert str(info.value).startswith(f"{path}: not an audit position: ") and "\n" not in str(info.value)


def test_a_file_that_cannot_be_read_is_an_error_not_a_corrupt_position(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl.position"
    path.mkdir()
    with pytest.raises(PositionError) as info:
        PositionFile(path).load()
    assert not isinstance(info.value, PositionCorrupt) and isinstance(info.value, SinkError)
    assert str(info.value) == f"{path}: cannot read the audit position: Is a directory"
    with pytest.raises(PositionError, match="cannot save the audit position"):
        PositionFile(path).save(Position(next_seq=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl.position"]  # its temporary file removed


def test_the_default_place_is_beside_the_audit_file() -> None:
    assert default_position_file(Path("/var/log/nmc/audit.jsonl")) == Path("/var/log/nmc/audit.jsonl.position")
