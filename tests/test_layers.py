"""Layers hold: corpora is the ground, then train, then stats and synth, then reports. A module may import
its own layer or a lower one, never a higher one; imports inside functions count too (they are still a
dependency, only a hidden one), and so does `importlib.import_module("...")` with a literal name.
The `synthmix` umbrella CLI dispatches to every layer, so it lives in the top one (reports/cli.py)."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO

LAYERS = {"corpora": 0, "train": 1, "stats": 2, "synth": 2, "reports": 3}


def imported_packages(source: str, package: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in a module of `package`: module level, function level,
    relative, and importlib.import_module / runpy.run_module calls with a literal module name."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, package if node.level else (node.module or "").split(".")[0]))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("import_module", "run_module") and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


def upward_imports(package: str) -> list[str]:
    rank = LAYERS[package]
    return [f"{path.relative_to(REPO)}:{line} imports {target} (layer {LAYERS[target]} > {package}'s {rank})"
            for path in sorted((REPO / package).rglob("*.py"))
            for line, target in imported_packages(path.read_text(encoding="utf-8"), package)
            if LAYERS.get(target, -1) > rank]


@pytest.mark.parametrize("package", LAYERS)
def test_no_module_imports_a_higher_layer(package):
    assert upward_imports(package) == []


def test_the_walk_sees_function_level_relative_and_literal_imports():
    """The checker itself can fail: hidden imports are found, with their lines."""
    source = ("import numpy\nfrom . import store\n\n\ndef f():\n    from stats import dedup\n"
              "    import importlib\n    return importlib.import_module('reports.build')\n")
    assert imported_packages(source, "corpora") == [(1, "numpy"), (2, "corpora"), (6, "stats"), (7, "importlib"),
                                                    (8, "reports")]
