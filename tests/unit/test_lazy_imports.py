"""Function-level imports exist only where they keep `launcher --help` and config errors fast.

An import inside a function is allowed when it defers something heavy:
- a heavy third-party package (HEAVY: torch, transformers, ray, ...), loaded on first use;
- a launcher module whose own module-level imports reach one of those (it would load them at once).
Anything else inside a function (the standard library, a light launcher module) belongs at the top of
the module, unless its line says why not with a `# lazy: <reason>` comment (an import cycle avoided, an
optional package). The two entry points (`launcher/__init__.py`, `launcher/__main__.py`) are lazy by
design and exempt.
"""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.unit.test_imports import graph

HEAVY = {
    "accelerate", "datasets", "deepspeed", "evaluate", "jsonargparse", "lightning", "lightning_utilities",
    "matplotlib", "mlflow", "moto", "numpy", "optuna", "pandas", "peft", "pyarrow", "ray", "scipy",
    "seqeval", "sklearn", "torch", "torch_xla", "torchmetrics", "transformers", "wandb", "boto3", "fsspec",
}


def third_party(node) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name.split(".")[0] for a in node.names}
    if node.level or not node.module:
        return set()
    return {node.module.split(".")[0]}


def top_level_third_party(path: str) -> set[str]:
    tree = ast.parse(open(path).read())
    found = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= third_party(node)
        elif isinstance(node, ast.Try):  # optional imports guarded at module level
            for sub in node.body:
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    found |= third_party(sub)
    return found


def heavy_modules(mods: dict, edges: dict) -> set[str]:
    """launcher modules whose module-level import closure loads a HEAVY package."""
    heavy = {m for m, p in mods.items() if top_level_third_party(p) & HEAVY}
    changed = True
    while changed:
        changed = False
        for m, (top, _) in edges.items():
            if m not in heavy and top & heavy:
                heavy.add(m)
                changed = True
    return heavy


def function_imports(path: str):
    """(line number, node) of every import inside a function."""
    tree = ast.parse(open(path).read())
    out = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if in_function:
                    out.append(child)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            else:
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return out


def launcher_targets(node, module: str, mods: dict, is_package: bool) -> set[str]:
    package = module if is_package else module.rpartition(".")[0]
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
    found = set()
    for name in names:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def test_function_level_imports_defer_something_heavy():
    mods, edges = graph()
    heavy = heavy_modules(mods, edges)
    stdlib = set(sys.stdlib_module_names)
    wrong = []
    for module, path in sorted(mods.items()):
        if module in ("launcher", "launcher.__main__"):
            continue
        lines = open(path).read().splitlines()
        for node in function_imports(path):
            text = " ".join(lines[node.lineno - 1: node.end_lineno])
            if "# lazy:" in text:
                continue
            roots = third_party(node)
            if roots & HEAVY:
                continue
            if roots and roots <= stdlib:
                wrong.append(f"{path}:{node.lineno}: standard-library import inside a function: move it to the top")
                continue
            if roots == {"launcher"} or (isinstance(node, ast.ImportFrom) and node.level):
                targets = launcher_targets(node, module, mods, path.endswith("__init__.py"))
                if targets and not targets & heavy:
                    wrong.append(f"{path}:{node.lineno}: {sorted(targets)} load nothing heavy: import at the top"
                                 " (or say why not with '# lazy: <reason>')")
                continue
            if roots:
                wrong.append(f"{path}:{node.lineno}: {sorted(roots)} inside a function: add it to HEAVY, move it "
                             "to the top, or say why with '# lazy: <reason>'")
    assert not wrong, "\n".join(wrong)


def test_heavy_set_matches_what_cli_help_must_not_load():
    """`launcher --help` loads none of HEAVY except what the parser itself needs."""
    code = ("import sys, launcher.__main__ as m\n"
            "try:\n    m.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('MODULES', ' '.join(sorted({n.split('.')[0] for n in sys.modules})))")
    stdout = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    out = stdout.rpartition("MODULES ")[2].split()
    assert "launcher" in out
    assert not (set(out) & (HEAVY - {"jsonargparse"})), set(out) & HEAVY
