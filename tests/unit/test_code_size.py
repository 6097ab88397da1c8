"""The package reads in short pieces: no function over 80 lines and no class over 250 in src/."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
LIMITS = {ast.FunctionDef: 80, ast.AsyncFunctionDef: 80, ast.ClassDef: 250}


def test_no_function_over_80_lines_and_no_class_over_250():
    over = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            limit = LIMITS.get(type(node))
            if limit is None:
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])  # decorators count
            lines = node.end_lineno - first + 1
            if lines > limit:
                over.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {lines} lines (at most {limit})")
    assert not over, "split these by meaning:\n" + "\n".join(over)
