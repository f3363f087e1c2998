"""The package's layering, held by parsing every import (top-level and function-local).

The layers, lowest first: a package may import only packages of lower layers. The map and the
reasons are in docs/ARCHITECTURE.md; a new arrow upwards, or any import circle between modules,
fails here.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "duplus"

LAYERS: list[set[str]] = [
    {"errors"},
    {"__init__", "limits", "vocab", "device", "fileio", "paths"},
    {"config", "bundle_file"},
    {"checkpoint"},
    {"data"},
    {"text", "models", "losses", "metrics"},
    {"inference", "reporting"},
    {"training"},
    {"adapt"},
    {"bundles"},
    {"prognosis"},
    {"api"},
    {"demo"},
    {"cli"},
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every duplus import in ``path``, wherever it is in the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.startswith("duplus"):
                for alias in node.names:  # `from duplus.x import y` may import the module duplus.x.y
                    sub = f"{base}.{alias.name}"
                    is_module = (SRC.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or (
                        SRC.parent / Path(*sub.split("."))
                    ).is_dir()
                    found.append((node.lineno, sub if is_module else base))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("duplus")]
    return found


FILES = sorted(SRC.rglob("*.py"))


def test_every_package_has_a_layer() -> None:
    units = {_unit(_module_name(p)) for p in FILES}
    assert units <= set(LAYER), f"add to LAYERS (and docs/ARCHITECTURE.md): {sorted(units - set(LAYER))}"


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(SRC)) for p in FILES])
def test_imports_point_down(path: Path) -> None:
    src = _unit(_module_name(path))
    bad = [
        f"line {line}: {src} (layer {LAYER[src]}) imports {mod} (layer {LAYER[_unit(mod)]})"
        for line, mod in _imports(path)
        if _unit(mod) != src and LAYER.get(_unit(mod), 99) >= LAYER[src]
    ]
    assert not bad, "\n".join(bad)


def test_no_import_circles_between_modules() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in FILES:
        me = _module_name(path)
        for _, mod in _imports(path):
            target = mod
            while target not in {_module_name(p) for p in FILES} and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != me and not me.startswith(target + "."):  # a package's own __init__ is no circle
                graph[me].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(SRC)) for p in FILES])
def test_only_the_cli_parses_and_prints(path: Path) -> None:
    if path.relative_to(SRC).parts[0] == "cli":  # the cli package parses and prints
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            )
            assert "argparse" not in names, f"{path.name}:{node.lineno} imports argparse"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            raise AssertionError(
                f"{path.name}:{node.lineno} calls print (use logging; only the cli package prints)"
            )


def test_the_layer_test_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a data module importing models is reported."""
    bad = SRC / "data" / "_layer_probe_tmp.py"
    try:
        bad.write_text("from duplus.models.registry import build_model\n")
        with pytest.raises(AssertionError, match="imports duplus.models"):
            test_imports_point_down(bad)
    finally:
        bad.unlink(missing_ok=True)
