"""The layering of docs/architecture.md holds: no import goes up a layer, no cycle between packages.

Every ``import steiner.x`` / ``from steiner.x import ...`` in src/steiner counts, at module level or
inside a function (a lazy import is still a dependency). A package is ``steiner.<first part>``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "steiner"
DOC = ROOT / "docs" / "architecture.md"


def read_layers(text: str) -> dict[str, int]:
    """{package: layer} from the fenced block between the ``layers`` markers of the architecture page."""
    m = re.search(r"<!-- layers:.*?-->\s*```\n(.*?)```\s*<!-- /layers -->", text, re.S)
    if not m:
        raise AssertionError(f"{DOC}: no layers block (<!-- layers: ... --> ``` ... ``` <!-- /layers -->)")
    layers: dict[str, int] = {}
    for line in m.group(1).splitlines():
        if line.strip():
            rank, *names = line.split()
            for name in names:
                layers[name] = int(rank)
    return layers


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "steiner"


def import_edges(src: Path) -> list[tuple[str, str, str]]:
    """(importing package, imported package, where) for every cross-package steiner import."""
    edges = []
    for f in sorted(src.rglob("*.py")):
        rel = f.relative_to(src.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                raise AssertionError(f"{f}:{node.lineno}: relative import; write steiner.<package> imports")
            else:
                continue
            for name in names:
                if name.startswith("steiner."):
                    a, b = package_of(module), package_of(name)
                    if a != b:
                        edges.append((a, b, f"{f.relative_to(src.parent)}:{node.lineno} imports {name}"))
    return edges


def violations(layers: dict[str, int], edges: list[tuple[str, str, str]]) -> list[str]:
    out = []
    for a, b, where in edges:
        for pkg in (a, b):
            if pkg not in layers:
                out.append(f"{where}: package {pkg!r} has no layer in {DOC.name}")
        if a in layers and b in layers and layers[b] > layers[a]:
            out.append(f"{where}: layer {layers[a]} ({a}) imports layer {layers[b]} ({b})")
    return out


def cycles(edges: list[tuple[str, str, str]]) -> list[list[str]]:
    """The cycles of the package graph (each as its packages in order)."""
    import networkx as nx

    return sorted(sorted(c) for c in nx.simple_cycles(nx.DiGraph([(a, b) for a, b, _ in edges])))


def test_every_package_has_a_layer():
    layers = read_layers(DOC.read_text(encoding="utf-8"))
    packages = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert sorted(packages - set(layers)) == [], f"give these packages a layer in {DOC}"


def test_no_import_goes_up_a_layer():
    layers = read_layers(DOC.read_text(encoding="utf-8"))
    assert violations(layers, import_edges(SRC)) == []


def test_no_cycle_between_packages():
    assert cycles(import_edges(SRC)) == []


def test_the_checks_catch_violations(tmp_path):
    """The checker itself: an upward import and a cycle in a throwaway tree are reported."""
    pkg = tmp_path / "steiner"
    (pkg / "domain").mkdir(parents=True)
    (pkg / "domain" / "__init__.py").write_text("def f():\n    from steiner.synth import x\n")
    (pkg / "synth").mkdir()
    (pkg / "synth" / "__init__.py").write_text("import steiner.domain\n")
    layers = {"domain": 2, "synth": 3}
    edges = import_edges(pkg)
    assert violations(layers, edges) == [
        "steiner/domain/__init__.py:2 imports steiner.synth: layer 2 (domain) imports layer 3 (synth)"]
    assert cycles(edges) == [["domain", "synth"]]
    with pytest.raises(AssertionError, match="no layers block"):
        read_layers("no table here")

