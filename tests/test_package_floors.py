"""Each package on its floor: the lower packages never import the model or the engine, not even
inside a function (a chart or an evaluation must not need detbench.modeling)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "detbench"
# package -> packages it must not import
FORBIDDEN = {
    "structures": ("modeling", "engine", "data", "cli"),
    "utils": ("modeling", "engine", "data", "cli"),
    "data": ("modeling", "engine", "cli"),
    "layers": ("modeling", "engine", "data", "cli"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package):
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line}: {module}"
           for path in sorted((PACKAGE / package).rglob("*.py"))
           for line, module in _imports(path)
           if any(module == f"detbench.{up}" or module.startswith(f"detbench.{up}.") for up in FORBIDDEN[package])]
    assert not bad, "upward imports:\n" + "\n".join(bad)
