"""The noisy-pool analysis: which score, and which selection, keeps the injected junk out?

Reads the pool's scores and, only here, its labels (``labels.parquet``). For every score, the AUROC of clean against
corrupted examples with the score oriented the way it selects (its registered direction: 1.0 means every clean
example would be kept before every corrupted one, 0.5 is chance, below 0.5 the score prefers junk), overall and per
kind. For every selection method, the same AUROC from its selection order over the whole pool, and for every grid
method and budget the corrupted share of the selection beside the pool's (which is random's expectation).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from siftlm.config import ExperimentConfig
from siftlm.errors import DataError, MissingInput, UsageError
from siftlm.progress import console
from siftlm.recipes.grid import BASELINE, Cell, method_config
from siftlm.recipes.grid import cells as grid_cells
from siftlm.recipes.runtime import executor_for
from siftlm.scores import SCORES, direction
from siftlm.select.run import run_selection
from siftlm.stats import auroc

NOISE_SCORES = ("davir", "davir_e1", "davir_xfit", "rho", "lp", "lp_app", "ifd", "el2n", "ppl", "forgetting",
                "tokens_in", "tokens_out", "tokens_total", "grad_norm")
ORDER_METHODS = ("dpp", "davir+dpp", "cluster:lp_app", "dedup", "repr")   # AUROC from the selection order


def oriented(table: pd.DataFrame, score: str) -> np.ndarray:
    """The score as a keep value: higher = selected first."""
    values = table[score].to_numpy(dtype=np.float64)
    return values if direction(score) == "high" else -values


def by_kind(keep: np.ndarray, kinds: np.ndarray) -> dict:
    """AUROC of clean vs every corrupted row ("all") and vs each kind."""
    clean = kinds == "clean"
    out = {"all": auroc(keep, ~clean)}
    for kind in sorted(set(kinds) - {"clean"}):
        m = clean | (kinds == kind)
        out[kind] = auroc(keep[m], kinds[m] == kind)
    return out


def _keep_from_selection(table: pd.DataFrame, sel_table: pd.DataFrame, method: str) -> np.ndarray:
    """A keep value from a whole-pool selection: earlier picks first, unpicked last; for per-cluster selections the
    within-cluster order (the global order is grouped by cluster); for dedup, kept or not."""
    rank = sel_table["rank"].to_numpy(dtype=np.float64)
    if method.startswith("cluster") and "cluster" in sel_table:
        keep = np.full(len(table), -np.inf)
        for _, part in sel_table.groupby("cluster"):
            r = part["rank"].to_numpy(dtype=np.float64)
            order = rankdata(np.where(np.isfinite(r), r, np.inf))
            keep[part.index] = 1 - (order - 1) / len(part)
        return keep
    if method == "dedup":
        return np.where(np.isfinite(rank), 1.0, 0.0)
    return np.where(np.isfinite(rank), -rank, -np.inf)


def analyse(cfg: ExperimentConfig, pool, cells: pd.DataFrame | None = None) -> dict:
    """AUROCs per score and per selection method (whole-pool order), and the corrupted share of every grid method's
    selection at every budget (from the fine-tuned cells when there are, else selected here, no fine-tune)."""
    table = pd.read_parquet(pool.scores)
    labels = pool.labels().set_index("id")
    kinds = labels.loc[table["id"], "kind"].to_numpy()
    scored = set(table["id"])
    rejected = labels[~labels.index.isin(scored)]["kind"].value_counts().to_dict()
    scores = {s: by_kind(oriented(table, s), kinds) for s in NOISE_SCORES if s in table and s in SCORES}
    folder = Path(pool.folder) / "noise"
    methods = {}
    for name in ORDER_METHODS:
        scfg = method_config(cfg, Cell(name, name, len(table), "examples", 0), str(pool.scores), str(pool.data), pool)
        if name == "dedup":
            scfg = replace(scfg, budget=None)
        try:
            sel = run_selection(scfg, folder / name.replace(":", "-").replace("+", "-"), executor=executor_for(scfg))
        except (UsageError, MissingInput, DataError) as e:   # e.g. a method the pool has no features for: say so
            console.print(f"noisy-pool analysis: {name} skipped ({e})", highlight=False)
            continue
        methods[name] = by_kind(_keep_from_selection(table, sel.table, name), kinds)
    bad = {i for i, k in labels["kind"].items() if k != "clean"}
    rows = []
    for cell in grid_cells(cfg):
        if cell.name == "full":
            continue
        done = cells[(cells["method"] == cell.name) & (cells["seed"] == cell.seed) & (cells["unit"] == cell.unit)
                     & (cells["budget"] == float(cell.budget))] if cells is not None and len(cells) else None
        if done is not None and len(done):
            ids = list(done["ids"].iloc[0])
        else:
            scfg = method_config(cfg, cell, str(pool.scores), str(pool.data), pool)
            ids = run_selection(scfg, folder / "cells" / cell.folder, executor=executor_for(scfg)).selection["id"].tolist()
        kinds_sel = labels.loc[ids, "kind"]
        rows.append({"method": cell.name, "budget": float(cell.budget), "unit": cell.unit, "seed": cell.seed,
                     "selected": len(ids), "corrupted_share": float(np.mean([i in bad for i in ids])),
                     **{f"share_{k}": float((kinds_sel == k).mean()) for k in sorted(set(labels["kind"]) - {"clean"})}})
    shares = pd.DataFrame(rows)
    summary = (shares.groupby(["method", "budget", "unit"], sort=False)
               .agg(seeds=("seed", "count"), corrupted_share=("corrupted_share", "mean"),
                    share_sd=("corrupted_share", "std")).reset_index().to_dict("records")) if len(shares) else []
    return {"pool_rate": float(np.mean(kinds != "clean")), "scored": len(table), "rejected_by_kind": rejected,
            "counts": pd.Series(kinds).value_counts().to_dict(), "auroc_scores": scores, "auroc_methods": methods,
            "selection_shares": summary, "selection_rows": rows, "baseline": BASELINE}
