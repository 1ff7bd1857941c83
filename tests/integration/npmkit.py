"""The npm `nats` client in tests/interop: the independent NATS peer the interop tests run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

INTEROP = Path(__file__).resolve().parents[1] / "interop"


def require_npm_client() -> str:
    """The `node` executable; FAILS the test (never skips it) with the fix when the client is not installed."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js (`node`) is not on PATH; it is needed to run the npm nats client in tests/interop")
    if not (INTEROP / "node_modules" / "nats" / "package.json").is_file():
        pytest.fail(f"{INTEROP / 'node_modules'} is missing the npm `nats` package: "
                    "run `npm ci --prefix tests/interop` (from the repo root) and re-run the tests")
    return node
