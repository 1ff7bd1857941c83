"""nmc.audit: audit records (PROTOCOL.md section 6), the node's JetStream auditor and spool, the audit service.

Modules, pure first:

- ``hooks``: the Auditor protocol the request pipeline calls, NoAudit. The record itself (AuditRecord, its
  strict bytes and its id) is wire contract: ``nmc.protocol.audit``.
- ``records``: records as bytes and back with nmc.audit's AuditRecordError, redaction of sensitive inputs.
- ``verify``: RecordVerifier: is a record signed by the node it names (the service and the reader ask).
- ``formats``: JSON lines, MCollective's one-line format, RFC 5424 syslog, text.
- ``stream``: the NMC_AUDIT stream's configuration.
- ``spool``, ``publisher``: the node side (JetStreamAuditor: publish, spool, resend).
- ``dedup``, ``sinks``, ``position``, ``service``: the audit service (`nmc serve audit`), which reads the
  stream without a consumer and keeps its own position in a file.
- ``reader``: `nmc audit tail` / `query` reading the stream directly (its StoredMessages reads for the service too).

Only the pure names are re-exported here; import the edges from their modules
(``nmc.audit.publisher``, ``nmc.audit.service``), which keeps this package
importable by the request pipeline without pulling in the service.
"""

from nmc.audit.errors import (
    AuditError,
    AuditRecordError,
    AuditRecordRefused,
    AuditStreamError,
    PositionError,
    SinkError,
    SpoolError,
    SpoolFull,
)
from nmc.audit.hooks import Auditor, AuditUnavailable, NoAudit
from nmc.audit.records import (
    REDACTED,
    decode_record,
    encode_record,
    redact_inputs,
)

__all__ = [
    "REDACTED",
    "AuditError",
    "AuditRecordError",
    "AuditRecordRefused",
    "AuditStreamError",
    "AuditUnavailable",
    "Auditor",
    "NoAudit",
    "PositionError",
    "SinkError",
    "SpoolError",
    "SpoolFull",
    "decode_record",
    "encode_record",
    "redact_inputs",
]
