"""The package's layers, as written in llm_compare/__init__.py, hold for every import of our own modules.

Every module is parsed with `ast`: top-level and function-local imports, relative imports and
`from package import module` all count. An import may only reach a module on its own layer or
below, the imports form no cycle, and a function-local import of our own modules is kept only
where it spares the importer a heavy library (torch, transformers, gradio, llama_cpp) that it
does not load anyway, with a `# reason:` comment saying which. Modules stay under 400 lines and
functions under 60 (the style rule's sizes).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import llm_compare

PACKAGE = Path(llm_compare.__file__).resolve().parent
HEAVY = ("torch", "transformers", "gradio", "llama_cpp")
LOCAL_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name, "llm_compare." left off ("loading.gguf.header"; a package: "loading")
    target: str  # one of our modules, or a third-party top-level name prefixed with "!" ("!torch")
    line: int
    local: bool  # inside a function
    reason: bool  # a `# reason:` comment on one of the statement's lines


def module_files() -> dict[str, Path]:
    """Every module of the package by its dotted name under llm_compare (the package itself left out)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            out[".".join(parts)] = path
    return out


def declared_layers() -> list[list[str]]:
    """The indented lines after "Layers, bottom up" in the package docstring: "    label: a, b, c" starts
    a layer (bottom first), a line indented deeper continues it."""
    lines = llm_compare.__doc__.split("Layers, bottom up", 1)[1].splitlines()[1:]
    layers, started = [], False
    for line in lines:
        if line.startswith("        ") and layers:
            layers[-1] += [name.strip() for name in line.split(",") if name.strip()]
        elif line.startswith("    ") and line.strip():
            started = True
            layers.append([name.strip() for name in line.split(":", 1)[-1].split(",") if name.strip()])
        elif started:
            break
    return layers


def layer_of() -> dict[str, int]:
    return {name: n for n, layer in enumerate(declared_layers()) for name in layer}


def _targets(node: ast.AST, importer: str, is_package: bool, modules: dict) -> list[str]:
    if isinstance(node, ast.Import):
        return [_own(a.name, modules) for a in node.names]
    if node.level:
        base = ["llm_compare", *importer.split(".")]
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        absolute = ".".join(base + ([node.module] if node.module else []))
    else:
        absolute = node.module or ""
    if not (absolute == "llm_compare" or absolute.startswith("llm_compare.")):
        return [_own(absolute, modules)]
    # `from package import module` imports the module; `from module import name` the module
    return [_own(f"{absolute}.{a.name}" if f"{absolute}.{a.name}"[12:] in modules else absolute, modules)
            for a in node.names]


def _own(absolute: str, modules: dict) -> str:
    if absolute == "llm_compare" or absolute.startswith("llm_compare."):
        return absolute[12:]
    return "!" + absolute.split(".")[0]


@cache
def imports() -> tuple[Import, ...]:
    modules = module_files()
    found = []
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        tree = ast.parse(source)
        stack = [(tree, False)]
        while stack:
            node, local = stack.pop()
            for child in ast.iter_child_nodes(node):
                inside = local or isinstance(child, LOCAL_SCOPES)
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    text = lines[child.lineno - 1: child.end_lineno]
                    reason = any("# reason:" in ln for ln in text)
                    for target in _targets(child, name, path.name == "__init__.py", modules):
                        if target not in (name, ""):  # "": the package's own __init__ (its version)
                            found.append(Import(name, target, child.lineno, inside, reason))
                stack.append((child, inside))
    return tuple(found)


def edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in module_files()}
    for imp in imports():
        if not imp.target.startswith("!"):
            graph[imp.importer].add(imp.target)
    return graph


def parents(name: str) -> list[str]:
    """The packages whose __init__ runs before `name` does ("loading.gguf.header" -> loading, loading.gguf)."""
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


@cache
def loads_at_import(name: str) -> frozenset[str]:
    """The heavy libraries importing `name` loads: its top-level imports, theirs, its packages' __init__."""
    found, seen, todo = set(), set(), [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo += parents(current)
        for imp in imports():
            if imp.importer == current and not imp.local:
                if imp.target.startswith("!"):
                    found |= {imp.target[1:]} & set(HEAVY)
                else:
                    todo.append(imp.target)
    return frozenset(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_every_module_is_on_exactly_one_layer():
    named = [name for layer in declared_layers() for name in layer]
    modules = set(module_files())
    assert sorted(modules - set(named)) == [], "add these modules to the layers in llm_compare/__init__.py"
    assert sorted(set(named) - modules) == [], "these layers name modules that do not exist"
    assert sorted(n for n in set(named) if named.count(n) > 1) == []


def test_no_import_runs_upward():
    layer = layer_of()
    upward = [f"{i.importer}:{i.line} imports {i.target} (layer {layer[i.importer]} -> {layer[i.target]})"
              for i in imports() if not i.target.startswith("!") and layer[i.target] > layer[i.importer]]
    assert upward == []


def test_no_import_cycles():
    assert cycles(edges()) == []


def test_nothing_below_the_ui_imports_gradio():
    below = [f"{i.importer}:{i.line}" for i in imports() if i.target == "!gradio" and not i.importer.startswith("ui.")]
    assert below == []


def test_function_local_imports_of_our_modules_spare_a_heavy_library_and_say_so():
    needless, unexplained = [], []
    for i in imports():
        if i.local and not i.target.startswith("!"):
            spared = loads_at_import(i.target) - loads_at_import(i.importer)
            if not spared:
                needless.append(f"{i.importer}:{i.line} {i.target}")
            elif not i.reason:
                unexplained.append(f"{i.importer}:{i.line} {i.target} (spares {', '.join(sorted(spared))})")
    assert needless == [], "these imports load nothing heavy: move them to the top of the module"
    assert unexplained == [], "say why with a `# reason:` comment on the import"


def test_the_checks_see_an_upward_import_a_cycle_and_a_needless_local_import():
    layer = layer_of()
    assert layer["errors"] < layer["loading.source"] < layer["loading"] < layer["ui.layout"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "torch" in loads_at_import("loading.hf") and "torch" not in loads_at_import("loading.source")
    local = [i for i in imports() if i.local and not i.target.startswith("!")]
    assert local and all(i.reason for i in local)
    relative = ast.parse("from .gguf import header\nfrom . import source\nfrom ..errors import UserError")
    modules = module_files()
    found = [t for node in relative.body for t in _targets(node, "loading.hf", False, modules)]
    assert found == ["loading.gguf.header", "loading.source", "errors"]


def test_no_module_over_400_lines_and_no_function_over_60():
    """The style rule's sizes (a module longer than this holds more than one concept)."""
    long_modules, long_functions = [], []
    for name, path in module_files().items():
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > 400:
            long_modules.append(name)
        long_functions += [f"{name}.{node.name}" for node in ast.walk(ast.parse(source))
                           if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                           and node.end_lineno - node.lineno + 1 > 60]
    assert long_modules == [], "split these modules by concept"
    assert long_functions == [], "split these functions"
