"""An experiment grid's cells: which methods, budgets and seeds it runs, and the select options each stands for."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from siftlm.config import ExperimentConfig, SelectConfig, UsageError, from_dict
from siftlm.recipes.pool import DEFAULT_FEATURES, Pool
from siftlm.select.run import resolve

BASELINE = "random"
ORACLE = "oracle"      # stands for the pool's labelled junk ids (a pool with inject:)
QUERY = "query"        # a method's target: the grid's query set (target:), its features made as the pool's


@dataclass(frozen=True)
class Cell:
    name: str            # the method's name in tables
    method: object = field(compare=False)     # as written in the grid (a dict is not hashable: the name stands in)
    budget: object       # count or fraction; None for full
    unit: str            # examples | tokens | all (full)
    seed: int

    @property
    def folder(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9._-]", "-", self.name)      # highest:davir -> highest-davir, repr->query -> repr--query
        unit = {"tokens": "t", "response": "r"}.get(self.unit, "b")
        return f"{safe}-{'all' if self.budget is None else unit + str(self.budget)}-s{self.seed}"


def method_name(method) -> str:
    if isinstance(method, dict):
        return str(method.get("name") or method.get("method", "topk"))
    return str(method)


def select_options(method) -> dict | None:
    """The select options a grid method stands for; None for ``full`` (every scored example)."""
    if isinstance(method, dict):
        return {k: v for k, v in method.items() if k != "name"}
    name = str(method)
    if name == "full":
        return None
    if name == "oracle":                 # drop exactly the labelled junk, then random up to the budget
        return {"method": "random", "exclude": ORACLE}
    kind, _, score = name.partition(":")
    if kind in ("highest", "lowest"):
        return {"method": "topk", "by": score, "direction": "high" if kind == "highest" else "low"}
    if kind == "cluster" and score:
        return {"method": "cluster", "by": score}
    return {"method": name}


def features_needed(cfg: ExperimentConfig, also=()) -> set[str]:
    """The pool feature passes (DEFAULT_FEATURES' values) that the grid's methods, and the methods in ``also``, read."""
    out = set()
    for method in [*cfg.methods, *also]:
        opts = select_options(method)
        if opts is None or cfg.features:
            continue
        if opts.get("features"):                      # a pool pass named in the method (e.g. embed for nearest)
            if opts["features"] in DEFAULT_FEATURES.values():
                out.add(opts["features"])
            continue
        kind = resolve(from_dict(SelectConfig, {k: v for k, v in opts.items() if k not in ("features", "target")})).method
        if kind in DEFAULT_FEATURES:
            out.add(DEFAULT_FEATURES[kind])
    return out


def method_config(cfg: ExperimentConfig, cell: Cell, scores: str, data: str, pool: Pool | None) -> SelectConfig | None:
    opts = select_options(cell.method)
    if opts is None:
        return None
    base = resolve(from_dict(SelectConfig, {k: v for k, v in opts.items() if k not in ("features", "target")}))
    features = opts.get("features") or cfg.features or DEFAULT_FEATURES.get(base.method)
    if opts.get("target") == QUERY:
        if pool is None or cfg.target is None or features not in DEFAULT_FEATURES.values():
            raise UsageError("target: query needs a grid target (target: {data, query, eval}) and a pool feature pass")
        opts = {**opts, "target": str(pool.target_features(features))}
    if pool is not None and features in DEFAULT_FEATURES.values():
        features = str(pool.features(features))
    budget = ({"budget_tokens": cell.budget, "budget_on": "response" if cell.unit == "response" else "all"}
              if cell.unit in ("tokens", "response") else {"budget": cell.budget})
    target = {"target": "centroid"} if base.method == "repr" and not opts.get("target") else {}
    if opts.get("exclude") == ORACLE:
        if pool is None or not (pool.folder / "labels.parquet").exists():
            raise UsageError("the oracle method needs a pool with labelled junk (pool: and inject:)")
        opts = {**opts, "exclude": str(pool.junk_ids())}
    return from_dict(SelectConfig, {**opts, "features": features, **budget, **target, "seed": cell.seed,
                                    "scores": opts.get("scores") or scores, "data": data})


def _seeds(cfg: ExperimentConfig, name: str) -> list:
    return list(cfg.seeds_for.get(name, cfg.seeds))


def cells(cfg: ExperimentConfig) -> list[Cell]:
    """Every cell, budget by budget (smallest first, an example budget before the token budget of the same size;
    within one, every method's seeds in the grid's order), then ``full`` once per seed: an interrupted grid has whole
    budgets done."""
    unknown = set(cfg.seeds_for) - {method_name(m) for m in cfg.methods}
    if unknown:
        raise UsageError(f"seeds_for names no method of the grid: {sorted(unknown)}")
    out = []
    tokens = "response" if cfg.budget_on == "response" else "tokens"
    pairs = sorted([("examples", b) for b in cfg.budgets] + [(tokens, b) for b in cfg.budget_tokens],
                   key=lambda ub: (float(ub[1]) > 1, float(ub[1]), ub[0] != "examples"))   # fractions, then counts
    for unit, b in pairs:
        for method in cfg.methods:
            name = method_name(method)
            if name != "full":
                seeds = list(range(cfg.random_subsets or len(cfg.seeds))) if name == BASELINE else _seeds(cfg, name)
                out += [Cell(name, method, b, unit, s) for s in seeds]
    out += [Cell("full", m, None, "all", s) for m in cfg.methods if method_name(m) == "full"
            for s in _seeds(cfg, "full")]
    if len({(c.name, c.budget, c.unit, c.seed) for c in out}) != len(out):
        raise UsageError("two grid cells are the same: a method name or a budget is listed twice (give a method a "
                         "'name')")
    return out


