"""The package's import graph: no cycles, and imports point one way (README "Development").

Module-level imports make the graph; imports inside functions must point the same way (down), except
in the two entry points (`launcher/__init__.py`'s API, `launcher/__main__.py`'s command table).
"""

from __future__ import annotations

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "launcher")

# Lower layers never import higher ones. Modules of one layer may import each other (no cycles).
LAYERS = [
    ("errors", "console", "compat"),
    ("config", "resolve", "model_files"),
    ("files", "storage", "optim"),
    ("data",),
    ("tasks", "distributed"),
    ("training",),
    ("export", "search", "lightning_base"),
    ("commands",),
    ("__main__", "__init__"),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def modules() -> dict[str, str]:
    """module name → file path, for every module of the package."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = os.path.join(folder, f)
    return out


def imports(path: str, module: str, mods: dict) -> tuple[set, set]:
    """(launcher modules imported at module level, those imported inside functions)."""
    tree = ast.parse(open(path).read())
    top, inner = set(), set()
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]

    def targets(node) -> set:
        found = set()
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        for name in names:
            while name and name not in mods:
                name = name.rpartition(".")[0]
            if name and name.startswith("launcher") and name != module:
                found.add(name)
        return found

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (inner if in_function else top).update(targets(child))
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            else:
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return top, inner


def graph():
    mods = modules()
    return mods, {m: imports(p, m, mods) for m, p in mods.items()}


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycles():
    mods, edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m][0]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(mods):
        if m not in state:
            visit(m)


def test_imports_point_down_the_layers():
    mods, edges = graph()
    missing = sorted({area(m) for m in mods} - set(RANK))
    assert not missing, f"add these parts of launcher/ to LAYERS: {missing}"
    wrong = []
    for m, (top, inner) in edges.items():
        if area(m) in ("__main__", "__init__"):
            continue
        for n in top | inner:
            if RANK[area(n)] > RANK[area(m)]:
                wrong.append(f"{m} imports {n} ({area(m)} is below {area(n)})")
    assert not wrong, "\n".join(wrong)
