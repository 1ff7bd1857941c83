"""The replay file (nmc.services.replaylog): what a node remembers across restarts, and when it must doubt it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nmc.security import ReplayError, StaleRequestError
from nmc.services.replaylog import ReplayJournal, ReplayLogError, read_boot_id

NOW = 1_800_000_000.0
BOOT = "boot-a"


def open_journal(path: Path, now: float = NOW, boot: str = BOOT, capacity: int = 1000) -> ReplayJournal:
    return ReplayJournal.open(path, capacity=capacity, per_caller=capacity, skew=5.0, max_ttl=3600.0, now=now,
                              boot=boot)


def run(journal: ReplayJournal, request_id: str, now: float = NOW, ttl: float = 60.0) -> None:
    """What the pipeline does for a request that matched: check, remember, record."""
    journal.cache.check(request_id, now, now)
    if journal.cache.remember(request_id, "cert=admin", now + ttl, now):
        journal.record(request_id, "cert=admin", now + ttl)


def crash(path: Path, ids: list[str]) -> None:
    """A node process that records `ids` and dies without stopping (no clean mark), in this boot."""
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from nmc.services.replaylog import ReplayJournal
        j = ReplayJournal.open(Path({str(path)!r}), capacity=1000, per_caller=1000, skew=5.0, max_ttl=3600.0,
                               now={NOW!r}, boot={BOOT!r})
        for rid in {ids!r}:
            j.cache.remember(rid, "cert=admin", {NOW + 60!r}, {NOW!r})
            j.record(rid, "cert=admin", {NOW + 60!r})
        os._exit(9)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 9, done.stderr


def test_a_new_node_starts_empty_and_creates_its_files(tmp_path: Path):
    path = tmp_path / "state" / "replay.log"
    journal = open_journal(path)
    assert (journal.state, len(journal.cache), journal.cache.not_before) == ("new", 0, -math.inf)
    run(journal, "r1")
    journal.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["nmc_replay"] == 1 and lines[0]["boot"] == BOOT
    assert lines[1] == [NOW + 60, "cert=admin", "r1"] and "clean" in lines[2]
    assert (path.parent / "replay.log.lock").exists()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_clean_stop_is_trusted_even_after_the_machine_restarted(tmp_path: Path):
    path = tmp_path / "replay.log"
    journal = open_journal(path)
    run(journal, "r1")
    journal.close()
    again = open_journal(path, now=NOW + 10, boot="boot-b")
    assert (again.state, again.cache.not_before) == ("loaded", -math.inf)
    with pytest.raises(ReplayError):
        again.cache.check("r1", NOW, NOW + 10)


def test_a_process_crash_loses_nothing(tmp_path: Path):
    path = tmp_path / "replay.log"
    crash(path, ["r1", "r2"])
    journal = open_journal(path, now=NOW + 1)
    assert journal.state == "loaded" and len(journal.cache) == 2
    with pytest.raises(ReplayError):
        journal.cache.check("r2", NOW, NOW + 1)


def test_a_machine_crash_is_state_lost(tmp_path: Path):
    path = tmp_path / "replay.log"
    crash(path, ["r1"])
    journal = open_journal(path, now=NOW + 20, boot="boot-b")
    assert journal.state.startswith("lost: the machine restarted")
    assert journal.cache.not_before == NOW + 25  # start + clock skew
    with pytest.raises(StaleRequestError):
        journal.cache.check("unknown", NOW + 24, NOW + 26)  # issued before the start: may have run before
    with pytest.raises(ReplayError):
        journal.cache.check("r1", NOW + 26, NOW + 26)  # what the file still held is kept anyway
    journal.cache.check("new", NOW + 25.5, NOW + 26)


@pytest.mark.parametrize("damage", ["deleted", "emptied", "garbage", "not utf-8", "bad entry"])
def test_a_damaged_or_missing_file_is_state_lost(tmp_path: Path, damage: str):
    path = tmp_path / "replay.log"
    journal = open_journal(path)
    run(journal, "r1")
    journal.close()
    if damage == "deleted":
        path.unlink()
    elif damage == "emptied":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage\n")
    elif damage == "not utf-8":
        path.write_bytes(path.read_bytes().replace(b"cert=admin", b"cert=\xff"))
    else:
        path.write_text(path.read_text().replace('"r1"]', '"r1", 7]'))
    again = open_journal(path, now=NOW + 10)
    assert again.state.startswith("lost: the replay file is")
    with pytest.raises(StaleRequestError):
        again.cache.check("r1", NOW, NOW + 10)


def test_the_state_lost_bound_survives_the_next_restart_until_it_cannot_matter(tmp_path: Path):
    path = tmp_path / "replay.log"
    open_journal(path).close()
    path.unlink()
    lost = open_journal(path, now=NOW + 10)
    lost.close()
    again = open_journal(path, now=NOW + 100)
    assert again.state == "loaded" and again.cache.not_before == NOW + 15
    again.close()
    later = open_journal(path, now=NOW + 15 + 3601)  # every request it covered has expired
    assert later.cache.not_before == -math.inf


def test_a_torn_last_line_is_ignored(tmp_path: Path):
    path = tmp_path / "replay.log"
    crash(path, ["r1"])
    with path.open("ab") as out:
        out.write(b'[1800000060.0, "cert=admin", "r2')  # the process died inside this write
    journal = open_journal(path, now=NOW + 1)
    assert journal.state == "loaded" and [e[0] for e in journal.cache.entries()] == ["r1"]


def test_expired_ids_are_dropped_when_loading(tmp_path: Path):
    path = tmp_path / "replay.log"
    journal = open_journal(path)
    run(journal, "short", ttl=10)
    run(journal, "long", ttl=600)
    journal.close()
    again = open_journal(path, now=NOW + 100)
    assert [e[0] for e in again.cache.entries()] == ["long"]
    assert len(path.read_text().splitlines()) == 2  # rewritten: header and the one live id


def test_the_file_stays_bounded(tmp_path: Path):
    path = tmp_path / "replay.log"
    journal = open_journal(path, capacity=50)
    for i in range(5000):  # each expires before the next arrives: at most one is live
        run(journal, f"r{i}", now=NOW + i, ttl=0.5)
        assert len(path.read_text().splitlines()) <= 2 * 50 + 1025
    journal.close()


def test_one_file_one_node_process(tmp_path: Path):
    path = tmp_path / "replay.log"
    journal = open_journal(path)
    with pytest.raises(ReplayLogError, match="in use by another node process"):
        open_journal(path)
    journal.close()
    open_journal(path).close()


def test_a_failed_write_is_an_error_not_a_silent_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    journal = open_journal(tmp_path / "replay.log")

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(ReplayLogError) as info:
        journal.record("r1", "cert=admin", NOW + 60)
    monkeypatch.undo()
    assert info.value.reason == f"cannot write to replay file {tmp_path / 'replay.log'}: No space left on device"
    journal.close()


def test_an_unusable_directory_is_one_line(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ReplayLogError) as info:
        open_journal(blocker / "replay.log")
    assert str(blocker) in info.value.reason and "\n" not in info.value.reason


def test_boot_id_is_read_where_the_kernel_has_one(tmp_path: Path):
    (tmp_path / "boot_id").write_text("abc\n")
    assert read_boot_id(tmp_path / "boot_id") == "abc"
    assert read_boot_id(tmp_path / "missing") is None
