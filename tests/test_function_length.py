"""No function in batchfsm/ is longer than a screen: 60 lines, docstring aside."""

from __future__ import annotations

import ast
from pathlib import Path

import batchfsm

LIMIT = 60
PACKAGE = Path(batchfsm.__file__).parent


def _long_functions() -> dict[str, int]:
    found: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        _visit(tree, path.relative_to(PACKAGE).as_posix(), "", found)
    return found


def _length(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of the function, its signature and code, less its docstring."""
    assert function.end_lineno is not None
    length = function.end_lineno - function.lineno + 1
    first = function.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        assert first.end_lineno is not None
        length -= first.end_lineno - first.lineno + 1
    return length


def _visit(node: ast.AST, path: str, prefix: str, found: dict[str, int]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{child.name}"
            if not isinstance(child, ast.ClassDef):
                length = _length(child)
                if length > LIMIT:
                    found[f"{path}:{name}"] = length
            _visit(child, path, f"{name}.", found)


def test_no_function_is_over_sixty_lines() -> None:
    over = _long_functions()
    assert not over, f"functions over {LIMIT} lines (split them): {over}"
