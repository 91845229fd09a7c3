"""The package reads top to bottom: every import of a siftlm module points to the importer's own layer or an
earlier one in ``LAYERS`` (data -> models -> signals -> scores -> select -> ... -> cli), and imports inside a
function never point sideways (heavy third-party libraries may still be imported lazily)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "siftlm"
LAYERS = ["errors", "config", "stats", "files", "keyed", "assets", "progress", "backends", "data", "models", "signals", "scores",
          "select", "report", "diversity", "train", "evaluate", "recipes", "options", "cli", "__main__"]


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


def _sources():
    return [(p, p.read_text()) for p in _modules()]


def test_no_module_is_over_420_lines():
    long = {str(p.relative_to(SRC)): n for p, text in _sources() if (n := len(text.splitlines())) > 420}
    assert not long


def test_no_compute_module_knows_where_it_runs():
    """Only the executors in backends/ name a backend: everything else asks siftlm.backends.executor."""
    import re

    pattern = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*["']ray["']|["']ray["']\s*(==|!=)""")
    found = [f"{p.relative_to(SRC)}:{k}" for p, text in _sources() if p.parent.name != "backends"
             for k, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    found += [f"{p.relative_to(SRC)}" for p, text in _sources() if p.parent.name != "backends"
              and re.search(r"import ray\b|from ray\b", text)]
    assert not found


def test_only_the_model_loader_sets_a_fingerprint():
    found = []
    for p, text in _sources():
        for node in ast.walk(ast.parse(text)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, (ast.AugAssign, ast.AnnAssign)) else []
            found += [f"{p.relative_to(SRC)}:{node.lineno}" for t in targets
                      if isinstance(t, ast.Attribute) and t.attr == "fingerprint"]
    assert not [f for f in found if not f.startswith("models/load.py")]


def _rel(p: Path) -> str:
    return str(p.relative_to(SRC))


def _trees():
    return [(_rel(p), ast.parse(text)) for p, text in _sources()]


def _const(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def test_no_siftlm_attribute_rides_on_a_model_object():
    """A model's identity, source and precision live on its handle (``LoadedModel``), never on the torch module:
    nothing in siftlm sets (or reads back) a ``siftlm_*`` attribute, by assignment, ``setattr`` or
    ``object.__setattr__``, or asks ``getattr``/``hasattr`` for one."""
    found = []
    for rel, tree in _trees():
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, (ast.AugAssign, ast.AnnAssign)) else []
            found += [f"{rel}:{node.lineno} sets .{t.attr}" for t in targets
                      if isinstance(t, ast.Attribute) and t.attr.startswith("siftlm_")]
            if isinstance(node, ast.Attribute) and node.attr.startswith("siftlm_"):
                found.append(f"{rel}:{node.lineno} reads .{node.attr}")
            if isinstance(node, ast.Call) and len(node.args) >= 2:
                name = ast.unparse(node.func)
                if name in ("setattr", "object.__setattr__", "getattr", "hasattr", "delattr") and (
                        (_const(node.args[1]) or "").startswith("siftlm_")):
                    found.append(f"{rel}:{node.lineno} {name}(..., {_const(node.args[1])!r})")
    assert not found


def test_ray_is_imported_by_its_executor_only():
    """``import ray`` appears in ``backends/ray.py`` and nowhere else, not even in the executor interface."""
    found = []
    for rel, tree in _trees():
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(
                node, ast.ImportFrom) and not node.level else []
            if any(n == "ray" or n.startswith("ray.") for n in names) and rel != "backends/ray.py":
                found.append(f"{rel}:{node.lineno}")
    assert not found


BOUNDARY = ("cli/", "recipes/", "backends/", "config/", "options.py", "__main__.py")
RUN_SETTINGS = {"backend", "ray_address", "ray_actors"}


def test_compute_modules_never_read_where_they_run():
    """Where work runs (``backend``, ``ray_address``, ``ray_actors``) is read from a config by the CLI and the recipes
    only, which build the executor (``siftlm.recipes.runtime``) and pass it down: no compute module reads those
    settings, as an attribute or through ``getattr``."""
    found = []
    for rel, tree in _trees():
        if rel.startswith(BOUNDARY):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in RUN_SETTINGS:
                found.append(f"{rel}:{node.lineno} reads .{node.attr}")
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("getattr", "hasattr") and len(node.args) >= 2 \
                    and _const(node.args[1]) in RUN_SETTINGS:
                found.append(f"{rel}:{node.lineno} getattr(..., {_const(node.args[1])!r})")
    assert not found


def test_executors_are_built_only_at_the_boundary():
    """``siftlm.backends.executor`` (what builds an executor from a backend name) is called by the CLI and the
    recipes only; compute modules take an executor (or a ``Runtime``) as an argument."""
    found = []
    for rel, tree in _trees():
        if rel.startswith(("cli/", "recipes/", "backends/")):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("siftlm.backends", "siftlm.recipes.runtime"):
                found += [f"{rel}:{node.lineno} imports {a.name}" for a in node.names
                          if a.name in ("executor", "executor_for", "runtime_for")]
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(("backends.executor", "executor_for",
                                                                                "runtime_for")):
                found.append(f"{rel}:{node.lineno} calls {ast.unparse(node.func)}")
    assert not found


def test_fingerprints_are_never_parsed_back():
    """One helper builds a model fingerprint (``models.load.model_fingerprint``); nothing takes one apart again
    (a base's fingerprint is on the handle: ``LoadedModel.base_fingerprint``)."""
    found = [f"{_rel(p)}:{k}" for p, text in _sources() for k, line in enumerate(text.splitlines(), 1)
             if 'split("+")' in line or "split('+')" in line or 'partition("+")' in line]
    assert not found


RESUMABLE = ["signals/store.py", "train/loop.py", "train/reference.py", "train/dpo.py", "select/dpp.py",
             "recipes/experiment.py", "evaluate/judge.py"]


def test_one_resume_primitive_serves_every_resumable_piece():
    """Store shards, training epochs, DPO checkpoints, the DPP checkpoint, experiment cells and the judge cache all
    go through siftlm.keyed; nobody else writes identity files or done markers by hand."""
    for rel in RESUMABLE:
        modules = {m for m, _, _ in _imports(SRC / rel)}
        assert "siftlm.keyed" in modules, rel
    for p, text in _sources():
        rel = str(p.relative_to(SRC))
        if rel != "keyed.py":
            assert "siftlm-identity.json" not in text and '.done"' not in text, rel


CLI_FILES = ["options.py", "__main__.py", *(f"cli/{p.name}" for p in sorted((SRC / "cli").glob("*.py")))]
CLI_CATCHES = {"SiftlmError", "Fail", "KNOWN_MISTAKES", "KeyboardInterrupt"}


def _caught(node: ast.ExceptHandler) -> set[str]:
    """The names an ``except`` clause catches ('' for a bare ``except:``)."""
    if node.type is None:
        return {""}
    types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
    return {ast.unparse(t) for t in types}


def test_the_cli_says_only_siftlms_own_errors_in_one_line():
    """The CLI catches siftlm's own errors (``SiftlmError``) and the explicit list of library errors that are the
    user's mistake (``KNOWN_MISTAKES``: a missing file...; an ``OSError`` only to say a full disk, re-raising
    anything else). A broader catch would print a bug in siftlm as a one-line user error and lose its traceback."""
    from siftlm.options import KNOWN_MISTAKES

    assert set(KNOWN_MISTAKES) <= {FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError}
    found = []
    for rel in CLI_FILES:
        for node in ast.walk(ast.parse((SRC / rel).read_text())):
            if not isinstance(node, ast.ExceptHandler):
                continue
            names = _caught(node)
            if names == {"OSError"}:        # allowed only as: if not disk_error(e): raise
                body = ast.Module(body=node.body, type_ignores=[])
                reraises = any(isinstance(n, ast.Raise) and n.exc is None for n in ast.walk(body))
                if reraises and "disk_error" in ast.unparse(body):
                    continue
            if not names <= CLI_CATCHES:
                found.append(f"{rel}:{node.lineno} catches {', '.join(sorted(names - CLI_CATCHES))}")
    assert not found


def test_a_token_budget_skips_only_a_count_that_cannot_be_selected():
    tree = ast.parse((SRC / "select" / "run.py").read_text())
    caught = [_caught(n) for n in ast.walk(tree) if isinstance(n, ast.ExceptHandler)]
    assert caught and all(names == {"CannotSelect"} for names in caught), caught


IDENTITY_WORDS = ("ident", "key", "digest", "fingerprint", "current", "done", "differences", "scored")


def _positive_exists(test: ast.expr) -> bool:
    """Whether ``test`` is true because some path exists (a ``.exists()`` call not under a ``not``)."""
    negated = {id(n) for u in ast.walk(test) if isinstance(u, ast.UnaryOp) and isinstance(u.op, ast.Not)
               for n in ast.walk(u.operand)}
    return any(isinstance(n, ast.Call) and ast.unparse(n.func).endswith(".exists") and id(n) not in negated
               for n in ast.walk(test))


def test_no_recipe_reuses_a_file_because_it_exists():
    """A recipe that skips work because a file is there (``if path.exists(): <read it>`` with the work in the
    ``else``, or ``if path.exists(): return``) must also check what the file was made from (its identity, key,
    digest...) in that same condition: a changed pool or grid must never be served a stale result."""
    found = []
    for path in sorted((SRC / "recipes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.If) or not _positive_exists(node.test):
                continue
            skips = any(isinstance(n, (ast.Return, ast.Continue, ast.Break)) for b in node.body for n in ast.walk(b))
            if (node.orelse or skips) and not any(w in ast.unparse(node.test).lower() for w in IDENTITY_WORDS):
                found.append(f"recipes/{path.name}:{node.lineno} {ast.unparse(node.test)}")
    assert not found


MOVES = {"os.rename", "os.replace", "os.link", "os.symlink", "shutil.move"}


def test_files_are_moved_into_place_only_by_files_and_keyed():
    """Every write that becomes visible by a rename (atomic writes, shards, renamed folders) goes through
    ``siftlm.files`` or ``siftlm.keyed``: no ``os.replace``/``os.rename``/links, ``Path.replace(target)`` or
    ``Path.rename(target)`` elsewhere (``str.replace`` takes two arguments, ``DataFrame.rename`` keywords)."""
    found = []
    for path in _modules():
        rel = str(path.relative_to(SRC))
        if rel in ("files.py", "keyed.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            attr = node.func.attr if isinstance(node.func, ast.Attribute) else ""
            if name in MOVES or attr in ("symlink_to", "hardlink_to", "link_to") or (
                    attr in ("replace", "rename") and len(node.args) == 1 and not node.keywords):
                found.append(f"{rel}:{node.lineno} {name}")
    assert not found
