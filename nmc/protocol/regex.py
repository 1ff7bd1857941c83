"""Regular expressions that run in linear time: every pattern a request or a policy brings.

A filter such as `identity(/^(?:.|.|.)*Q/)` comes from the network and is evaluated
by every node before authorization. Python's backtracking `re` took 40-70 s of CPU
on it, during which the node (and anything sharing its event loop) answered nobody.
RE2 (google-re2) guarantees time linear in the text and bounds its memory, so no
pattern can stall a node; the price is RE2's syntax, which has no backreferences
(`\\1`) and no look-around (`(?=...)`, `(?<=...)`): such patterns are refused where
they are parsed (the client, `nmc policy lint`, the node), with RE2's reason.

Compiled patterns are cached (a node sees the same few filters again and again);
patterns longer than `MAX_PATTERN` characters are refused outright so that compiling
stays cheap too. docs/filters.md documents the syntax.

RE2 is imported on the first pattern compiled, not with this module: it is ~2.4 MiB of
resident memory (its extension and libstdc++) that an idle node does not need. The
patterns of nmc's own DDLs are declared with `builtin_pattern`, so building those DDLs
does not compile them; tests/unit/test_protocol_regex.py compiles every one of them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol

from nmc.errors import ProtocolError

__all__ = ["MAX_PATTERN", "Pattern", "RegexError", "builtin_pattern", "builtin_patterns", "compile_pattern",
           "regex_problem", "search"]

MAX_PATTERN = 1024  # characters; a filter or policy pattern longer than this is refused
_MAX_MEM = 8 << 20  # bytes RE2 may use for one compiled pattern


class RegexError(ProtocolError, ValueError):
    """A pattern RE2 does not accept (or one that is too long); `reason` says why in one line."""


class Pattern(Protocol):
    """What nmc uses of a compiled pattern."""

    def search(self, text: str) -> object | None:
        """A match object where the pattern occurs in `text`, else None."""


_BUILTIN: set[str] = set()  # patterns of nmc's own DDLs, compiled by a unit test instead of at import


def builtin_pattern(pattern: str) -> str:
    """`pattern`, recorded as one of nmc's own: `regex_problem` accepts it without compiling it.

    Only for constant patterns shipped with nmc, which tests/unit compiles with RE2 (see
    `builtin_patterns`); a pattern from a plugin, a request or a policy is always compiled.
    """
    _BUILTIN.add(pattern)
    return pattern


def builtin_patterns() -> frozenset[str]:
    """Every pattern declared with `builtin_pattern` so far (for the test that compiles them)."""
    return frozenset(_BUILTIN)


@lru_cache(maxsize=1)
def _re2() -> tuple[Any, Any]:
    """The re2 module and nmc's options, imported and built on first use."""
    # google-re2 ships no type information; ~2.4 MiB resident, so only once a pattern is compiled
    import re2  # type: ignore[import-untyped]

    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    options.max_mem = _MAX_MEM
    return re2, options


@lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Pattern:
    """The compiled pattern (cached); RegexError when RE2 refuses it or it is too long."""
    if len(pattern) > MAX_PATTERN:
        raise RegexError(f"pattern longer than {MAX_PATTERN} characters")
    re2, options = _re2()
    try:
        return re2.compile(pattern, options=options)
    except re2.error as exc:
        raise RegexError(_reason(exc)) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise RegexError(str(exc) or type(exc).__name__) from None


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` is not an acceptable (RE2) regular expression, or None where it is."""
    if pattern in _BUILTIN:
        return None
    try:
        compile_pattern(pattern)
    except RegexError as exc:
        return exc.reason
    return None


def search(pattern: str, text: str) -> bool:
    """Whether `pattern` occurs in `text` (RegexError for a refused pattern)."""
    return compile_pattern(pattern).search(text) is not None


def _reason(exc: BaseException) -> str:
    detail = exc.args[0] if exc.args else exc
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    text = str(detail)
    if "invalid perl operator: (?" in text or "invalid escape sequence: \\" in text and text[-1:].isdigit():
        text += " (look-around and backreferences are not supported: nmc uses RE2 syntax)"
    return text
