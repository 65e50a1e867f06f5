"""The defaults file: fresh copies, and the rule that every leaf key is commented."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest
from yacs.config import CfgNode

import detbench.config.defaults as defaults
from detbench.config import get_cfg


def _leaf_keys(node: CfgNode, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, value in node.items():
        full = f"{prefix}{name}"
        keys |= _leaf_keys(value, full + ".") if isinstance(value, CfgNode) else {full}
    return keys


def _dotted(target: ast.expr) -> str | None:
    """'MODEL.RPN.NMS_THRESH' for the target `_C.MODEL.RPN.NMS_THRESH`, else None."""
    parts = []
    while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
    if isinstance(target, ast.Name) and target.id == "_C" and parts:
        return ".".join(reversed(parts))
    return None


def uncommented_leaf_assignments(source: str) -> tuple[set[str], set[str]]:
    """(all leaf keys assigned in `source`, those without a comment on or directly above their line)."""
    lines = source.splitlines()
    comment_lines = {
        tok.start[0]
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    assigned, missing = set(), set()
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        key = _dotted(node.targets[0])
        is_subtree = isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "CN"
        if key is None or is_subtree:
            continue
        assigned.add(key)
        # lineno is 1-based: the line above the assignment is `lineno - 1`.
        above = lines[node.lineno - 2].lstrip() if node.lineno >= 2 else ""
        if node.lineno not in comment_lines and not above.startswith("#"):
            missing.add(key)
    return assigned, missing


def test_get_cfg_returns_independent_copies():
    a, b = get_cfg(), get_cfg()
    a.SOLVER.BASE_LR = 123.0
    assert b.SOLVER.BASE_LR == defaults._C.SOLVER.BASE_LR != 123.0


def test_every_leaf_key_is_assigned_in_the_file_with_a_comment():
    assigned, missing = uncommented_leaf_assignments(Path(defaults.__file__).read_text())
    assert missing == set(), f"keys without a comment in defaults.py: {sorted(missing)}"
    # Keys created any other way (loops, setattr) would escape the comment rule.
    assert _leaf_keys(defaults._C) == assigned


@pytest.mark.parametrize(
    "source, expected_missing",
    [
        ("_C = CN()\n_C.A = CN()\n# doc\n_C.A.B = 1\n", set()),
        ("_C = CN()\n_C.A = CN()\n_C.A.B = 1  # doc\n", set()),
        ("_C = CN()\n_C.A = CN()\n_C.A.B = 1\n", {"A.B"}),
        ("_C = CN()\n# doc\n_C.X = 1\n\n_C.Y = 2\n", {"Y"}),
    ],
)
def test_comment_checker_detects_missing_comments(source, expected_missing):
    _, missing = uncommented_leaf_assignments(source)
    assert missing == expected_missing
