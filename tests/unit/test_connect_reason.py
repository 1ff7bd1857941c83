"""connect_error_reason: why a first connection failed, in one line, with what to check."""

from __future__ import annotations

import ssl

import pytest

from nmc.transport.connect import connect_error_reason


@pytest.mark.parametrize("exc", [ConnectionResetError("Connection lost"), BrokenPipeError(), None])
def test_a_broker_that_hangs_up_during_the_handshake_is_asked_about_the_certificate(exc) -> None:
    reason = connect_error_reason(exc, tls=ssl.create_default_context())
    assert reason.startswith("the broker closed the connection during the handshake")
    assert "does the broker admit this client?" in reason and "\n" not in reason


def test_a_refused_connection_points_at_the_broker_not_the_certificate() -> None:
    reason = connect_error_reason(ConnectionRefusedError(), tls=None)
    assert reason.startswith("connection refused") and "admit" not in reason
