"""Daemon console logs: coloured only on a terminal, never with NO_COLOR (https://no-color.org)."""

from __future__ import annotations

import io
import os
import pty

import structlog

from nmc.transport.logs import configure_logging


def _log_through_pty(monkeypatch, no_color: str | None) -> str:
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w", closefd=True) as tty, os.fdopen(leader, "rb", closefd=True) as reader:
        configure_logging(json=False, level="info", stream=tty)
        structlog.get_logger("t").warning("hello_event", node="n1")
        tty.flush()
        return os.read(reader.fileno(), 65536).decode("utf-8", "replace")


def test_console_logs_are_coloured_on_a_terminal(monkeypatch):
    assert "\x1b[" in _log_through_pty(monkeypatch, None)


def test_no_color_turns_console_log_colour_off(monkeypatch):
    text = _log_through_pty(monkeypatch, "1")
    assert "hello_event" in text and "\x1b[" not in text


def test_console_logs_into_a_pipe_are_plain(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = io.StringIO()
    configure_logging(json=False, stream=out)
    structlog.get_logger("t").warning("hello_event")
    assert "hello_event" in out.getvalue() and "\x1b[" not in out.getvalue()
