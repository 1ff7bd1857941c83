"""Running a daemon: `serve` wires a node, the policy service or the audit service from its config; `logs` sets up structlog."""
