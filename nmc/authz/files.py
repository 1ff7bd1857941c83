"""Reading a policy directory from disk: the one place in nmc.authz that touches files.

`read_policy_dir(path)` takes a snapshot of the file contents (which is also
what change detection compares, so a rewrite inside one timestamp tick is
still seen); `policy_set(snapshot)` parses it. A missing or unreadable
directory is not an exception here: it becomes a PolicySet that denies
everything and says why, because a node or service must keep answering.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from nmc.authz.policy import PolicyIssue
from nmc.authz.policyset import PolicySet

__all__ = ["DirSnapshot", "load_policy_dir", "policy_set", "read_policy_dir"]

_MAX_FILE_BYTES = 1024 * 1024  # a policy file is a few lines; refuse to slurp something huge by mistake


@dataclass(frozen=True)
class DirSnapshot:
    """The bytes of every regular file in a policy directory, or why the directory could not be read."""

    path: Path
    contents: dict[str, bytes] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    problem: str = ""  # the directory itself: missing, not a directory, no permission


def read_policy_dir(path: Path) -> DirSnapshot:
    """Read every regular file directly in `path` (no subdirectories)."""
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except FileNotFoundError:
        return DirSnapshot(path, problem=f"policy directory {path} does not exist")
    except NotADirectoryError:
        return DirSnapshot(path, problem=f"policy directory {path} is not a directory")
    except OSError as exc:
        return DirSnapshot(path, problem=f"cannot read policy directory {path}: {exc.strerror or exc}")
    contents: dict[str, bytes] = {}
    unreadable: dict[str, str] = {}
    for entry in entries:
        try:
            if not entry.is_file():
                continue
            if entry.stat().st_size > _MAX_FILE_BYTES:
                unreadable[entry.name] = f"larger than {_MAX_FILE_BYTES} bytes"
                continue
            with open(entry.path, "rb") as handle:
                contents[entry.name] = handle.read(_MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            continue  # removed while we looked: the next poll sees the new state
        except OSError as exc:
            unreadable[entry.name] = exc.strerror or str(exc)
    return DirSnapshot(path, contents, unreadable)


def policy_set(snapshot: DirSnapshot) -> PolicySet:
    """Parse a snapshot: text files become policies; anything not UTF-8 is an unreadable file."""
    if snapshot.problem:
        return PolicySet(fatal=(PolicyIssue(str(snapshot.path), 0, snapshot.problem),))
    texts: dict[str, str] = {}
    unreadable = dict(snapshot.unreadable)
    for name, data in snapshot.contents.items():
        try:
            texts[name] = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            unreadable[name] = f"not UTF-8 text (byte {exc.start})"
    return PolicySet.from_texts(texts, unreadable=unreadable)


def load_policy_dir(path: Path) -> PolicySet:
    """Read and parse a policy directory in one step."""
    return policy_set(read_policy_dir(path))
