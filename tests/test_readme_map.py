"""The README's architecture map names every module of the package and every bench script."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def architecture_map() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```")[1].splitlines()


def has_code(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def test_every_module_has_a_line_in_the_readme_map():
    lines = architecture_map()
    unnamed = []
    for path in sorted((REPO / "llm_compare").rglob("*.py")):
        if path.name == "__init__.py" and not has_code(path):
            continue
        rel = path.relative_to(REPO / "llm_compare")
        folder = rel.parent.as_posix()
        # a module in a sub-package sits on a line that starts with its folder ("ui/layout.py ...")
        candidates = [ln for ln in lines if (ln.strip().startswith(f"{folder}/") if folder != "." else
                                             "/" not in ln.strip().split(" ")[0])]
        if not any(re.search(rf"(^|[\s/,]){re.escape(rel.name)}\b", ln.strip()) for ln in candidates):
            unnamed.append(rel.as_posix())
    assert not unnamed, f"add these to README.md's Architecture map: {unnamed}"


def test_every_bench_script_is_in_the_readme_map():
    bench = " ".join(ln for ln in architecture_map() if ln.startswith("bench/") or ln.startswith("   "))
    missing = [p.stem for p in sorted((REPO / "bench").glob("*.py")) if not re.search(rf"\b{p.stem}\b", bench)]
    assert not missing, f"add these bench scripts to README.md's Architecture map: {missing}"
