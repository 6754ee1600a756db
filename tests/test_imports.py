"""The package's modules import in any order, and module-level imports form no cycle.

The modules are read from the folders pyproject.toml maps into the package. Function-level imports
may still close a cycle (they run late), but only the ones listed in `FUNCTION_LEVEL_CYCLES`: the
list may shrink, never grow.
"""

from __future__ import annotations

import ast
import os
import random
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Function-level imports (importer, imported) whose target leads back to the importer.
FUNCTION_LEVEL_CYCLES: set[tuple[str, str]] = set()


def package_modules() -> dict[str, Path]:
    """Every module of the package (name -> source file), `__main__` modules left out (they run)."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = tool["package-dir"]
    modules = {}
    for package in tool["packages"]:
        top = package.split(".")
        root = next(".".join(top[:i]) for i in range(len(top), 0, -1) if ".".join(top[:i]) in folders)
        folder = ROOT / folders[root] / Path(*top[len(root.split(".")):])
        for path in sorted(folder.glob("*.py")):
            if path.stem == "__init__":
                modules[package] = path
            elif path.stem != "__main__":
                modules[f"{package}.{path.stem}"] = path
    return modules


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """The package modules `name` imports at module level (class bodies included) and in functions."""
    is_package = path.stem == "__init__"
    found = (set(), set())

    def targets(node) -> set[str]:
        if isinstance(node, ast.Import):
            return {alias.name for alias in node.names}
        base = node.module or ""
        if node.level:
            parts = name.split(".")[: len(name.split(".")) - node.level + is_package]
            base = ".".join(parts + ([base] if base else []))
        return {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found[in_function].update(t for t in targets(child) if t in modules and t != name)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text()), False)
    return found


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = package_modules()
    module_level, function_level = {}, {}
    for name, path in modules.items():
        module_level[name], function_level[name] = imports(name, path, modules)
    return module_level, function_level


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in edges[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_module_list_covers_the_package():
    modules = package_modules()
    assert {"sds3d", "sds3d.cameras", "sds3d.representations.gaussians", "sds3d.guidance.sds",
            "sds3d.cuda.build", "sds3d.app.server", "sds3d.world.dataset"} <= set(modules)


def test_no_module_level_import_cycle():
    module_level, _ = graph()
    cycles = sorted(name for name in module_level if name in reachable(module_level, name))
    assert not cycles, f"modules on a module-level import cycle: {cycles}"


def test_function_level_cycles_do_not_grow():
    module_level, function_level = graph()
    every = {name: module_level[name] | function_level[name] for name in module_level}
    closing = {(name, target) for name, targets in function_level.items() for target in targets
               if name in reachable(every, target)}
    assert closing <= FUNCTION_LEVEL_CYCLES, f"new function-level cycles: {sorted(closing - FUNCTION_LEVEL_CYCLES)}"
    assert closing == FUNCTION_LEVEL_CYCLES, f"gone, drop from the list: {sorted(FUNCTION_LEVEL_CYCLES - closing)}"


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module imported in a random order, in one fresh interpreter (the seed is in the failure)."""
    names = sorted(package_modules())
    seed = random.randrange(2**32)
    random.Random(seed).shuffle(names)
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, timeout=600)
    assert result.returncode == 0, f"seed {seed}, order {names}:\n{result.stderr[-3000:]}"
