"""What the root `nmc` command needs before any sub-command runs, kept light.

The colour choice used to live beside the fleet commands' rendering, so even
`nmc --version` imported nats-py to reach it.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["choose_color"]


def choose_color(flag: bool | None, env: Mapping[str, str]) -> bool | None:
    """The root context's `color`: --color/--no-color, else off when NO_COLOR is set, else None.

    None lets click decide per stream: colour on a terminal, plain text into a
    pipe or file. NO_COLOR (https://no-color.org) counts when set and not
    empty, and an explicit flag beats it, as that convention asks.
    """
    if flag is not None:
        return flag
    if env.get("NO_COLOR"):
        return False
    return None
