"""The audit service's backlog check (audit_backlog events) and the settings behind it and audit.events.

The service's view of the stream is set by hand (its reader's known end and its
position) and the clock is a variable, so "at most once a minute while above,
once when back under" is checked without waiting a minute.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from nmc.audit import service as service_module
from nmc.audit.service import AuditService, AuditServiceSettings
from nmc.ops.config.files import load_config
from nmc.ops.config.settings import SettingsError, audit_service_settings, policy_service_settings


class FakeVerifier:
    pass


def service(tmp_path: Path, **kw: Any) -> AuditService:
    return AuditService(AuditServiceSettings(file=tmp_path / "audit.jsonl", **kw), FakeVerifier())  # type: ignore[arg-type]


async def test_backlog_logged_once_a_minute_while_above_and_once_back_under(tmp_path, monkeypatch):
    audit = service(tmp_path, backlog_warn=10, backlog_every=60)
    now = [1000.0]
    monkeypatch.setattr(service_module.time, "monotonic", lambda: now[0])
    audit._stored = SimpleNamespace(last_seq=100)  # type: ignore[assignment]

    async def at(position: int, when: float) -> list[str]:
        audit._next_seq, now[0] = position, when
        with capture_logs() as logs:
            await audit._check_backlog()
        return [entry["event"] for entry in logs]

    assert audit.backlog is None  # no position yet: nothing to say
    assert await at(1, 1000) == ["audit_backlog"]  # 100 waiting
    assert audit.backlog == 100
    assert await at(50, 1030) == []  # 51 waiting, within the minute
    assert await at(60, 1061) == ["audit_backlog"]  # still above, a minute later
    assert await at(95, 1062) == ["audit_backlog_cleared"]  # 6 waiting: back under, said at once
    assert await at(96, 1063) == []  # under and said so
    assert await at(80, 1064) == ["audit_backlog"]  # above again (the stream grew): said at once
    assert audit.counters.backlog_events == 0  # no signer: logged, nothing published


async def test_backlog_off_with_zero(tmp_path):
    audit = service(tmp_path, backlog_warn=0)
    audit._stored, audit._next_seq = SimpleNamespace(last_seq=10_000), 1  # type: ignore[assignment]
    with capture_logs() as logs:
        await audit._check_backlog()
    assert logs == []


def test_audit_events_need_an_event_verifier(tmp_path):
    with pytest.raises(ValueError, match="event verifier"):
        service(tmp_path, events=True)


def _config(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "svc.cfg"
    path.write_text(text, encoding="utf-8")
    return load_config(path, kind="server", env={})


def test_settings_keys(tmp_path):
    cfg = _config(tmp_path, "main_collective = prod\naudit.file = a.jsonl\naudit.backlog_warn = 5\naudit.events = true\n")
    settings = audit_service_settings(cfg)
    assert (settings.backlog_warn, settings.events, settings.collective) == (5, True, "prod")
    defaults = audit_service_settings(_config(tmp_path, "audit.file = a.jsonl\n"))
    assert (defaults.backlog_warn, defaults.events, defaults.collective) == (1000, False, "nmc")
    with pytest.raises(SettingsError, match="audit.backlog_warn must be at least 0"):
        audit_service_settings(_config(tmp_path, "audit.file = a.jsonl\naudit.backlog_warn = -1\n"))
    (tmp_path / "policies").mkdir()
    policy = policy_service_settings(_config(tmp_path, "authz.policydir = policies\nevents.enabled = false\n"))
    assert policy.events is False
