"""Running a daemon: `serve` wires a node, the policy service or the audit service from its config (structlog set-up: nmc.transport.logs)."""
