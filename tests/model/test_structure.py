"""The model stays small and engine-free: no function in gpufleet/model/ longer than about 60 lines,
and nothing in gpufleet/ imports the engines (cloud/, k8s/) except the engine-level modules.

DESIGN.md: imports point down, cli -> engines (cloud/, k8s/, render) -> model; the model imports
no engine. ``gpufleet/render.py`` is the render engine and ``gpufleet/cli.py`` the command line
above all of them: those two may import the engines. Everything else in gpufleet/ may not, and no
module guards an import of something that is always there with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "gpufleet"
MAX_FUNCTION_LINES = 60
ENGINE_LEVEL = {"gpufleet/render.py", "gpufleet/cli.py"}
ENGINES = ("cloud", "k8s")


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _functions(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("find_spec", "import_module") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield node.lineno, f"{arg.value} (through importlib.{node.func.attr})"


def test_the_model_package_exists_with_its_parts():
    parts = {p.name for p in (PACKAGE / "model").glob("*.py")}
    assert {"__init__.py", "types.py", "loading.py", "servers.py", "messages.py", "checks.py"} <= parts
    assert not (PACKAGE / "model.py").exists()


@pytest.mark.parametrize("path", _modules(PACKAGE / "model"), ids=lambda p: p.name)
def test_no_function_in_the_model_is_longer_than_about_60_lines(path):
    long = [f"{path.relative_to(ROOT)}:{line} {name} ({n} lines)" for name, line, n in _functions(path) if n > MAX_FUNCTION_LINES]
    assert long == []


@pytest.mark.parametrize("path", _modules(PACKAGE), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_in_gpufleet_imports_an_engine(path):
    rel = path.relative_to(ROOT).as_posix()
    found = [(line, name) for line, name in _imports(path) if name.split(".")[0] in ENGINES or name.split(" ")[0].split(".")[0] in ENGINES]
    if rel in ENGINE_LEVEL:
        found = [(line, name) for line, name in found if "importlib" in name]  # engine-level: direct imports only
    assert [f"{rel}:{line} imports {name}" for line, name in found] == []


@pytest.mark.parametrize("path", _modules(PACKAGE), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_optional_module_guards(path):
    rel = path.relative_to(ROOT).as_posix()
    guards = [f"{rel}:{line} {name}" for line, name in _imports(path) if "find_spec" in name]
    assert guards == []


def test_the_scan_finds_what_it_looks_for(tmp_path):
    """The checks above can fail: a module that imports k8s and guards with find_spec is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("import importlib.util\nfrom k8s import site_bundles\nif importlib.util.find_spec('cloud.preview'):\n    pass\n")
    names = [name for _, name in _imports(bad)]
    assert "k8s" in names and "cloud.preview (through importlib.find_spec)" in names
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * 70)
    assert [n for _, _, n in _functions(long)] == [71]
