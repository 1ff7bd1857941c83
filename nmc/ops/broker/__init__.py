"""The broker: nats-server's configuration and process, and the JetStream set-up an operator runs.

`server` renders a configuration and runs nats-server; `authorization` turns
certificates into NATS users with their role's permissions
(nmc.security.permissions); `cluster` adds routes and leaf connections;
`jetstream` creates the audit stream and the registry bucket as the operator.
"""
