"""``siftlm experiment GRID.yaml``: does a selection train a better model? Methods x budgets x seeds over one scored
dataset; each cell selects (from the cached scores), fine-tunes the model on the selection and measures the held-out
loss of the evaluation set's reference answers.

Every cell is keyed by what it trains on and how (selected ids, model, training settings, seed, evaluation set), so a
rerun skips finished cells and a killed experiment redoes at most the cell it was in (whose fine-tune itself resumes
after its last finished epoch). Results: ``results.parquet`` (one row per cell, with its wall time by stage),
``results.md`` and ``report.html``: methods x budgets, the mean over seeds with a bootstrap CI over evaluation
examples, and each method's paired difference from random at the same budget.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import yaml

from siftlm.assets import demo_data
from siftlm.config import DataConfig, EvaluateConfig, ExperimentConfig, SelectConfig, UsageError, from_dict
from siftlm.data import open_dataset
from siftlm.data.io import atomic_write
from siftlm.evaluate import stats
from siftlm.evaluate.run import heldout_loss
from siftlm.evaluate.sets import load_eval_set
from siftlm.models.load import load_model
from siftlm.progress import console
from siftlm.report import experiment as page
from siftlm.select.run import run_selection
from siftlm.signals import store
from siftlm.signals.prepare import prepare
from siftlm.train.sft import finetune, restrict

BASELINE = "random"


CELL_VERSION = 2     # 2: each cell is evaluated with the model loaded from its OUT/final (1 reused the base's passes)


def load_grid(path: str | Path) -> ExperimentConfig:
    """A grid YAML as an ExperimentConfig; paths in it (data, scores, features, eval files, out) are relative to the
    file, unknown keys are errors."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such grid file")
    cfg = from_dict(ExperimentConfig, yaml.safe_load(path.read_text()) or {}, where=str(path))
    def here(v: str) -> str:
        return v if v.startswith("builtin:") or Path(v).is_absolute() else str(path.parent / v)
    rel = {k: here(v) for k in ("data", "scores", "features", "out") if (v := getattr(cfg, k))}
    rel["eval"] = ",".join(here(v.strip()) for v in cfg.eval.split(",") if v.strip())
    return replace(cfg, **rel)


def method_config(method, budget, seed: int, cfg: ExperimentConfig) -> tuple[str, SelectConfig | None]:
    """(name, select config) of a grid method; None for ``full`` (every scored example)."""
    if isinstance(method, dict):
        opts = {k: v for k, v in method.items() if k != "name"}
        name = method.get("name") or opts.get("method", "topk")
    else:
        name, opts = str(method), {}
        kind, _, score = name.partition(":")
        if name == "full":
            return name, None
        if kind in ("highest", "lowest"):
            opts = {"method": "topk", "by": score, "direction": "high" if kind == "highest" else "low"}
        elif kind == "cluster" and score:
            opts = {"method": "cluster", "by": score}
        else:
            opts = {"method": name}
    return name, from_dict(SelectConfig, {"features": cfg.features, **opts, "budget": budget, "seed": seed,
                                          "scores": cfg.scores, "data": cfg.data})


def _cells(cfg: ExperimentConfig) -> list[tuple[str, object, object, int]]:
    """(name, method, budget, seed) of every cell; ``full`` once per seed, whatever the budgets."""
    cells = []
    for method in cfg.methods:
        name = method_config(method, cfg.budgets[0], 0, cfg)[0]
        for budget in ([None] if name == "full" else cfg.budgets):
            cells += [(name, method, budget, seed) for seed in cfg.seeds]
    names = [c[0] for c in cells]
    if len({(c[0], c[2], c[3]) for c in cells}) != len(names):
        raise UsageError("two grid methods have the same name; give one a 'name'")
    return cells


def run_cell(cfg: ExperimentConfig, name: str, method, budget, seed: int, folder: Path, eval_items) -> dict:
    """Select -> fine-tune -> held-out loss for one cell, or its stored result when one with the same key exists."""
    times = {}
    t = time.perf_counter()
    _, scfg = method_config(method, budget, seed, cfg)
    if scfg is None:
        ids = pd.read_parquet(cfg.scores, columns=["id"])["id"].tolist()
    else:
        ids = run_selection(scfg, folder / "selection").selection["id"].tolist()
    times["select_s"] = time.perf_counter() - t
    tcfg = replace(cfg.train, seed=seed)
    lm = load_model(cfg.model, dtype=cfg.signals.dtype, master_fp32=tcfg.full, quiet=True)   # fresh: LoRA goes in place
    key = store.fingerprint([sorted(ids), lm.fingerprint, tcfg.identity(), cfg.eval, cfg.eval_limit, asdict(cfg.signals),
                             CELL_VERSION])
    done = folder / "cell.json"
    if done.exists() and json.loads(done.read_text()).get("key") == key:
        return json.loads(done.read_text())
    t = time.perf_counter()
    selection = pd.DataFrame({"id": ids})
    with atomic_write(folder / "ids.parquet") as tmp:
        selection.to_parquet(tmp, index=False)
    ds = restrict(open_dataset(cfg.data, DataConfig()), folder / "ids.parquet")
    prep = prepare(ds, lm.tokenizer, cfg.signals)
    info = finetune(lm, prep, folder / "model", tcfg)
    times["finetune_s"] = time.perf_counter() - t
    t = time.perf_counter()
    del lm                      # trained in place, or not at all when training resumed past its last epoch
    trained = load_model(info["final"], dtype=cfg.signals.dtype, quiet=True)   # its own fingerprint: its own passes
    losses = heldout_loss(trained, eval_items, EvaluateConfig(signals=cfg.signals), "eval")
    with atomic_write(folder / "losses.parquet") as tmp:
        losses.to_parquet(tmp, index=False)
    times["evaluate_s"] = time.perf_counter() - t
    result = {"key": key, "method": name, "budget": budget, "seed": seed, "selected": len(ids),
              "train_tokens": info["tokens"], "model_fingerprint": info["fingerprint"],
              "loss": stats.mean_ci(losses["loss"], n_boot=cfg.n_boot, seed=seed), **times}
    with atomic_write(done) as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str))
    return result


def _cell_dir(out: Path, name: str, budget, seed: int) -> Path:
    safe = name.replace(":", "-").replace("+", "-").replace("/", "-")
    return out / "cells" / f"{safe}-b{'all' if budget is None else budget}-s{seed}"


def run_experiment(cfg: ExperimentConfig) -> pd.DataFrame:
    """Every cell (skipping finished ones), then results.parquet, results.md and report.html."""
    wall = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.data.startswith("builtin:"):
        cfg = replace(cfg, data=str(demo_data(cfg.data.removeprefix("builtin:"))))
    if not Path(cfg.scores).exists():
        raise FileNotFoundError(f"{cfg.scores}: no such scores file (run siftlm score first)")
    items = load_eval_set(cfg.eval)[: cfg.eval_limit] if cfg.eval_limit else load_eval_set(cfg.eval)
    cells = _cells(cfg)
    rows, losses = [], {}
    base = load_model(cfg.model, dtype=cfg.signals.dtype, quiet=True)
    base_loss = heldout_loss(base, items, EvaluateConfig(signals=cfg.signals), "eval")
    for k, (name, method, budget, seed) in enumerate(cells, start=1):
        folder = _cell_dir(out, name, budget, seed)
        console.print(f"cell {k}/{len(cells)}: {name}, budget {budget if budget is not None else 'all'}, seed {seed}",
                      highlight=False)
        t = time.perf_counter()
        res = run_cell(cfg, name, method, budget, seed, folder, items)
        res["cell_s"] = res.get("cell_s") or time.perf_counter() - t
        rows.append(res)
        losses[(name, budget, seed)] = pd.read_parquet(folder / "losses.parquet").set_index("id")["loss"]
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "loss"} | {f"loss_{k}": v for k, v in r["loss"].items()}
                          for r in rows])
    summary = summarize(cfg, table, losses, base_loss.set_index("id")["loss"])
    summary["wall_s"] = time.perf_counter() - wall
    stage = sum(table[c].fillna(0).sum() for c in ("select_s", "finetune_s", "evaluate_s") if c in table)
    summary["overhead"] = {"wall_s": summary["wall_s"], "cells_select_finetune_evaluate_s": float(stage),
                           "other_s": summary["wall_s"] - float(stage),
                           "other_share": (summary["wall_s"] - float(stage)) / summary["wall_s"]}
    with atomic_write(out / "results.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_write(out / "results.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(cfg), **summary}, indent=2, default=str))
    with atomic_write(out / "results.md") as tmp:
        tmp.write_text(page.markdown(summary, cfg))
    page.write(summary, cfg, out / "report.html")
    return table


def summarize(cfg: ExperimentConfig, table: pd.DataFrame, losses: dict, base: pd.Series) -> dict:
    """Per (method, budget): the mean over seeds of the per-example held-out loss, its bootstrap CI over examples,
    the spread over seeds, and the paired difference from random at the same budget (negative = lower loss)."""
    grid, paired = [], []
    means = {}
    for (name, budget), part in table.groupby(["method", table["budget"].fillna(-1)], sort=False):
        budget = None if budget == -1 else budget
        per_example = pd.concat([losses[(name, budget, s)] for s in part["seed"]], axis=1).mean(axis=1)
        means[(name, budget)] = per_example
        ci = stats.mean_ci(per_example, n_boot=cfg.n_boot)
        grid.append({"method": name, "budget": budget, "seeds": len(part), "selected": int(part["selected"].iloc[0]),
                     "loss": ci["mean"], "low": ci["low"], "high": ci["high"],
                     "seed_sd": float(part["loss_mean"].std(ddof=1)) if len(part) > 1 else 0.0,
                     "minutes": float(part["cell_s"].sum() / 60)})
    for (name, budget), per_example in means.items():
        if name == BASELINE:
            continue
        for b in [budget] if budget is not None else [b for (m, b) in means if m == BASELINE]:   # full: every budget
            ref = means.get((BASELINE, b))
            if ref is None:
                continue
            both = pd.concat([per_example, ref], axis=1).dropna()
            d = stats.paired_difference(both.iloc[:, 0], both.iloc[:, 1], n_boot=cfg.n_boot)
            paired.append({"method": name, "budget": b, **d})
    return {"grid": grid, "paired_vs_random": paired,
            "base_model_loss": stats.mean_ci(base, n_boot=cfg.n_boot), "eval": cfg.eval, "eval_items": int(len(base))}
