"""Audit records as nmc.audit reads and writes them. Pure.

The record's schema, strict decoding and id formula are wire contract and
live in nmc.protocol.audit. This module binds them to nmc.audit's own error:
`encode_record` and `decode_record` raise AuditRecordError (an AuditError, as
everything the audit package raises), so the service, the spool and the
reader catch one family. Redaction of sensitive inputs lives with the DDL that declares them
(nmc.protocol.ddl, shared with the jobs' kept replies); it is re-exported here.
"""

from __future__ import annotations

from typing import Any

from nmc.audit.errors import AuditRecordError
from nmc.protocol.audit import AuditRecord
from nmc.protocol.audit import decode_record as _decode
from nmc.protocol.ddl import REDACTED, redact_inputs

__all__ = ["REDACTED", "decode_record", "encode_record", "redact_inputs"]


def encode_record(record: AuditRecord) -> bytes:
    """The record's body (`AuditRecord.to_bytes`); AuditRecordError when it cannot be encoded (NaN: a caller's bug)."""
    try:
        return record.to_bytes()
    except ValueError as exc:
        raise AuditRecordError(f"audit record cannot be encoded: {exc}") from exc


def decode_record(payload: bytes) -> dict[str, Any]:
    """nmc.protocol.audit.decode_record, raising AuditRecordError saying why `payload` is not a record."""
    return _decode(payload, error=AuditRecordError)
