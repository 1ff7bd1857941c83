"""Strict JSON for signed wire bodies: UTF-8 only, finite numbers only, Unicode text only. Pure.

`json.loads(bytes)` accepts more than the contract allows: UTF-16/32 and a
BOM, UTF-8-encoded surrogates, `NaN`/`Infinity` and numbers that overflow a
float. A value read that way may not survive being written again (a NaN in an
audit record makes `allow_nan=False` fail in the sink that writes it), so
every body a signature covers is read with `loads_object` and written with
`dumps_compact`: what one accepts, the other writes back unchanged. The
request and reply envelopes (nmc.protocol.envelope) and audit records both
read through here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["StrictJsonError", "dumps_compact", "loads_object"]

# A JSON escape of a UTF-16 surrogate (\uD800-\uDFFF); only then is the slower check needed.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class StrictJsonError(ValueError):
    """Bytes that are not one strict JSON object; `reason` is one line naming `what` was read."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a finite number")
    return value


def dumps_compact(obj: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON without NaN/Infinity (ValueError for them): the bytes that get signed."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def loads_object(body: bytes, what: str) -> dict[str, Any]:
    """The JSON object in `body`; StrictJsonError("<what> is ...") for anything else."""
    try:
        text = body.decode("utf-8")  # strict: no surrogates, no UTF-16/32 guessing
    except UnicodeDecodeError as exc:
        raise StrictJsonError(f"{what} is not UTF-8 JSON: invalid UTF-8 at byte {exc.start}") from None
    if text.startswith("\ufeff"):
        raise StrictJsonError(f"{what} is not UTF-8 JSON: it starts with a byte order mark")
    try:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise StrictJsonError(f"{what} is nested too deeply") from None
    except ValueError as exc:
        raise StrictJsonError(f"{what} is not JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(obj, dict):
        raise StrictJsonError(f"{what} must be a JSON object, got {type(obj).__name__}")
    if _SURROGATE_ESCAPE.search(text):
        try:
            dumps_compact(obj)
        except (UnicodeEncodeError, ValueError, RecursionError):
            raise StrictJsonError(f"{what} holds a lone surrogate escape, not Unicode text") from None
    return obj
