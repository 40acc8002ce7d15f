"""The package is one unit: it never imports its own modules as optional."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "llm_compare"
LOOKUPS = ("find_spec", "import_module")


def own_imports(node: ast.AST) -> list[str]:
    """Our own modules imported (or looked up with find_spec / import_module) inside `node`."""
    names = []
    for n in ast.walk(node):
        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("llm_compare"):
            names.append(n.module)
        elif isinstance(n, ast.Import):
            names += [a.name for a in n.names if a.name.startswith("llm_compare")]
        elif isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", "")) in LOOKUPS:
            names += [ast.unparse(a) for a in n.args if "llm_compare" in ast.unparse(a)]
    return names


def catches_import_errors(handler: ast.ExceptHandler) -> bool:
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return handler.type is None or any(getattr(t, "id", "") in ("ImportError", "ModuleNotFoundError", "Exception")
                                       for t in types)


def test_no_module_imports_its_own_package_as_optional():
    optional = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(catches_import_errors(h) for h in node.handlers):
                optional += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {name}"
                             for stmt in node.body for name in own_imports(stmt)]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in LOOKUPS:
                optional += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {name}" for name in own_imports(node)]
    assert optional == []
