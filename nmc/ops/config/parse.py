"""Pure parsing of MCollective-style ``key = value`` configuration text.

Text in, values out: nothing here reads files or the environment, so the
loader in :mod:`nmc.ops.config.files` owns all I/O and these functions can be
tested with plain strings.
"""

from __future__ import annotations

import math
import re

from nmc.errors import NmcError

__all__ = [
    "RESERVED_ENV",
    "ConfigError",
    "dropin_key",
    "env_key",
    "is_valid_key",
    "parse_bool",
    "parse_cfg",
    "parse_float",
    "parse_int",
]

# Environment variables that steer the tools themselves and so must never be
# mistaken for a setting named e.g. ``config`` or ``ca_dir``.
RESERVED_ENV = frozenset({"NMC_CONFIG", "NMC_SERVER_CONFIG", "NMC_POLICY_CONFIG", "NMC_AUDIT_CONFIG",
                          "NMC_CONSOLE_CONFIG", "NMC_ETC_DIR", "NMC_CA_DIR", "NMC_DEBUG", "NMC_LOG_FORMAT", "NMC_STATE_DIR"})

ENV_PREFIX = "NMC_"

# Dotted segments of letters, digits, '_' and '-': every key MCollective and
# Choria ship fits, and anything else is far more likely a typo.
_KEY_RE = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})

# Long lines are cut in error messages so the message stays one readable line.
_SHOWN_CHARS = 60


class ConfigError(NmcError):
    """A configuration file, setting or value that cannot be used.

    ``path`` and ``line`` say where the problem is when it comes from a file;
    ``reason`` says what is wrong. ``str()`` gives one line, ``path:line:
    reason`` when both are known.
    """

    def __init__(self, reason: str, path: str | None = None, line: int | None = None) -> None:
        super().__init__(reason)
        self.path = path
        self.line = line

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.reason, self.path, self.line))

    def __str__(self) -> str:
        if self.path is not None and self.line is not None:
            return f"{self.path}:{self.line}: {self.reason}"
        return self.reason


def _shown(text: str) -> str:
    """Quote ``text`` for an error message, shortened to keep it on one line."""
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 3] + "..."
    return repr(text)


def is_valid_key(key: str) -> bool:
    """True if ``key`` (already lower-cased) is a well-formed setting name."""
    return _KEY_RE.fullmatch(key) is not None


def parse_cfg(text: str, origin_path: str) -> list[tuple[str, str, int]]:
    """Parse config text into ``(key, value, line_number)`` in file order.

    Keys are lower-cased (so they meet their environment overrides, which
    cannot carry case); values keep their case and any ``#`` they contain.
    Raises :class:`ConfigError` naming ``origin_path`` and the line.
    """
    entries: list[tuple[str, str, int]] = []
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"expected 'key = value', got {_shown(line)}", origin_path, number)
        key = key.strip().lower()
        if not key:
            raise ConfigError(f"missing key before '=' in {_shown(line)}", origin_path, number)
        if not is_valid_key(key):
            raise ConfigError(
                f"invalid key {_shown(key)}: use letters, digits, '_', '-' and '.' between parts",
                origin_path,
                number,
            )
        entries.append((key, value.strip(), number))
    return entries


def dropin_key(plugin: str, key: str) -> str:
    """The full key that ``key`` inside ``plugin.d/<plugin>.cfg`` stands for."""
    return f"plugin.{plugin.lower()}.{key}"


def env_key(name: str) -> str | None:
    """The setting an environment variable overrides, or None if it is not one.

    ``NMC_PLUGIN__NATS__SERVERS`` -> ``plugin.nats.servers``. Variables
    without the prefix and the reserved names give None; a variable with the
    prefix whose rest cannot be a key raises :class:`ConfigError`, because the
    user clearly meant to set something.
    """
    if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
        return None
    key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
    if not is_valid_key(key):
        raise ConfigError(f"environment variable {name} does not name a setting (write '.' as '__')")
    return key


def parse_bool(text: str) -> bool | None:
    """true/yes/1/on and false/no/0/off (any case) as a bool; None otherwise."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None


def parse_int(text: str) -> int | None:
    """A base-10 integer, or None if ``text`` is not one."""
    try:
        return int(text.strip(), 10)
    except ValueError:
        return None


def parse_float(text: str) -> float | None:
    """A finite number, or None; NaN and infinity make no sense as timeouts."""
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None
