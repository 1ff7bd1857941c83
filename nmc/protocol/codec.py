"""The one codec of the wire contract: strict JSON bytes <-> dicts, and typed field readers. Pure.

Every signed or stored message of docs/protocol.md (request and reply
envelopes, the authorization question, answer and reload notice, audit
records, registry records) is written with `dumps` and read with
`loads_object` plus the field readers here, so "what is a valid body" is
decided in one place and each message module only lists its fields.

Why strict: `json.loads(bytes)` accepts more than the contract allows:
UTF-16/32 and a BOM, UTF-8-encoded surrogates, `NaN`/`Infinity` and numbers
that overflow a float. A value read that way may not survive being written
again (a NaN in an audit record makes `allow_nan=False` fail in the sink that
writes it), so what `loads_object` accepts, `dumps` writes back unchanged.

Every reader takes `error`, the message's own error class (EnvelopeError,
RecordError, nmc.audit's AuditRecordError, ...), so a caller catches the error of the
message it reads and every reason is one line naming `what` was read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from nmc.errors import ProtocolError

__all__ = ["ErrorFactory", "WireError", "dumps", "field", "loads_object", "number", "optional_number",
           "require_protocol", "strings"]

# What a reader raises: a message's own error class (or anything built from a one-line reason).
ErrorFactory = Callable[[str], Exception]
# A JSON escape of a UTF-16 surrogate (\uD800-\uDFFF); only then is the slower check needed.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class WireError(ProtocolError, ValueError):
    """Bytes that are not a valid message of the wire contract; `reason` is one line fit for a reply or a log."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a finite number")
    return value


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key: which one a reader sees depends on the parser, so a signed body
    # could mean one thing to the verifier and another to a sink. Refuse it.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def dumps(obj: Mapping[str, Any], *, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact UTF-8 JSON without NaN/Infinity (ValueError for them): the bytes that get signed.

    `default` turns values JSON has no type for into something it has (the registry
    writes a YAML date fact as text rather than not register); None refuses them.
    """
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=default).encode("utf-8")


def loads_object(body: bytes, what: str, *, error: ErrorFactory = WireError) -> dict[str, Any]:
    """The JSON object in `body`; `error("<what> is ...")` for anything else.

    Refused: bytes that are not strict UTF-8 (or start with a BOM), NaN/Infinity and
    numbers beyond a float, duplicate keys, lone surrogate escapes, non-objects.
    """
    try:
        text = body.decode("utf-8")  # strict: no surrogates, no UTF-16/32 guessing
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8 JSON: invalid UTF-8 at byte {exc.start}") from None
    if text.startswith("\ufeff"):
        raise error(f"{what} is not UTF-8 JSON: it starts with a byte order mark")
    try:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                         object_pairs_hook=_refuse_duplicates)
    except RecursionError:
        raise error(f"{what} is nested too deeply") from None
    except ValueError as exc:
        raise error(f"{what} is not JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(obj, dict):
        raise error(f"{what} must be a JSON object, got {type(obj).__name__}")
    if _SURROGATE_ESCAPE.search(text):
        try:
            dumps(obj)
        except (UnicodeEncodeError, ValueError, RecursionError):
            raise error(f"{what} holds a lone surrogate escape, not Unicode text") from None
    return obj


def require_protocol(obj: Mapping[str, Any], expected: str, what: str, *, error: ErrorFactory = WireError) -> None:
    """`error` unless the object's `protocol` field is `expected`."""
    if obj.get("protocol") != expected:
        raise error(f"{what} protocol must be {expected!r}, got {obj.get('protocol')!r}")


def field(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str, *,
          error: ErrorFactory = WireError) -> Any:
    """The value of the required field `name`, of type `kind` (a JSON true/false is never a number)."""
    if name not in obj:
        raise error(f"{what} has no '{name}' field")
    value = obj[name]
    # bool is an int subclass in Python: refuse true/false where a number is due.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise error(f"{what} field '{name}' has the wrong type (bool)")
    if not isinstance(value, kind):
        raise error(f"{what} field '{name}' has the wrong type ({type(value).__name__})")
    return value


def number(obj: Mapping[str, Any], name: str, what: str, *, error: ErrorFactory = WireError) -> float:
    """The required field `name` as a finite float (an integer beyond float range is refused too)."""
    value = field(obj, name, (int, float), what, error=error)
    try:
        result = float(value)
    except OverflowError:
        result = math.inf  # an integer beyond float range
    if not math.isfinite(result):
        raise error(f"{what} field '{name}' must be a finite number")
    return result


def optional_number(obj: Mapping[str, Any], name: str, what: str, *,
                    error: ErrorFactory = WireError) -> float | None:
    """The field `name` as a finite float, or None when it is absent or null."""
    if obj.get(name) is None:
        return None
    return number(obj, name, what, error=error)


def strings(obj: Mapping[str, Any], name: str, what: str, *, error: ErrorFactory = WireError) -> tuple[str, ...]:
    """The required field `name` as a tuple of strings (a JSON list holding only strings)."""
    value = obj.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise error(f"{what} field '{name}' must be a list of strings")
    return tuple(value)
