"""The one exception tree of nmc: every failure nmc raises on purpose is an `NmcError`.

Why one tree: a failure nmc foresaw (a bad filter, a missing certificate, a broker that
is not there) already carries a message that says what to change, so the `nmc` command
catches `NmcError` once and prints ``Error: <message>``; anything else is a bug and is
shown as one (nmc.cli.errors). Daemons log ``reason_of(exc)`` the same way.

The tree (where each subtree is raised)::

    NmcError                    field ``reason``: one line; ``str(exc)`` is one line too
    ├── ProtocolError           nmc.protocol: subjects, envelopes, records, filters, DDL inputs, JSON, RE2
    ├── SecurityError           nmc.security.errors: every refused certificate, key, signature or request
    ├── ConfigError             nmc.ops.config: a configuration file, key or value (``path``, ``line``)
    │   └── SettingsError       nmc.ops.config.settings: a configuration that cannot become a working set-up
    ├── TransportError          nmc.transport: the broker cannot be reached (ConnectError)
    ├── ClientError             nmc.client: discovery, batches, inventory scripts, registry, no responders
    ├── NodeError               nmc.services: fact sources, commands, Puppet state, the replay file
    ├── PluginError             nmc.services.loader: an agent plugin that cannot be loaded
    ├── AuditError              nmc.audit.errors: audit records, spool, sinks, the NMC_AUDIT stream
    └── OpsError                nmc.ops: the CA directory, the broker, JetStream set-up, dev fleet, simulator

Classes keep the other bases callers catch them by (``RecordError(ProtocolError,
ValueError)``, ``ReplayLogError(NodeError, OSError)``). ``reason`` is what is wrong;
a class that knows *where* (a file, a line, a source) may put that in front of it in
``str(exc)``, which is what a user is shown.

Pure: imports nothing from nmc or any third-party package, so `nmc --version` can import it.
"""

from __future__ import annotations

__all__ = ["ClientError", "NmcError", "NodeError", "OpsError", "ProtocolError", "TransportError", "one_line",
           "reason_of"]


def one_line(text: object, limit: int | None = None) -> str:
    """`text` with its lines stripped and joined by one space, cut to `limit` characters ("..." at the end).

    Reasons quote text from files, commands and the network: a line break in a log line,
    a reply or stderr would let that text forge a line of its own.
    """
    folded = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    if limit is not None and len(folded) > limit:
        return folded[: max(limit - 3, 0)] + "..."
    return folded


def reason_of(exc: BaseException) -> str:
    """What went wrong, in one line: the exception's ``reason`` when it has one, else its message, else its type."""
    return one_line(getattr(exc, "reason", None) or str(exc)) or type(exc).__name__


class NmcError(Exception):
    """A failure nmc foresaw; ``reason`` says what is wrong in one line and ``str(exc)`` is that line."""

    def __init__(self, reason: str, *, where: object = None) -> None:
        """`where` (a file, a key, a source), when given, stands in front of the reason in ``str(exc)``."""
        self.reason = one_line(reason)
        super().__init__(self.reason if where is None else f"{one_line(where)}: {self.reason}")


class ProtocolError(NmcError):
    """Bytes or text that do not follow PROTOCOL.md (nmc.protocol): refused with the reason, never guessed at."""


class TransportError(NmcError):
    """The broker could not be reached or talked to (nmc.transport)."""


class ClientError(NmcError):
    """The client library could not do what it was asked (nmc.client): bad targeting, no registry, no responders."""


class NodeError(NmcError):
    """The node daemon cannot read or write what it needs (nmc.services): facts, commands, state files."""


class OpsError(NmcError):
    """An operator tool failed (nmc.ops): the CA directory, the broker, JetStream set-up, dev fleet, simulator."""
