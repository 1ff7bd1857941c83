"""Parse filter expressions into syntax trees and print trees back as canonical text.

Grammar (keywords case-insensitive; two terms side by side mean `and`)::

    filter  := or?                          empty text matches everything
    or      := and ("or" and)*
    and     := unary (["and"] unary)*
    unary   := ("not" | "!") unary | primary
    primary := "(" or ")" | term
    term    := PATH OP VALUE                fact:  os.release.major>=12
             | NAME | "quoted" | /regex/    class: apache, role::web, /^web/
             | identity(NAME | "quoted" | /regex/) | agent(NAME | "quoted")

The lexer works on the text directly rather than on a token list, because
what a value is depends on the operator before it: after `=` a value runs to
whitespace or a parenthesis and may contain `=`, `<` or `!`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from nmc.protocol import filter_ast as ast_
from nmc.protocol.filter_ast import KEYWORDS, NAME_STOP_CHARS, FilterSyntaxError, Node

__all__ = ["MAX_DEPTH", "parse", "parse_fact_flag", "to_string"]

# Deeper nesting than this is no real filter; the limit keeps recursion (ours
# and the printer's) far from Python's stack limit for any input.
MAX_DEPTH = 64
_TWO_CHAR_OPS = ("==", "=~", "!=", "<=", ">=")
_ONE_CHAR_OPS = ("=", "<", ">")
_FUNCTIONS = ("identity", "agent")


def parse(text: str) -> Node:
    """Parse a filter expression; raises FilterSyntaxError with the column of the first problem."""
    return _Parser(text).parse_filter()


def parse_fact_flag(text: str) -> ast_.FactTerm:
    """Parse one `-F/--wf` argument, which must be a single fact term (`fact<op>value`)."""
    return _Parser(text).parse_fact_flag()


class _Parser:
    """Recursive descent over one expression; `pos` is the next unread column."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    # -- entry points -------------------------------------------------------

    def parse_filter(self) -> Node:
        self._skip_ws()
        if self._at_end():
            return ast_.MatchAll()
        node = self._or("")
        self._skip_ws()
        if not self._at_end():
            # Juxtaposition consumes any further term, so only a stray ')' ends up here.
            self._fail("the end of the filter (this ')' has no matching '(')")
        return node

    def parse_fact_flag(self) -> ast_.FactTerm:
        self._skip_ws()
        start = self.pos
        path = self._read_name()
        self._skip_ws()
        op = self._read_op()
        if path == "" or op is None:
            self._fail("fact<op>value, e.g. country=us or os.release.major>=12", start)
        self._skip_ws()
        value_pos = self.pos
        term = self._fact_value(path, op)
        self._skip_ws()
        if self._at_end():
            return term
        first = self.text[value_pos]
        if first != '"' and not (first == "/" and term.op == "=~"):
            # MCollective took everything after the operator: -F "os.name=Red Hat".
            return self._fact_term(path, term.op, self.text[value_pos:].rstrip(), value_pos)
        self._fail("the end of the fact term")

    # -- expressions --------------------------------------------------------

    def _or(self, after: str) -> Node:
        operands = [self._and(after)]
        while self._keyword() == "or":
            self.pos += 2
            operands.append(self._and("'or'"))
        return operands[0] if len(operands) == 1 else ast_.Or(tuple(operands))

    def _and(self, after: str = "") -> Node:
        operands = [self._unary(after)]
        while True:
            self._skip_ws()
            if self._at_end() or self.text[self.pos] == ")":
                break
            keyword = self._keyword()
            if keyword == "or":
                break
            if keyword == "and":
                self.pos += 3
                operands.append(self._unary("'and'"))
            else:
                operands.append(self._unary())  # juxtaposition: `/apache/ country=de`
        return operands[0] if len(operands) == 1 else ast_.And(tuple(operands))

    def _unary(self, after: str = "") -> Node:
        self._skip_ws()
        if self._peek() == "!":
            self.pos += 1
            return ast_.Not(self._nested(lambda: self._unary("'!'")))
        if self._keyword() == "not":
            self.pos += 3
            return ast_.Not(self._nested(lambda: self._unary("'not'")))
        return self._primary(after)

    def _nested(self, parse_inner: Callable[[], Node]) -> Node:
        if self.depth >= MAX_DEPTH:
            self._fail(f"at most {MAX_DEPTH} nested parentheses and negations")
        self.depth += 1
        try:
            return parse_inner()
        finally:
            self.depth -= 1

    def _primary(self, after: str) -> Node:
        self._skip_ws()
        start = self.pos
        char = self._peek()
        if char == "" or char in ")=<>!~":  # no term starts with an operator character
            self._fail("a term" + (f" after {after}" if after else ""))
        if char == "(":
            self.pos += 1
            node = self._nested(lambda: self._or("'('"))
            self._skip_ws()
            if self._peek() != ")":
                self._fail(f"')' to close the '(' at column {start + 1}")
            self.pos += 1
            return node
        if char == '"':
            name = self._read_quoted()
            if name == "":
                self._fail("a class name, not an empty string", start)
            return ast_.ClassTerm(name)
        if char == "/":
            return ast_.ClassTerm(self._regex_literal(), regex=True)
        name = self._read_name()
        if name == "":
            self._fail("a term" + (f" after {after}" if after else ""))
        if name.lower() in _FUNCTIONS and self._peek() == "(":
            return self._function(name.lower())
        after_name = self.pos
        self._skip_ws()
        op = self._read_op()
        if op is not None:
            return self._fact_value(name, op)
        self.pos = after_name
        if name.lower() in KEYWORDS:
            self._fail("a term" + (f" after {after}" if after else f", not '{name}'"), start)
        return ast_.ClassTerm(name)

    # -- terms --------------------------------------------------------------

    def _function(self, kind: str) -> Node:
        open_pos = self.pos
        self.pos += 1
        self._skip_ws()
        start = self.pos
        char = self._peek()
        if char == '"':
            name, regex = self._read_quoted(), False
        elif char == "/" and kind == "identity":
            name, regex = self._regex_literal(), True
        else:
            name, regex = self._read_bare(), False
        if not regex and (name == "" or char == "/"):
            what = "a name or /regex/" if kind == "identity" else "an agent name"
            self._fail(f"{what} in {kind}()", start)
        self._skip_ws()
        if self._peek() != ")":
            self._fail(f"')' to close the '(' of {kind}() at column {open_pos + 1}")
        self.pos += 1
        if kind == "identity":
            return ast_.IdentityTerm(name, regex=regex)
        return ast_.AgentTerm(name)

    def _fact_value(self, path: str, op: str) -> ast_.FactTerm:
        self._skip_ws()
        start = self.pos
        char = self._peek()
        if char in ("", "(", ")"):
            self._fail(f"a value after '{op}'")
        if char == '"':
            value = self._read_quoted()
        elif char == "/" and op in ("=", "=~"):
            regex = self._regex_literal() if op == "=~" else self._try_regex_literal()
            if regex is not None:
                return self._fact_term(path, "=~", regex, start)
            value = self._read_bare()  # `path=/usr/bin` is a literal, as in MCollective
        else:
            value = self._read_bare()
        return self._fact_term(path, op, value, start)

    def _fact_term(self, path: str, op: str, value: str, value_pos: int) -> ast_.FactTerm:
        if op == "=~":
            self._check_regex(value, value_pos)
        return ast_.FactTerm(path, op, value)

    # -- lexemes ------------------------------------------------------------

    def _read_op(self) -> str | None:
        pair = self.text[self.pos : self.pos + 2]
        if pair in _TWO_CHAR_OPS:
            self.pos += 2
            return "=" if pair == "==" else pair
        if pair[:1] in _ONE_CHAR_OPS:
            self.pos += 1
            return pair[:1]
        return None

    def _keyword(self) -> str | None:
        """The keyword at pos (after whitespace), unless it is a fact name before an operator."""
        self._skip_ws()
        end = self.pos
        while end < len(self.text) and self._is_name_char(self.text[end]):
            end += 1
        word = self.text[self.pos : end].lower()
        if word not in KEYWORDS:
            return None
        probe = end
        while probe < len(self.text) and self.text[probe].isspace():
            probe += 1
        if self.text[probe : probe + 1] in ("=", "<", ">") or self.text[probe : probe + 2] == "!=":
            return None  # `not=1` is a fact named "not"
        return word

    def _read_name(self) -> str:
        start = self.pos
        if self._peek() == "/":
            return ""
        while not self._at_end() and self._is_name_char(self.text[self.pos]):
            self.pos += 1
        name = self.text[start : self.pos]
        return name if ast_.is_name(name) else ""

    def _read_bare(self) -> str:
        start = self.pos
        while not self._at_end() and not self._ends_bare(self.text[self.pos]):
            self.pos += 1
        return self.text[start : self.pos]

    def _read_quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while not self._at_end():
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == "\\" and self.pos + 1 < len(self.text):
                follower = self.text[self.pos + 1]
                # Only \" and \\ are escapes; other backslashes stay (C:\Program Files).
                out.append(follower if follower in '"\\' else char + follower)
                self.pos += 2
                continue
            out.append(char)
            self.pos += 1
        self._fail(f"'\"' to close the string that starts at column {start + 1}")

    def _regex_literal(self) -> str:
        """Read `/pattern/` at pos, or fail where it never closes."""
        pattern = self._try_regex_literal()
        if pattern is None:
            start = self.pos
            self.pos = len(self.text)
            self._fail(f"'/' to close the regular expression that starts at column {start + 1}")
        return pattern

    def _try_regex_literal(self) -> str | None:
        r"""Read `/pattern/`; `\/` is a slash, and only a `/` before a boundary closes it."""
        start = self.pos
        i = start + 1
        out: list[str] = []
        text = self.text
        while i < len(text):
            char = text[i]
            if char == "\\" and i + 1 < len(text):
                out.append("/" if text[i + 1] == "/" else text[i : i + 2])
                i += 2
                continue
            if char == "/" and (i + 1 == len(text) or self._ends_bare(text[i + 1])):
                self.pos = i + 1
                pattern = "".join(out)
                self._check_regex(pattern, start)
                return pattern
            out.append(char)
            i += 1
        return None

    def _check_regex(self, pattern: str, position: int) -> None:
        problem = ast_.regex_problem(pattern)
        if problem is not None:
            self._fail(f"a valid regular expression, /{pattern}/ is not: {problem}", position)

    # -- helpers ------------------------------------------------------------

    @staticmethod
    def _is_name_char(char: str) -> bool:
        return not char.isspace() and char not in NAME_STOP_CHARS

    @staticmethod
    def _ends_bare(char: str) -> bool:
        return char.isspace() or char in "()"

    def _skip_ws(self) -> None:
        while not self._at_end() and self.text[self.pos].isspace():
            self.pos += 1

    def _at_end(self) -> bool:
        return self.pos >= len(self.text)

    def _peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def _fail(self, expected: str, position: int | None = None) -> NoReturn:
        raise FilterSyntaxError(
            position=self.pos if position is None else position,
            expected=expected,
            expression=self.text,
        )


# -- printing ----------------------------------------------------------------


def to_string(node: Node) -> str:
    """Canonical text of a tree: parse(to_string(node)) == node for every tree."""
    if isinstance(node, ast_.MatchAll):
        return ""
    if isinstance(node, ast_.FactTerm):
        if node.op == "=~":
            return f"{node.path}=~{_regex_text(node.value)}"
        return f"{node.path}{node.op}{_value_text(node.value)}"
    if isinstance(node, ast_.ClassTerm):
        if node.regex:
            return _regex_text(node.name)
        bare = ast_.is_name(node.name) and node.name.lower() not in KEYWORDS
        return node.name if bare else _quoted(node.name)
    if isinstance(node, ast_.IdentityTerm):
        inner = _regex_text(node.name) if node.regex else _argument_text(node.name)
        return f"identity({inner})"
    if isinstance(node, ast_.AgentTerm):
        return f"agent({_argument_text(node.name)})"
    if isinstance(node, ast_.Not):
        inner = to_string(node.operand)
        return f"not ({inner})" if isinstance(node.operand, (ast_.And, ast_.Or)) else f"not {inner}"
    if isinstance(node, ast_.And):
        # Or binds looser so needs parentheses; a nested And keeps them so the tree survives.
        return " and ".join(_grouped(op, (ast_.And, ast_.Or)) for op in node.operands)
    if isinstance(node, ast_.Or):
        # An And inside an Or would parse back without them; they are kept for the reader.
        return " or ".join(_grouped(op, (ast_.And, ast_.Or)) for op in node.operands)
    raise TypeError(f"not a filter node: {node!r}")


def _grouped(node: Node, kinds: tuple[type, ...]) -> str:
    text = to_string(node)
    return f"({text})" if isinstance(node, kinds) else text


def _value_text(value: str) -> str:
    needs_quotes = (
        value == ""
        or value[0] in '"/=~'  # would read as a string, a regex or a longer operator
        or any(c.isspace() or c in "()" for c in value)
    )
    return _quoted(value) if needs_quotes else value


def _argument_text(name: str) -> str:
    needs_quotes = name[0] in '"/' or any(c.isspace() or c in "()" for c in name)
    return _quoted(name) if needs_quotes else name


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _regex_text(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            out.append(pattern[i : i + 2])  # keep escape pairs whole so `\\/` stays two tokens
            i += 2
            continue
        out.append("\\/" if pattern[i] == "/" else pattern[i])
        i += 1
    return "/" + "".join(out) + "/"
