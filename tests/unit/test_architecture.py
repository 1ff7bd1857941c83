"""The package graph of docs/architecture.md, checked on the source: arrows point one way only.

Static (every `import` statement, lazy ones inside functions included), so a
wrong arrow fails here before it becomes a cycle at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "nmc"

# Lowest first. A package may import its own level's `errors`-like base modules and anything lower,
# never anything higher; packages on one level do not import each other.
LEVELS: list[set[str]] = [
    {"errors"},
    {"protocol"},
    {"security"},
    {"transport"},
    {"audit", "authz", "client"},
    {"services"},
    {"ops"},
    {"cli"},
    {"__main__"},
]
LEVEL = {package: n for n, packages in enumerate(LEVELS) for package in packages}


def _package(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    return parts[0].removesuffix(".py") if len(parts) == 1 else parts[0]


def _imports(path: Path) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(line, module, imported names) of every import of an nmc module in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "nmc" or node.module.startswith("nmc."):
                yield node.lineno, node.module, tuple(a.name for a in node.names)
            elif node.module.split(".")[0] == "click":
                yield node.lineno, "click", ()
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("nmc.") or alias.name.split(".")[0] == "click":
                    yield node.lineno, alias.name, ()


def _edges() -> Iterator[tuple[str, int, str, str, tuple[str, ...]]]:
    for path in sorted(ROOT.rglob("*.py")):
        source = _package(path)
        for line, module, names in _imports(path):
            if module == "click":
                yield f"{path.relative_to(ROOT.parent)}", line, source, "click", names
                continue
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else names[0] if names else ""
            if module == "nmc":  # `from nmc import x`: x is the package (or __version__)
                target = names[0] if names and names[0] != "__version__" else source
            yield f"{path.relative_to(ROOT.parent)}", line, source, target, names


def test_every_package_has_a_level():
    packages = {_package(p) for p in ROOT.rglob("*.py")} - {"__init__"}
    assert packages <= set(LEVEL), f"put {sorted(packages - set(LEVEL))} into LEVELS and docs/architecture.md"


def test_imports_point_down_only():
    wrong = []
    for where, line, source, target, _ in _edges():
        if target in ("click", source, "__init__") or source == "__init__":
            continue
        if target not in LEVEL or source not in LEVEL:
            continue
        if LEVEL[target] >= LEVEL[source]:
            wrong.append(f"{where}:{line}: {source} imports {target}")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_only_the_cli_imports_click():
    wrong = [f"{where}:{line}" for where, line, source, target, _ in _edges()
             if target == "click" and source not in ("cli", "__main__")]
    assert not wrong, f"click outside nmc/cli: {wrong}"


def test_no_private_name_crosses_a_package():
    wrong = []
    for where, line, source, target, names in _edges():
        if target != source and target in LEVEL:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                wrong.append(f"{where}:{line}: {source} imports {private} from {target}")
    assert not wrong, "private names imported across packages:\n" + "\n".join(wrong)


@pytest.mark.parametrize("modules", ["nmc.protocol, nmc.authz.policy, nmc.protocol.filter", "nmc.errors"])
def test_the_pure_core_loads_no_nats(modules: str):
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if m.split('.')[0] in ('nats', 'click')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing {modules} loads {out.strip()}"
