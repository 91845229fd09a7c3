"""The package reads top to bottom: every import of a siftlm module points to the importer's own layer or an
earlier one in ``LAYERS`` (data -> models -> signals -> scores -> select -> ... -> cli), and imports inside a
function never point sideways (heavy third-party libraries may still be imported lazily)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "siftlm"
LAYERS = ["config", "stats", "assets", "progress", "backends", "data", "models", "signals", "scores", "select", "report",
          "diversity", "train", "evaluate", "recipes", "options", "cli", "__main__"]


def _layer(module: str) -> str:
    """'siftlm.signals.passes' -> 'signals'."""
    return module.split(".")[1] if module.count(".") else ""


def _imports(path: Path):
    """(imported siftlm module, line, at top level?) for every import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("siftlm"):
            yield node.module, node.lineno, id(node) in top
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("siftlm"):
                    yield alias.name, node.lineno, id(node) in top


def _modules():
    return sorted(p for p in SRC.rglob("*.py"))


def test_every_module_is_in_a_layer():
    for path in _modules():
        rel = path.relative_to(SRC)
        name = rel.parts[0].removesuffix(".py")
        assert name in LAYERS or name == "__init__", f"{rel} is in no layer; add it to LAYERS"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_only_up_the_layers(path):
    rel = path.relative_to(SRC)
    own = rel.parts[0].removesuffix(".py")
    if own == "__init__":
        return
    for module, line, top in _imports(path):
        target = _layer(module)
        if not target:
            continue
        where = f"{rel}:{line} imports {module}"
        assert LAYERS.index(target) <= LAYERS.index(own), f"{where}: a layer below {own}"
        if target == own and not top:
            pytest.fail(f"{where} inside a function: sideways imports belong at the top of the file")


def test_signals_never_import_scores():
    for path in (SRC / "signals").rglob("*.py"):
        assert not [m for m, _, _ in _imports(path) if _layer(m) in ("scores", "select")], path
