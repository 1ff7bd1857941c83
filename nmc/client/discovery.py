"""Discovery methods and target selection: who a request goes to.

- `auto` (default): the registry when it can be read and holds records of the
  collective, else `broadcast`. With the registry the client knows whom to
  expect, so an rpc needs no discovery round of its own: it is published once
  on the routed subject and ends on the last expected reply (`Discovered.expected`).
- `broadcast`: a stall-ended `rpcutil.ping` on the routed subject.
- `flatfile` / `stdin`: identities from a file, or from another nmc
  command's `--json` output piped in (`nmc find --json | nmc rpc ... --dm stdin`).
- `registry`: the JetStream key-value registry nodes keep current; no
  broadcast, and the client knows exactly whom to wait for.

`--limit N|N%` with `--limit-seed` and `-1/--one` then pick a deterministic
subset, which is addressed node by node so no other node runs the action.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from nmc.errors import ClientError
from nmc.client.fleet import FleetClient

__all__ = ["DISCOVERY_METHODS", "Discovered", "DiscoveryError", "Targeting", "apply_limit", "discover",
           "parse_identities", "parse_limit", "registered_nodes"]

log = structlog.get_logger("nmc.client")
_REGISTRY_READ = 5.0  # seconds the whole registry read may take in `auto` (read_registry's default)
DISCOVERY_METHODS = ("auto", "broadcast", "flatfile", "stdin", "registry")
_LIMIT = re.compile(r"\A([1-9][0-9]*)(%?)\Z")


class DiscoveryError(ClientError, ValueError):
    """Discovery input that cannot be used (bad limit, unreadable nodes file, ...); one line."""


@dataclass(frozen=True)
class Targeting:
    """How to find the nodes and how many of them to use."""

    method: str = "auto"
    nodes_file: Path | None = None
    stdin_text: str | None = None
    limit: str | None = None
    limit_seed: int | None = None
    one: bool = False

    def __post_init__(self) -> None:
        if self.method not in DISCOVERY_METHODS:
            raise DiscoveryError(f"unknown discovery method {self.method!r} (use {', '.join(DISCOVERY_METHODS)})")
        if self.limit is not None:
            parse_limit(self.limit)
        if self.method == "flatfile" and self.nodes_file is None:
            raise DiscoveryError("the flatfile discovery method needs --nodes FILE")

    @property
    def limited(self) -> bool:
        """True when only a subset of the discovered nodes is used."""
        return self.one or self.limit is not None


@dataclass(frozen=True)
class Discovered:
    """The identities to address, and how they were found."""

    identities: tuple[str, ...]
    method: str
    elapsed: float
    total: int  # how many were found before --limit/--one
    direct: bool  # address node by node (subset or list) instead of one routed publish
    # True when `identities` are known without asking the nodes (registry, file, stdin): a broadcast
    # discovery has already heard every one of them answer; these may be silent, and are named if so.
    listed: bool = False


def parse_limit(text: str) -> tuple[int, bool]:
    """`10` -> (10, False); `25%` -> (25, True)."""
    m = _LIMIT.match(text.strip())
    if m is None or (m.group(2) and int(m.group(1)) > 100):
        raise DiscoveryError(f"--limit takes N or N% (1-100%), got {text!r}")
    return int(m.group(1)), bool(m.group(2))


def apply_limit(identities: Sequence[str], *, limit: str | None, seed: int | None, one: bool) -> tuple[str, ...]:
    """A deterministic subset: the same seed and the same nodes give the same choice."""
    ordered = sorted(set(identities))
    if one:
        count = 1
    elif limit is None:
        return tuple(ordered)
    else:
        n, percent = parse_limit(limit)
        count = max(1, math.ceil(len(ordered) * n / 100)) if percent else n
    if count >= len(ordered):
        return tuple(ordered)
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    return tuple(sorted(rng.sample(ordered, count)))


def _identities_from_json(data: Any) -> list[str]:
    if isinstance(data, list):
        out = []
        for item in data:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict) and isinstance(item.get("sender"), str):
                out.append(item["sender"])
            else:
                raise DiscoveryError("JSON list items must be identities or objects with a 'sender'")
        return out
    if isinstance(data, dict):
        for key in ("replies", "nodes", "identities"):
            if key in data:
                return _identities_from_json(data[key])
    raise DiscoveryError("JSON input must be a list of identities or an nmc --json result with 'replies'")


def parse_identities(text: str) -> list[str]:
    """Identities from nmc `--json` output, a JSON list, or one identity per line (# comments)."""
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise DiscoveryError(f"input looks like JSON but does not parse: {exc}") from exc
        names = _identities_from_json(data)
    else:
        names = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    names = [n for n in names if n]
    bad = [n for n in names if any(c.isspace() for c in n)]
    if bad:
        raise DiscoveryError(f"not an identity: {bad[0]!r}")
    return list(dict.fromkeys(names))


async def discover(fc: FleetClient, filter_expr: str, targeting: Targeting) -> Discovered:
    """Find the nodes for a request by the chosen method, then apply --limit/--one."""
    started = time.monotonic()
    direct = targeting.limited
    method, listed = targeting.method, True
    if method == "auto":
        method = fc.settings.discovery_method  # client.cfg's default_discovery_method
    registered = await registered_nodes(fc, filter_expr) if method == "auto" else None
    if registered is not None:
        found, method = list(registered), "registry"
    elif method in ("auto", "broadcast"):
        found, method, listed = [r.identity for r in (await fc.discover(filter_expr)).results], "broadcast", False
    elif method == "registry":
        from nmc.client.registry import RegistryError, registry_discover  # noqa: I001 - JetStream only when asked

        try:
            entries = await registry_discover(fc.nc, fc.settings.collective, filter_expr,
                                              bucket=fc.settings.registry_bucket)
        except RegistryError as exc:
            raise DiscoveryError(str(exc)) from exc
        found = [e.identity for e in entries]
        # Asked for by name: address registered nodes one by one, so only they run it, and a
        # crashed node whose record has not expired yet has no subscriber: the broker says so
        # at once (503) and the rpc names it without waiting for the whole timeout.
        direct = True
    else:
        if targeting.method == "flatfile":
            assert targeting.nodes_file is not None
            try:
                text = targeting.nodes_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise DiscoveryError(f"cannot read nodes file {targeting.nodes_file}: {exc.strerror}") from exc
        else:
            text = targeting.stdin_text or ""
        found = parse_identities(text)
        direct = True
    chosen = apply_limit(found, limit=targeting.limit, seed=targeting.limit_seed, one=targeting.one)
    return Discovered(identities=chosen, method=method, elapsed=time.monotonic() - started,
                      total=len(set(found)), direct=direct, listed=listed)


async def registered_nodes(fc: FleetClient, filter_expr: str) -> tuple[str, ...] | None:
    """The registered nodes `filter_expr` selects, or None when the registry cannot say.

    None (use a broadcast) when the bucket cannot be read (no JetStream, no bucket, no
    permission, too slow: logged at debug) or holds no record of this collective, so that a
    fleet without registration keeps working exactly as before. Nodes register before they
    serve (nmc.services.node), so a node that answers requests is in it; a node that crashed
    stays listed until its record expires and is then named as silent.
    """
    from nmc.client.registry import RegistryError, read_registry, select_entries  # noqa: I001 - JetStream on use
    from nmc.protocol.filter import parse

    tree = parse(filter_expr)  # a syntax error is the user's, whichever method runs
    try:
        # The list of keys within the discovery timeout (a broker that does not answer costs no
        # more than a broadcast would); reading thousands of records may take longer.
        snapshot = await read_registry(fc.nc, fc.settings.collective, bucket=fc.settings.registry_bucket,
                                       timeout=max(fc.settings.discovery_timeout, _REGISTRY_READ),
                                       list_timeout=fc.settings.discovery_timeout)
    except RegistryError as exc:
        log.debug("registry_unavailable", reason=str(exc), fallback="broadcast")
        return None
    if not snapshot.entries:
        return None
    return tuple(e.identity for e in select_entries(snapshot.entries, tree))
