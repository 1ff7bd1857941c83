"""The ActionPolicy language: policy files and the groups file, parsed into values (PURE: text in).

A policy file (`<agent>.policy`, or `default.policy`)::

    # comments and blank lines are ignored
    policy default deny
    allow   cert=alice                  *                    *
    allow   sysadmins                   restart status       environment=staging
    allow   /^cert=ops-/                runonce              (environment=production and puppet_enabled=false) or environment=development
    deny    *                           *                    *                     role::db

Rule columns: `allow|deny`, callers, actions, facts, optional classes.
Columns are separated by tabs when the line has a tab (MCollective's own
files), else by runs of two or more spaces, else by single spaces: then
every column must be one word, so only lines of 4 or 5 words are accepted
(`allow cert=alice * *`). Inside a column, list items are space-separated.

The groups file: `<group> <caller> <caller>...` per line.

Parsing never stops at the first problem: every problem becomes a
`PolicyIssue` (`puppet.policy:4: error: ...`), so `nmc policy lint` can
report them all, and evaluation can refuse a file that has any error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from nmc.protocol.filter import And, ClassTerm, FilterSyntaxError, MatchAll, Node, parse
from nmc.protocol.filter_ast import regex_problem
from nmc.protocol.regex import Pattern, compile_pattern
from nmc.protocol.unsigned import UNSIGNED_CALLER

__all__ = [
    "GROUPS_FILE",
    "Groups",
    "PolicyFile",
    "PolicyIssue",
    "Rule",
    "Severity",
    "parse_groups",
    "parse_policy",
    "split_columns",
]

GROUPS_FILE = "groups"
Severity = Literal["error", "warning"]

_WORD = re.compile(r"[A-Za-z0-9_-]+")
_GROUP_NAME = re.compile(r"[A-Za-z0-9_.@-]+")
_CALLER_ID = re.compile(r"[A-Za-z0-9_-]+=\S+")
_TABS = re.compile(r"[ ]*\t[ \t]*")
_SPACES = re.compile(r" {2,}")
_COLUMN_NAMES = ("allow|deny", "callers", "actions", "facts", "classes")


@dataclass(frozen=True)
class PolicyIssue:
    """One problem found in a policy directory: where (`file:line`), how bad, and what."""

    source: str  # file name inside the policy directory
    line: int  # 1-based; 0 = the file as a whole
    message: str
    severity: Severity = "error"

    @property
    def where(self) -> str:
        """`puppet.policy:4`, or just the file name for whole-file problems."""
        return f"{self.source}:{self.line}" if self.line else self.source

    def __str__(self) -> str:
        return f"{self.where}: {self.severity}: {self.message}"


@dataclass(frozen=True)
class Caller:
    """One item of a callers column: `*`, an exact caller id, a `/regex/` or a group name."""

    kind: Literal["any", "exact", "regex", "group"]
    text: str
    pattern: Pattern | None = field(default=None, compare=False)  # RE2 (nmc.protocol.regex)

    def matches(self, caller: str, groups: Groups) -> bool:
        """True where `caller` (always a verified `cert=<name>`) is this item."""
        if self.kind == "any":
            return True
        if self.kind == "exact":
            return caller == self.text  # exact: never a substring match
        if self.kind == "regex":
            assert self.pattern is not None
            return self.pattern.search(caller) is not None
        return caller in groups.members.get(self.text, frozenset())


@dataclass(frozen=True)
class Rule:
    """One `allow|deny` line, compiled: nothing is parsed again when it is evaluated."""

    allow: bool
    callers: tuple[Caller, ...]
    actions: frozenset[str] | None  # None = any action (`*`)
    condition: Node  # facts and classes columns as one filter tree (MatchAll for `* *`)
    source: str  # `puppet.policy:4`
    text: str  # the line as written

    @property
    def groups(self) -> tuple[str, ...]:
        """Group names this rule's callers column refers to."""
        return tuple(c.text for c in self.callers if c.kind == "group")

    def applies_to(self, caller: str, action: str, groups: Groups) -> bool:
        """Caller and action columns match (facts and classes are checked by the caller)."""
        if self.actions is not None and action not in self.actions:
            return False
        return any(c.matches(caller, groups) for c in self.callers)


@dataclass(frozen=True)
class PolicyFile:
    """A parsed `<agent>.policy`: its rules in order, its default and every issue found."""

    name: str  # `puppet.policy`
    rules: tuple[Rule, ...] = ()
    default_allow: bool = False  # `policy default allow|deny`; deny when not given
    default_source: str = ""  # `puppet.policy:1`, empty when the default is implicit
    issues: tuple[PolicyIssue, ...] = ()

    @property
    def agent(self) -> str:
        """The agent this file governs (`default` for default.policy)."""
        return self.name.removesuffix(".policy")

    @property
    def errors(self) -> tuple[PolicyIssue, ...]:
        """Issues that make the file unusable (evaluation then denies every request for it)."""
        return tuple(i for i in self.issues if i.severity == "error")


@dataclass(frozen=True)
class Groups:
    """The groups file: group name -> the exact callers in it."""

    members: dict[str, frozenset[str]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # group -> where its bad line is (`groups:3`)
    issues: tuple[PolicyIssue, ...] = ()
    present: bool = False  # False when the directory has no groups file
    unreadable: bool = False  # the file exists but could not be read: no group can be trusted

    def problem(self, group: str) -> str | None:
        """Why a rule may not use `group` (unknown, or defined by a bad line), or None where it may."""
        if self.unreadable:
            return f"group {group!r}: the groups file cannot be read"
        if group in self.broken:
            return f"group {group!r} is defined by a bad line ({self.broken[group]})"
        if group not in self.members:
            where = "the groups file" if self.present else "a groups file (there is none)"
            return f"unknown group {group!r}: not defined in {where}"
        return None

    @property
    def errors(self) -> tuple[PolicyIssue, ...]:
        """Issues that make the groups file unusable."""
        return tuple(i for i in self.issues if i.severity == "error")


class _LineError(Exception):
    """Internal: one line's problem, turned into a PolicyIssue by the file parser."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _skip(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def split_columns(line: str) -> tuple[list[str], str]:
    """The columns of one rule line and the separator that was used (`tabs`, `spaces` or `space`).

    Tabs when the line has a tab; else runs of two or more spaces; else
    single spaces (then each column is one word).
    """
    text = line.strip()
    if "\t" in text:
        return [c.strip() for c in _TABS.split(text)], "tabs"
    if _SPACES.search(text):
        return _SPACES.split(text), "spaces"
    return text.split(" "), "space"


def _columns(line: str) -> list[str]:
    columns, separator = split_columns(line)
    keyword = line.split()[0]
    if separator == "tabs" and columns[0] != keyword:
        raise _LineError(f"a space follows {keyword!r} but other columns are separated by tabs: "
                         "separate every column the same way")
    if separator == "space" and len(columns) > 5:
        # With single spaces a column cannot hold a list: 6 words could be read several ways.
        raise _LineError(f"ambiguous: {len(columns)} words separated by single spaces; separate the columns "
                         "(allow|deny, callers, actions, facts[, classes]) with tabs or two or more spaces")
    if not 4 <= len(columns) <= 5:
        how = {"tabs": "tab-separated columns", "spaces": "columns separated by two or more spaces",
               "space": "space-separated columns"}[separator]
        found = " | ".join(f"{name}={col!r}" for name, col in zip(_COLUMN_NAMES, columns))
        if len(columns) > 5:
            found += " | " + " | ".join(repr(c) for c in columns[5:])
        hint = ""
        if separator == "spaces" and len(columns) < 4:
            hint = " (on a line aligned with spaces, a single space does not separate columns)"
        raise _LineError(f"expected 4 or 5 {how} (allow|deny, callers, actions, facts[, classes]), "
                         f"found {len(columns)}: {found}{hint}")
    return columns


def _caller(item: str) -> Caller:
    if item == "*":
        return Caller("any", item)
    if len(item) >= 2 and item.startswith("/") and item.endswith("/"):
        problem = regex_problem(item[1:-1])
        if problem is not None:
            raise _LineError(f"callers column: invalid regular expression {item}: {problem}")
        return Caller("regex", item, compile_pattern(item[1:-1]))
    if "=" in item:
        if not _CALLER_ID.fullmatch(item):
            raise _LineError(f"callers column: {item!r} is not a caller (cert=<name>, /regex/, a group or *)")
        return Caller("exact", item)
    if not _GROUP_NAME.fullmatch(item):
        raise _LineError(f"callers column: {item!r} is not a caller (cert=<name>, /regex/, a group or *)")
    return Caller("group", item)


def _actions(column: str) -> frozenset[str] | None:
    items = column.split()
    if "*" in items:
        return None
    for item in items:
        if not _WORD.fullmatch(item):
            hint = " (did the columns shift? callers come before actions)" if "=" in item else ""
            raise _LineError(f"actions column: {item!r} is not an action name{hint}")
    return frozenset(items)


def _facts(column: str) -> Node:
    if column == "*":
        return MatchAll()
    try:
        return parse(column)
    except FilterSyntaxError as exc:
        raise _LineError(f"facts column: {exc}") from exc


def _classes(column: str) -> list[Node]:
    if column == "*":
        return []
    terms: list[Node] = []
    for item in column.split():
        if item == "*":
            continue
        try:
            term = parse(item)
        except FilterSyntaxError as exc:
            raise _LineError(f"classes column: {exc}") from exc
        if not isinstance(term, ClassTerm):
            raise _LineError(f"classes column: {item!r} is not a class name or /regex/")
        terms.append(term)
    return terms


def _condition(facts: Node, classes: list[Node]) -> Node:
    parts = [p for p in (facts, *classes) if not isinstance(p, MatchAll)]
    if not parts:
        return MatchAll()
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _warnings(rule: Rule, name: str, line: int) -> list[PolicyIssue]:
    found: list[PolicyIssue] = []
    for caller in rule.callers:
        if caller.kind == "exact" and not caller.text.startswith("cert=") and caller.text != UNSIGNED_CALLER:
            found.append(PolicyIssue(name, line, f"caller {caller.text!r} can never match: nmc callers are always "
                                                  f"cert=<certificate name> (or {UNSIGNED_CALLER})", "warning"))
        if caller.kind == "regex" and not (caller.text.startswith("/^") and caller.text.endswith("$/")):
            found.append(PolicyIssue(name, line, f"caller regex {caller.text} is not anchored (^...$): it matches "
                                                  "any caller that merely contains it", "warning"))
    if len(rule.callers) > 1 and any(c.kind == "any" for c in rule.callers):
        found.append(PolicyIssue(name, line, "'*' in the callers column makes the other callers redundant", "warning"))
    return found


def _rule(line: str, name: str, number: int) -> Rule:
    columns = _columns(line)
    keyword, callers_col, actions_col, facts_col = columns[:4]
    classes_col = columns[4] if len(columns) == 5 else "*"
    callers = tuple(_caller(item) for item in callers_col.split())
    return Rule(allow=keyword == "allow", callers=callers, actions=_actions(actions_col),
                condition=_condition(_facts(facts_col), _classes(classes_col)),
                source=f"{name}:{number}", text=line.strip())


def parse_policy(text: str, name: str) -> PolicyFile:
    """Parse one policy file's text; `name` is its file name (`puppet.policy`). Never raises."""
    rules: list[Rule] = []
    issues: list[PolicyIssue] = []
    default_allow, default_source = False, ""
    for number, line in enumerate(text.splitlines(), start=1):
        if _skip(line):
            continue
        words = line.split()
        try:
            if words[0] == "policy":
                if len(words) != 3 or words[1] != "default" or words[2] not in ("allow", "deny"):
                    raise _LineError("expected 'policy default allow' or 'policy default deny'")
                if default_source:
                    raise _LineError(f"second 'policy default' line (the first is {default_source})")
                default_allow, default_source = words[2] == "allow", f"{name}:{number}"
            elif words[0] in ("allow", "deny"):
                rule = _rule(line, name, number)
                rules.append(rule)
                issues.extend(_warnings(rule, name, number))
            else:
                raise _LineError(f"a line starts with 'allow', 'deny' or 'policy default', not {words[0]!r}")
        except _LineError as exc:
            issues.append(PolicyIssue(name, number, exc.message))
    if not rules and not default_allow and not issues:
        issues.append(PolicyIssue(name, 0, "no rules: every request for this agent is denied", "warning"))
    return PolicyFile(name=name, rules=tuple(rules), default_allow=default_allow, default_source=default_source,
                      issues=tuple(issues))


def parse_groups(text: str, name: str = GROUPS_FILE) -> Groups:
    """Parse the groups file (`sysadmins cert=sa1 cert=sa2` per line). Never raises."""
    members: dict[str, frozenset[str]] = {}
    broken: dict[str, str] = {}
    issues: list[PolicyIssue] = []
    first: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if _skip(line):
            continue
        group, *callers = line.split()
        if not _GROUP_NAME.fullmatch(group) or "=" in group or group.startswith("/"):
            issues.append(PolicyIssue(name, number, f"{group!r} is not a group name"))
            continue
        problem = None
        if group in first:
            # A second definition is a bad line, and makes the group unusable: a deny rule for it must
            # not quietly miss the members someone meant to add.
            problem = f"group {group!r} is defined twice (first at {name}:{first[group]})"
        elif bad := [c for c in callers if not _CALLER_ID.fullmatch(c)]:
            problem = f"group {group!r}: {bad[0]!r} is not a caller id (cert=<name>)"
        if problem is not None:
            issues.append(PolicyIssue(name, number, problem))
            broken.setdefault(group, f"{name}:{number}")
            members.pop(group, None)
            continue
        if not callers:
            issues.append(PolicyIssue(name, number, f"group {group!r} has no members", "warning"))
        elif not all(c.startswith("cert=") or c == UNSIGNED_CALLER for c in callers):
            odd = next(c for c in callers if not (c.startswith("cert=") or c == UNSIGNED_CALLER))
            issues.append(PolicyIssue(name, number, f"group {group!r}: member {odd!r} can never match: nmc callers "
                                                    "are always cert=<certificate name>", "warning"))
        first[group] = number
        if group not in broken:
            members[group] = frozenset(callers)
    return Groups(members=members, broken=broken, issues=tuple(issues), present=True)
