"""The registry record: where a node's record lives in the key-value bucket and what it holds.

Nodes write these records (`nmc.services.registry`) and clients read them
(`nmc.client.registry`); this module is the one place both agree on, and it
is pure, so the key encoding and the record parser can be tested on strings.

Key: `<collective>.<identity>`, each part as one KV token. KV keys allow
`[-/_=.a-zA-Z0-9]` and no `%`, so `kv_token` is `encode_token` with `%`
written as `=`: the subject encoding never emits `=`, so the mapping stays
one-to-one, and the part never holds a `.`, so a watch on `<collective>.>`
sees exactly that collective's records.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nmc.errors import ProtocolError
from nmc.protocol import codec
from nmc.protocol.subjects import encode_token

__all__ = [
    "DEFAULT_BUCKET",
    "RECORD_PROTOCOL",
    "RecordError",
    "RegistryEntry",
    "bucket_subjects",
    "check_bucket",
    "collective_keys",
    "kv_token",
    "registry_key",
    "registry_key_subject",
]

RECORD_PROTOCOL = "nmc.registry.v1"
DEFAULT_BUCKET = "nmc_registry"
# nats-py's VALID_BUCKET_RE; checked here so a bad name fails with a message, not deep in nats-py.
_BUCKET = re.compile(r"\A[a-zA-Z0-9_-]+\Z")


class RecordError(ProtocolError, ValueError):
    """Bytes in the registry bucket that are not a valid record; `reason` is one line."""


def kv_token(text: str) -> str:
    """`text` as one KV key token: `encode_token` with `%` (not allowed in KV keys) as `=`."""
    return encode_token(text).replace("%", "=")


def registry_key(collective: str, identity: str) -> str:
    """The key of one node's record."""
    return f"{kv_token(collective)}.{kv_token(identity)}"


def collective_keys(collective: str) -> str:
    """The key pattern that selects every record of one collective."""
    return f"{kv_token(collective)}.>"


def registry_key_subject(bucket: str, collective: str, identity: str) -> str:
    """The NATS subject a put of one node's record is published on (KV bucket `bucket`)."""
    return f"$KV.{bucket}.{registry_key(collective, identity)}"


def bucket_subjects(bucket: str) -> str:
    """Every subject of KV bucket `bucket`: its stream's subjects, and what reads or watches it subscribes to."""
    return f"$KV.{bucket}.>"


def check_bucket(name: str) -> str:
    """`name` if it is a valid bucket name, else ValueError saying what is allowed."""
    if not _BUCKET.match(name):
        raise ValueError(f"registry bucket name {name!r} may only hold letters, digits, '_' and '-'")
    return name


def _fact_as_text(value: Any) -> str:
    # A fact YAML turned into a date must not stop a node from registering.
    return str(value)


@dataclass(frozen=True)
class RegistryEntry:
    """One node as it last described itself in the registry."""

    identity: str
    collective: str
    facts: Mapping[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    last_seen: float = 0.0  # unix time of the node's last put
    version: str = ""  # nmc version of the node
    facts_version: int = 0  # NodeFacts.version: bumps on every facts change

    @property
    def key(self) -> str:
        """Where this record lives in the bucket."""
        return registry_key(self.collective, self.identity)

    def to_bytes(self) -> bytes:
        """The JSON value a node puts."""
        return codec.dumps({
            "protocol": RECORD_PROTOCOL, "identity": self.identity, "collective": self.collective,
            "facts": dict(self.facts), "classes": list(self.classes), "agents": list(self.agents),
            "version": self.version, "last_seen": self.last_seen, "facts_version": self.facts_version,
        }, default=_fact_as_text)

    @classmethod
    def from_bytes(cls, data: bytes) -> RegistryEntry:
        """Parse a record; RecordError for anything a node could not have written."""
        # The shared strict codec (nmc.protocol.codec): what a node could not have written is refused.
        obj = codec.loads_object(data, "registry record", error=RecordError)
        if obj.get("protocol") != RECORD_PROTOCOL:
            raise RecordError(f"registry record protocol is {obj.get('protocol')!r}, not {RECORD_PROTOCOL!r}")
        identity, collective = obj.get("identity"), obj.get("collective")
        if not isinstance(identity, str) or not identity:
            raise RecordError("registry record has no identity")
        if not isinstance(collective, str):
            raise RecordError("registry record has no collective")
        facts = obj.get("facts")
        if not isinstance(facts, dict):
            raise RecordError("registry record field 'facts' must be an object")
        last_seen = obj.get("last_seen")
        if isinstance(last_seen, bool) or not isinstance(last_seen, (int, float)) or not math.isfinite(last_seen):
            raise RecordError("registry record field 'last_seen' must be a unix time")
        version = obj.get("version", "")
        facts_version = obj.get("facts_version", 0)
        if not isinstance(version, str) or isinstance(facts_version, bool) or not isinstance(facts_version, int):
            raise RecordError("registry record fields 'version'/'facts_version' have the wrong type")
        classes = codec.strings(obj, "classes", "registry record", error=RecordError)
        agents = codec.strings(obj, "agents", "registry record", error=RecordError)
        return cls(identity=identity, collective=collective, facts=facts, classes=classes, agents=agents,
                   last_seen=float(last_seen), version=version, facts_version=facts_version)

