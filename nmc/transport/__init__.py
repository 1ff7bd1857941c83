"""What every nmc process shares to talk to NATS: connecting, and the reasons a connection fails."""

from nmc.transport.connect import ConnectError, connect, connect_error_reason, daemon_options

__all__ = ["ConnectError", "connect", "connect_error_reason", "daemon_options"]
