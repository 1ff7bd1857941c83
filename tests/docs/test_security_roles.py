"""docs/security.md's role table says what the generated broker configuration allows, cell by cell.

The table ("What each role may do at the broker") is parsed; a CA issues one
certificate per role with the names the table uses; `plan_users` and
`render_authorization` make the configuration `nmc ops broker config` writes,
and each cell is checked against the allow and deny lists rendered for that
user, with nats-server's subject matching. The `broker` column must be all
"no": its certificate gets no user at all.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from nmc.ops.broker.authorization import Scope, plan_users, render_authorization
from nmc.protocol.registry import kv_token
from nmc.protocol.subjects import encode_token
from nmc.security import create_ca, issue_certificate
from nmc.security.permissions import Permissions

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
SECTION = "## What each role may do at the broker"
NAMES = {"user": "alice", "node": "web1.example.com", "policy": "nmc-policy", "audit": "nmc-audit",
         "auditor": "nmc-auditor", "console": "nmc-console", "operator": "nmc-operator", "leaf": "site1", "broker": "broker"}


@dataclass(frozen=True)
class Cell:
    what: str
    action: str  # pub | sub
    subject: str  # with <self> / <self-key> for the role's own name
    role: str
    allowed: bool


def _cells() -> list[Cell]:
    text = DOC.read_text(encoding="utf-8")
    assert SECTION in text, f"{DOC} lost its section {SECTION!r}"
    rows = [line for line in text.split(SECTION, 1)[1].split("\n## ", 1)[0].splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header[:2] == ["may it", "subject"] and header[2:] == list(NAMES), header
    cells = []
    for row in rows[2:]:
        what, subject, *answers = [c.strip() for c in row.strip("|").split("|")]
        action, _, pattern = subject.strip("`").partition(" ")
        assert action in ("pub", "sub") and pattern, f"bad subject cell {subject!r} in row {what!r}"
        assert set(answers) <= {"yes", "no"} and len(answers) == len(NAMES), f"row {what!r}: {answers}"
        cells += [Cell(what, action, pattern, role, answer == "yes") for role, answer in zip(NAMES, answers)]
    return cells


CELLS = _cells()


def _rendered() -> dict[str, Permissions]:
    """The users `nmc ops broker config` renders for one certificate per role, read back from the text."""
    ca = create_ca()
    certificates = [issue_certificate(*ca, name, roles=(role,), server=role == "broker")[1]
                    for role, name in NAMES.items()]
    auth = plan_users(certificates, Scope(), ca_certificates=[ca[1]])
    text = render_authorization(auth)
    users: dict[str, Permissions] = {}
    for block in re.findall(r'user: "([^"]+)"\n\s+permissions: \{\n(.*?)\n\s+\}\n', text, re.S):
        name, body = block
        assert "allow_responses" not in body, f"{name} answers through allow_responses"
        lists = {}
        for what in ("publish", "subscribe"):
            line = re.search(rf"{what}: \{{ (.*) \}}", body)
            assert line is not None, body
            for kind, values in re.findall(r"(allow|deny): (\[[^\]]*\])", line.group(1)):
                lists[(what, kind)] = tuple(json.loads(values))
        users[name] = Permissions(publish=lists.get(("publish", "allow"), ()),
                                  publish_deny=lists.get(("publish", "deny"), ()),
                                  subscribe=lists.get(("subscribe", "allow"), ()))
    assert set(users) == set(NAMES.values()) - {"broker"}, f"rendered users: {sorted(users)}"
    return users


USERS = _rendered()


def test_the_table_has_every_role_and_enough_rows():
    assert len({c.what for c in CELLS}) >= 30
    assert {c.role for c in CELLS} == set(NAMES)


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: f"{c.role}: {c.what}")
def test_each_cell_is_what_the_broker_configuration_allows(cell: Cell):
    name = NAMES[cell.role]
    subject = cell.subject.replace("<self-key>", kv_token(name)).replace("<self>", encode_token(name))
    perms = USERS.get(name)
    if perms is None:
        assert cell.role == "broker" and not cell.allowed, "the broker's certificate is no client"
        return
    allowed = perms.may_publish(subject) if cell.action == "pub" else perms.may_subscribe(subject)
    assert allowed == cell.allowed, (f"docs/security.md says {cell.role} may{'' if cell.allowed else ' not'} "
                                     f"{cell.action} {subject}; the rendered configuration says the opposite")
