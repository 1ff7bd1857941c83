"""What a reply's data says, labelled by the action's DDL: shared by `nmc rpc`/`nmc jobs show` and the web console.

Display-neutral and pure: the CLI (nmc.cli.render) prints these pairs as text, the
console (nmc.ops.console) renders them as HTML, so both show a reply the same way:
declared outputs first under their ``display_as`` label (a missing one as its
default), then any other keys; a failed reply only with what it really carries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nmc.protocol.ddl import ActionSpec

__all__ = ["fmt_value", "labelled", "said"]


def fmt_value(value: Any) -> str:
    """One output value as text: structures as JSON (keys sorted), None as nothing."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    return str(value)


def labelled(data: Mapping[str, Any], spec: ActionSpec | None) -> list[tuple[str, Any]]:
    """(label, value) pairs: declared outputs first in DDL order (missing ones as their default), then the rest."""
    if spec is None:
        return list(data.items())
    pairs = [(o.label, data.get(o.name, o.default)) for o in spec.outputs]
    declared = {o.name for o in spec.outputs}
    return pairs + [(k, v) for k, v in data.items() if k not in declared]


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, dict, list, tuple)) and not value)


def said(data: Mapping[str, Any], spec: ActionSpec | None) -> list[tuple[str, Any]]:
    """A failed reply's (label, value) pairs worth showing: the ones it really carries.

    The node fills every declared output a failed action left out with its default, so an output
    still at its default, or empty, says nothing: the failure message says what happened.
    """
    defaults = {o.label: o.default for o in spec.outputs} if spec is not None else {}
    return [(k, v) for k, v in labelled(data, spec)
            if not _empty(v) and not (k in defaults and v == defaults[k] and type(v) is type(defaults[k]))]
