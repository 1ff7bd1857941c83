"""Named input validators (MCollective's `:validation => :shellsafe` and friends). Pure.

An input's `validation` is either one of the names in :data:`VALIDATORS`
(exactly, e.g. ``"shellsafe"``) or else a regular expression. The names are
bare lower-case words no sensible pattern consists of; to match one of them
literally as a regex, write it so it is no longer a bare name, e.g.
``"(?:hostname)"``.

A validator takes the string value and returns why it is refused, or None:
a refusal is an expected outcome, so it is a value, not an exception.
"""

from __future__ import annotations

import ipaddress as _ip
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType

__all__ = ["VALIDATORS", "Validator", "hostname", "ipaddress", "ipv4address", "ipv6address", "is_validator_name",
           "shellsafe"]

Validator = Callable[[str], str | None]

# MCollective's shellsafe refused ` $ ; | && > <; a lone & (background a command) and line breaks
# (a second command) are just as dangerous in a shell, so they are refused too.
_SHELL_UNSAFE = ("`", "$", ";", "|", "&", ">", "<", "\n", "\r")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def shellsafe(value: str) -> str | None:
    """Refuse characters a shell would treat as command syntax."""
    for char in _SHELL_UNSAFE:
        if char in value:
            return f"must not contain {char!r} (shellsafe)"
    return None


def _parses(parse: Callable[[str], object], value: str, problem: str) -> str | None:
    """None when `parse` takes the value, else `problem`."""
    try:
        parse(value)
    except ValueError:
        return problem
    return None


def ipv4address(value: str) -> str | None:
    """A dotted-quad IPv4 address."""
    return _parses(_ip.IPv4Address, value, "is not an IPv4 address")


def ipv6address(value: str) -> str | None:
    """An IPv6 address in any of its textual forms."""
    return _parses(_ip.IPv6Address, value, "is not an IPv6 address")


def ipaddress(value: str) -> str | None:
    """An IPv4 or IPv6 address."""
    if ipv4address(value) is None or ipv6address(value) is None:
        return None
    return "is not an IP address"


def hostname(value: str) -> str | None:
    """An RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens."""
    name = value.removesuffix(".")
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        return "is not a valid host name"
    return None


VALIDATORS: Mapping[str, Validator] = MappingProxyType({
    "shellsafe": shellsafe,
    "ipv4address": ipv4address,
    "ipv6address": ipv6address,
    "ipaddress": ipaddress,
    "hostname": hostname,
})


def is_validator_name(validation: str) -> bool:
    """True when `validation` names a validator rather than being a regular expression."""
    return validation in VALIDATORS
