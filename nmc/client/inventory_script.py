"""Inventory scripts: MCollective's inventory.mc as a small TOML file, parsed and rendered without eval.

A script either prints one line per node::

    format = "%s:\\t\\t\\t%s"
    fields = ["identity", 'facts["lsbdistdescription"]']

or a paged report with a heading repeated every `length` body lines::

    [page]
    length = 20
    heading = "Node Report {time}"
    body = "{0:<17} {1}"
    fields = ["identity", "facts.customer"]

Field expressions are a tiny language parsed by hand (never `eval`): a root
name (`identity`, `facts`, `stats`, ...) followed by `.name`, `["key"]` or
`[0]` steps. Everything here is pure: strings and dicts in, lines out; the
only I/O is `load_script` reading the file. See docs/inventory.md.
"""

from __future__ import annotations

import difflib
import json
import re
import string
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from nmc.errors import ClientError

__all__ = ["DEFAULT_PAGE_LENGTH", "FIELD_ROOTS", "FieldExpr", "InventoryScript", "InventoryScriptError",
           "LineFormat", "Page", "display_value", "load_script", "lookup_path", "parse_field", "parse_script",
           "render"]

FIELD_ROOTS = ("agents", "classes", "collectives", "facts", "identity", "main_collective", "stats", "uptime",
               "version")
# Ruby's formats (which MCollective's formatted_inventory used) default to 60 lines a page.
DEFAULT_PAGE_LENGTH = 60
_HEADING_KEYS = ("page", "time")
_NAME = re.compile(r"[\w:@-]+")
_ROOT = re.compile(r"[A-Za-z_]\w*")
_PRINTF = re.compile(r"%(?:\((?P<key>[^)]*)\))?(?P<flags>[-#0 +]*)(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d+))?[hlL]?(?P<conv>[diouxXeEfFgGcrsa%])")
# Lines only MCollective's Ruby inventory.mc DSL has: `inventory do`, `format "..."`, `fields { [...] }`,
# and formatted_inventory's `page_length 20`, `page_heading <<TOP`, `page_body <<BODY`.
_RUBY_DSL = re.compile(r"^[ \t]*(?:(?:formatted_)?inventory[ \t]+do\b|format[ \t]+[\"']|fields[ \t]*(?:\{|do\b)"
                       r"|page_(?:length|heading|body)\b)", re.MULTILINE)
_SAMPLE = {"s": "", "r": "", "a": "", "c": "x", "e": 0.0, "E": 0.0, "f": 0.0, "F": 0.0, "g": 0.0, "G": 0.0}
_MISSING = object()


class InventoryScriptError(ClientError, ValueError):
    """A script that cannot be used, or a line it cannot render; `source` names the file."""

    def __init__(self, reason: str, source: str = "<script>") -> None:
        super().__init__(reason, where=source)
        self.source = source


def display_value(value: Any) -> str:
    """How a value reads in a report: strings as they are, structures and booleans as compact JSON."""
    if value is None or value is _MISSING:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple, bool)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def lookup_path(node: Any, steps: Sequence[str | int]) -> tuple[bool, Any]:
    """Walk mappings by key and lists by index; (False, None) as soon as a step does not exist."""
    for step in steps:
        if isinstance(node, Mapping):
            if step not in node:
                return False, None
            node = node[step]
        elif isinstance(node, (list, tuple)) and not isinstance(step, str):
            if not -len(node) <= step < len(node):
                return False, None
            node = node[step]
        else:
            return False, None
    return True, node


@dataclass(frozen=True)
class FieldExpr:
    """A parsed field expression: a root name and the steps into it (a quoted step may be a dotted path)."""

    text: str
    root: str
    steps: tuple[str | int, ...] = ()
    # Quoted keys behave like `-F` and `get_fact`: the literal key if it exists, else a dotted path.
    quoted: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if len(self.quoted) != len(self.steps):
            raise ValueError("quoted needs one flag per step")

    def evaluate(self, inventory: Mapping[str, Any]) -> Any:
        """The value in one node's inventory (identity included), or None when any step is missing."""
        if self.root not in inventory:
            return None
        node: Any = inventory[self.root]
        for step, quoted in zip(self.steps, self.quoted):
            found, value = lookup_path(node, [step])
            if not found and quoted and isinstance(step, str) and "." in step:
                found, value = lookup_path(node, step.split("."))
            if not found:
                return None
            node = value
        return node


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """A '...' or "..." string starting at pos (backslash escapes the next character); returns it and the end."""
    quote, out, i = text[pos], [], pos + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == quote:
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise ValueError(f"unterminated string starting at column {pos + 1}")


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def parse_field(text: str) -> FieldExpr:
    """`identity`, `facts["x"]`, `facts.os.family`, `stats["total"]`, `classes[0]` ...; ValueError otherwise."""
    src = text.strip()
    m = _ROOT.match(src)
    if m is None:
        raise ValueError(f"field {text!r} must start with one of: {', '.join(FIELD_ROOTS)}")
    root = m.group()
    if root not in FIELD_ROOTS:
        close = difflib.get_close_matches(root, FIELD_ROOTS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown field {root!r} in {text!r} ({hint}known: {', '.join(FIELD_ROOTS)})")
    steps: list[str | int] = []
    quoted: list[bool] = []
    pos = m.end()
    while pos < len(src):
        if src[pos] == ".":
            name = _NAME.match(src, pos + 1)
            if name is None:
                raise ValueError(f"expected a name after '.' at column {pos + 2} of {text!r}")
            steps.append(name.group())
            quoted.append(False)
            pos = name.end()
        elif src[pos] == "[":
            pos = _skip_spaces(src, pos + 1)
            if pos < len(src) and src[pos] in "\"'":
                try:
                    key, pos = _quoted(src, pos)
                except ValueError as exc:
                    raise ValueError(f"{exc} in {text!r}") from None
                steps.append(key)
                quoted.append(True)
            else:
                num = re.compile(r"-?\d+").match(src, pos)
                if num is None:
                    raise ValueError(f"expected a quoted key or a number after '[' in {text!r}")
                steps.append(int(num.group()))
                quoted.append(False)
                pos = num.end()
            pos = _skip_spaces(src, pos)
            if pos >= len(src) or src[pos] != "]":
                raise ValueError(f"expected ']' at column {pos + 1} of {text!r}")
            pos += 1
        else:
            raise ValueError(f"unexpected {src[pos]!r} at column {pos + 1} of {text!r}")
    return FieldExpr(text=src, root=root, steps=tuple(steps), quoted=tuple(quoted))


def _printf_count(template: str) -> int | None:
    """How many values a printf-style template takes, or None when it has no conversion at all."""
    specs = [m for m in _PRINTF.finditer(template) if m.group("conv") != "%"]
    if not specs:
        return None
    for m in specs:
        if m.group("key") is not None:
            raise ValueError("named %(key)s conversions are not supported; list the values in fields")
        if m.group("width") == "*" or m.group("prec") == "*":
            raise ValueError("'*' widths are not supported; write the width into the format")
    try:
        template % tuple(_SAMPLE.get(m.group("conv"), 0) for m in specs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad printf format: {exc}") from None
    return len(specs)


def _brace_count(template: str) -> int:
    """How many values a {}-style template takes; every position must be used, names are not allowed."""
    auto = 0
    manual: set[int] = set()
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad format: {exc}") from None
    for _, name, spec, _ in parts:
        if name is None:
            continue
        if name == "":
            auto += 1
        elif name.isdigit():
            manual.add(int(name))
        else:
            raise ValueError(f"format field {{{name}}} is not positional; use {{}} or {{0}}, {{1}}, ...")
        if spec and "{" in spec:
            raise ValueError("nested {} inside a format spec is not supported")
    if auto and manual:
        raise ValueError("format mixes {} and {0}-style fields")
    if manual and manual != set(range(max(manual) + 1)):
        raise ValueError(f"format skips position(s) {sorted(set(range(max(manual) + 1)) - manual)}")
    return auto or (max(manual) + 1 if manual else 0)


def _value_for_format(value: Any) -> Any:
    """Numbers stay numbers (so `{:.1f}` and `%d` work); the rest becomes report text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return display_value(value)


@dataclass(frozen=True)
class LineFormat:
    """One line per node: a printf- or {}-style template filled with the fields' values."""

    template: str
    fields: tuple[FieldExpr, ...]
    printf: bool

    @classmethod
    def parse(cls, template: str, fields: Sequence[str]) -> LineFormat:
        """Check the template and the field expressions together; ValueError says what does not fit."""
        exprs = tuple(parse_field(f) for f in fields)
        count = _printf_count(template)
        printf = count is not None
        if count is None:
            count = _brace_count(template)
        if count != len(exprs):
            raise ValueError(f"format takes {count} value(s) but fields lists {len(exprs)}")
        return cls(template=template, fields=exprs, printf=printf)

    def values(self, inventory: Mapping[str, Any]) -> list[Any]:
        """The fields' raw values for one node (None where missing)."""
        return [f.evaluate(inventory) for f in self.fields]

    def render(self, inventory: Mapping[str, Any]) -> str:
        """The line for one node; ValueError when a value does not fit its conversion (e.g. `%d` on text)."""
        args = [_value_for_format(v) for v in self.values(inventory)]
        try:
            return self.template % tuple(args) if self.printf else self.template.format(*args)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"node {inventory.get('identity', '?')}: cannot format {args!r}: {exc}") from None


@dataclass(frozen=True)
class Page:
    """A paged report: the heading (with {time} and {page}) before every `length` body lines."""

    body: LineFormat
    heading: str = ""
    length: int = DEFAULT_PAGE_LENGTH

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"page length must be at least 1, got {self.length}")
        self.heading_lines(datetime(2000, 1, 1).astimezone(), 1)  # fail early on bad placeholders

    def heading_lines(self, now: datetime, page: int) -> list[str]:
        """The heading of one page, placeholders filled."""
        if not self.heading:
            return []
        try:
            text = self.heading.format_map({"time": now.strftime("%Y-%m-%d %H:%M:%S %z").rstrip(), "page": page})
        except KeyError as exc:
            raise ValueError(f"heading placeholder {{{exc.args[0]}}} is unknown "
                             f"(known: {', '.join('{' + k + '}' for k in _HEADING_KEYS)})") from None
        except (IndexError, ValueError) as exc:
            raise ValueError(f"bad heading: {exc} (write literal braces as {{{{ and }}}})") from None
        return text.splitlines()


@dataclass(frozen=True)
class InventoryScript:
    """A parsed script: either `lines` (format + fields) or `page` (a paged report)."""

    source: str
    lines: LineFormat | None = None
    page: Page | None = None

    @property
    def body(self) -> LineFormat:
        """The per-node line, whichever kind of script this is."""
        body = self.lines or (self.page.body if self.page else None)
        assert body is not None
        return body


def _expect(table: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{where}{key} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _fields(table: Mapping[str, Any], where: str) -> list[str]:
    if "fields" not in table:
        raise ValueError(f"{where}fields is missing (a list of field expressions)")
    fields = _expect(table, "fields", list, where)
    if not fields or not all(isinstance(f, str) for f in fields):
        raise ValueError(f"{where}fields must be a non-empty list of strings")
    return fields


def _unknown(table: Mapping[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise ValueError(f"unknown key {where}{extra[0]} (expected {', '.join(sorted(known))})")


def _parse_table(data: Mapping[str, Any], source: str) -> InventoryScript:
    _unknown(data, {"format", "fields", "page"}, "")
    if "page" in data:
        if "format" in data or "fields" in data:
            raise ValueError("use either format/fields or a [page] table, not both")
        page = data["page"]
        if not isinstance(page, dict):
            raise ValueError("page must be a table: [page]")
        _unknown(page, {"body", "fields", "heading", "length"}, "page.")
        if "body" not in page:
            raise ValueError("page.body is missing (the line printed for each node)")
        length = _expect(page, "length", int, "page.") if "length" in page else DEFAULT_PAGE_LENGTH
        heading = _expect(page, "heading", str, "page.") if "heading" in page else ""
        body = LineFormat.parse(_expect(page, "body", str, "page."), _fields(page, "page."))
        return InventoryScript(source=source, page=Page(body=body, heading=heading, length=length))
    if "format" not in data:
        raise ValueError("format is missing (or write a [page] table)")
    return InventoryScript(source=source, lines=LineFormat.parse(_expect(data, "format", str, ""),
                                                                 _fields(data, "")))


def parse_script(text: str, source: str = "<script>") -> InventoryScript:
    """Parse a script's TOML text; InventoryScriptError names the source and what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        ruby = _RUBY_DSL.search(text)
        if ruby is not None:
            number = text.count("\n", 0, ruby.start()) + 1
            line = text.splitlines()[number - 1].strip()
            shown = line if len(line) <= 40 else line[:37] + "..."
            raise InventoryScriptError(
                f"this is MCollective's Ruby inventory.mc DSL (line {number}: `{shown}`), which nmc "
                "does not run; nmc scripts are TOML, e.g. format = \"%s\" and fields = [\"identity\"]: see "
                "docs/inventory.md, 'From an MCollective inventory.mc'", source) from None
        raise InventoryScriptError(f"TOML syntax: {exc}", source) from None
    try:
        return _parse_table(data, source)
    except (TypeError, ValueError) as exc:
        raise InventoryScriptError(str(exc), source) from None


def load_script(path: str | Path) -> InventoryScript:
    """Read and parse a script file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InventoryScriptError(f"cannot read the script: {reason}", str(path)) from None
    return parse_script(text, str(path))


def render(script: InventoryScript, inventories: Iterable[Mapping[str, Any]], now: datetime) -> list[str]:
    """The report's lines for these nodes (each mapping carries `identity`), sorted by identity."""
    nodes = sorted(inventories, key=lambda inv: str(inv.get("identity", "")))
    out: list[str] = []
    try:
        for i, inv in enumerate(nodes):
            if script.page is not None and i % script.page.length == 0:
                out.extend(script.page.heading_lines(now, i // script.page.length + 1))
            out.append(script.body.render(inv))
    except ValueError as exc:
        raise InventoryScriptError(str(exc), script.source) from None
    return out
