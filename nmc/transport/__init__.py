"""What every nmc process shares to talk to NATS.

`connect` (one connect for the client, the daemons and the tools: options,
TLS, the per-certificate inbox, the reasons a connection fails), `micro` (the
ADR-32 service layer every daemon registers with), `compat` (fixes for
nats-py behaviour), `tasks` (cancelling background tasks cleanly) and `logs`
(structlog set-up for every entry point, client or daemon; it loads no daemon code).
"""

from nmc.transport.connect import ConnectError, connect, connect_error_reason, daemon_options

__all__ = ["ConnectError", "connect", "connect_error_reason", "daemon_options"]
