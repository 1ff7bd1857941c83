"""A whole policy directory as one value, and the decision it gives for a request (PURE).

`PolicySet.from_texts({"puppet.policy": "...", "groups": "..."})` parses
every file once; `decide(...)` then only walks compiled rules. Evaluation
fails closed: a file with any error denies every request it governs and
says which line is wrong; an agent with neither `<agent>.policy` nor
`default.policy` is denied; anything that goes wrong while matching denies.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from nmc.authz.hooks import Decision
from nmc.authz.policy import (
    GROUPS_FILE,
    Groups,
    PolicyFile,
    PolicyIssue,
    parse_groups,
    parse_policy,
)
from nmc.protocol.filter import matches

__all__ = ["DEFAULT_POLICY", "PolicySet"]

DEFAULT_POLICY = "default.policy"
_IGNORED_SUFFIXES = ("~", ".swp", ".swx", ".tmp")
_AGENT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _quietly_ignored(name: str) -> bool:
    # Hidden files and editor droppings are never policy; everything else unexpected gets a lint warning.
    return name.startswith(".") or name.endswith(_IGNORED_SUFFIXES)


@dataclass(frozen=True)
class PolicySet:
    """Every policy file of one directory, parsed, cross-checked against the groups file."""

    files: Mapping[str, PolicyFile] = field(default_factory=dict)  # by file name: `puppet.policy`
    groups: Groups = field(default_factory=Groups)
    fatal: tuple[PolicyIssue, ...] = ()  # problems with the directory itself: every request is denied
    notes: tuple[PolicyIssue, ...] = ()  # warnings about the directory (ignored files)

    @classmethod
    def from_texts(cls, texts: Mapping[str, str], *, unreadable: Mapping[str, str] | None = None,
                   fatal: Collection[PolicyIssue] = ()) -> PolicySet:
        """Parse a directory's files given as name -> text; `unreadable` maps name -> why it could not be read."""
        unreadable = dict(unreadable or {})
        notes: list[PolicyIssue] = []
        if GROUPS_FILE in unreadable:
            groups = Groups(issues=(PolicyIssue(GROUPS_FILE, 0, f"cannot be read: {unreadable[GROUPS_FILE]}"),),
                            present=True, unreadable=True)
        elif GROUPS_FILE in texts:
            groups = parse_groups(texts[GROUPS_FILE])
        else:
            groups = Groups()
        files: dict[str, PolicyFile] = {}
        for name in sorted({*texts, *unreadable}):
            if name == GROUPS_FILE or _quietly_ignored(name):
                continue
            if not name.endswith(".policy"):
                notes.append(PolicyIssue(name, 0, "ignored: not a .policy file or the groups file", "warning"))
                continue
            if name in unreadable:
                files[name] = PolicyFile(name=name, issues=(PolicyIssue(name, 0, f"cannot be read: {unreadable[name]}"),))
                continue
            policy = _check_groups(parse_policy(texts[name], name), groups)
            if not policy.agent or not set(policy.agent) <= _AGENT_CHARS:
                policy = replace(policy, issues=(*policy.issues, PolicyIssue(
                    name, 0, f"no agent can be called {policy.agent!r}: this file is never used", "warning")))
            files[name] = policy
        return cls(files=files, groups=groups, fatal=tuple(fatal), notes=tuple(notes))

    @property
    def issues(self) -> tuple[PolicyIssue, ...]:
        """Every error and warning, in file and line order (what `nmc policy lint` prints)."""
        found = [*self.fatal, *self.notes, *self.groups.issues]
        for policy in self.files.values():
            found.extend(policy.issues)
        return tuple(sorted(found, key=lambda i: (i.source, i.line)))

    @property
    def errors(self) -> tuple[PolicyIssue, ...]:
        """The issues that make something deny."""
        return tuple(i for i in self.issues if i.severity == "error")

    def policy_for(self, agent: str) -> PolicyFile | None:
        """The file that governs `agent`: `<agent>.policy`, else `default.policy`, else None."""
        return self.files.get(f"{agent}.policy") or self.files.get(DEFAULT_POLICY)

    def line(self, source: str) -> str:
        """The text of the rule or default line at `source` (`puppet.policy:4`), or ''."""
        policy = self.files.get(source.rpartition(":")[0])
        if policy is None:
            return ""
        if policy.default_source == source:
            return f"policy default {'allow' if policy.default_allow else 'deny'}"
        return next((r.text for r in policy.rules if r.source == source), "")

    def decide(self, *, caller: str, agent: str, action: str, facts: Mapping[str, Any],
               classes: Collection[str], identity: str = "") -> Decision:
        """Whether `caller` (the verified `cert=<name>`) may run `agent.action` on a node with these facts."""
        if self.fatal:
            return Decision(False, self.fatal[0].where, f"the policy directory is unusable: {self.fatal[0].message}")
        policy = self.policy_for(agent)
        if policy is None:
            return Decision(False, "", f"no policy for agent {agent!r} (neither {agent}.policy nor {DEFAULT_POLICY})")
        if policy.errors:
            first = policy.errors[0]
            more = f" (and {len(policy.errors) - 1} more)" if len(policy.errors) > 1 else ""
            return Decision(False, first.where, f"{policy.name} has errors, so it denies every request: "
                                                f"{first.message}{more}")
        near: list[str] = []  # rules for this caller and action whose facts/classes did not match here
        for rule in policy.rules:
            try:
                if not rule.applies_to(caller, action, self.groups):
                    continue
                if not matches(rule.condition, facts, classes, identity, ()):
                    near.append(rule.source)
                    continue
            except Exception as exc:  # noqa: BLE001 - fail closed on anything unexpected, and say where
                return Decision(False, rule.source, f"evaluating the rule failed: {type(exc).__name__}: {exc}"[:300])
            if rule.allow:
                return Decision(True, rule.source, f"{caller} may run {agent}.{action}")
            return Decision(False, rule.source, f"a deny rule forbids {caller} to run {agent}.{action}")
        where = policy.default_source or policy.name
        if policy.default_allow:
            return Decision(True, where, f"no rule matched {caller} for {agent}.{action}; policy default allow")
        why = f"no rule allows {caller} to run {agent}.{action}"
        if near:
            shown = ", ".join(near[:3]) + (" ..." if len(near) > 3 else "")
            why += f" on this node (facts/classes of {shown} do not match)"
        return Decision(False, where, f"{why}; policy default deny")


def _check_groups(policy: PolicyFile, groups: Groups) -> PolicyFile:
    """Add an error for every group a rule uses that the groups file does not define cleanly."""
    extra = []
    for rule in policy.rules:
        for group in rule.groups:
            problem = groups.problem(group)
            if problem is not None:
                extra.append(PolicyIssue(policy.name, int(rule.source.rpartition(":")[2]), problem))
    return replace(policy, issues=(*policy.issues, *extra)) if extra else policy
