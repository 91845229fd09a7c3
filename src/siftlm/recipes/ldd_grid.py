"""Does diversity predict the trained model? The DPP paper's Figure 2 (LDD of a training set against the performance
of the model fine-tuned on it: Pearson and Spearman -0.85) and Figure 4 (only LoRA-gradient features predict it,
sentence and LM embeddings do not), measured on siftlm's committed experiment grids.

Every fine-tuned cell of a grid is a known subset of a known pool with its per-item evaluation. For each cell: the
log-determinant distance (``siftlm.diversity``, eq. 3) of its subset in three representations of the pool, each made
with the pool's *base* model (DPP paper §3.3): normalised LoRA gradients (``grads``, gamma 1), mean-pooled hidden
states (``lm-embed``, gamma 10) and sentence embeddings (``embed``, all-MiniLM-L6-v2 in place of the paper's MPNet,
gamma 1), the paper's gammas (§4.1). Then the rank and linear correlation of LDD with each metric across cells, with
a bootstrap CI over cells, over all cells and within each (pool, budget) group (subset size moves LDD by itself), and
a partial rank correlation that holds the subset's response tokens fixed.

The paper correlates LDD with *performance* (higher is better); our metrics are losses (lower is better), so the
paper's claim reads here as a *positive* correlation (more diverse = lower LDD = lower loss).

Per-cell LDDs are cached in ``<grid results>/ldd.parquet`` (committed), keyed by cell and by the feature files'
fingerprints: a fresh clone computes the correlations from them in seconds, and recomputes a cell only when its
features exist and differ.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.diversity import log_det_distance
from siftlm.files import atomic_write
from siftlm.progress import console
from siftlm.recipes import pool as pools
from siftlm.recipes.experiment import fill_counts, load_grid
from siftlm.signals.table import load_features
from siftlm.stats import bootstrap_ci, l2_normalize, pearson, spearman

REPRESENTATIONS = {"grads": 1.0, "lm-embed": 10.0, "embed": 1.0}     # pass -> gamma (DPP paper §4.1)
PAPER = 0.85            # |rho| of Figure 2 (Pearson and Spearman), on performance; on a loss the sign is +
MIN_GROUP = 8           # cells in a (pool, budget) group before a within-budget correlation is reported


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:16] if path.exists() else ""


def cell_metrics(results: Path) -> pd.DataFrame:
    """One row per cell and metric column ``<set>:<metric>``: held-out loss per token and per item, and the
    behaviour rates where measured."""
    items = pd.read_parquet(results / "results.parquet")
    cells = pd.read_parquet(results / "cells.parquet")
    out = cells[cells["method"] != "base model"][["key"]].set_index("key")
    for name, part in items.groupby("set", sort=False):
        g = part.groupby("key")
        out[f"{name}:loss_per_token"] = (part["loss"] * part["n_tokens"]).groupby(part["key"]).sum() / g["n_tokens"].sum()
        out[f"{name}:loss_per_item"] = g["loss"].mean()
        for col in ("refusal", "wrong_language", "repetition"):
            if col in part and part[col].notna().any():
                out[f"{name}:{col}"] = g[col].mean()
    return out


def measured_metrics(table: pd.DataFrame) -> list[str]:
    """Every evaluation metric a grid table holds (``<set>:<metric>`` columns that are not LDDs), in column order:
    the losses, and the behaviour rates where the grid measured the fine-tuned models' greedy answers."""
    return [c for c in table.columns if ":" in c and not c.startswith("ldd:") and table[c].notna().any()]


def cell_ldds(grid: Path, features: dict[str, Path], *, seed: int = 0) -> pd.DataFrame:
    """Every cell's LDD in each representation (``features``: pass -> feature file of the grid's pool); cached in
    ``grid/ldd.parquet``. A cached value is kept when its feature file is absent (a fresh clone) or unchanged."""
    cells = pd.read_parquet(grid / "cells.parquet")
    cells = cells[cells["method"] != "base model"].reset_index(drop=True)
    cache_path = grid / "ldd.parquet"
    cache = pd.read_parquet(cache_path) if cache_path.exists() else pd.DataFrame(columns=["key", "pass", "features"])
    rows = []
    for name, gamma in REPRESENTATIONS.items():
        path = features.get(name)
        digest = _digest(path) if path is not None else ""
        have = cache[(cache["pass"] == name)].set_index("key")
        todo = [k for k in cells["key"] if k not in have.index or (digest and have.loc[k, "features"] != digest)]
        x, ids = None, None
        if todo and digest:
            frame = pd.read_parquet(path, columns=["id"])
            ids = {i: p for p, i in enumerate(frame["id"])}
            x = l2_normalize(load_features(path, list(frame["id"])))
        for _, c in cells.iterrows():
            if c["key"] not in todo:
                rows.append(have.loc[c["key"]].to_dict() | {"key": c["key"]})
                continue
            if x is None:
                continue                     # no features here and nothing cached: left out (said by the caller)
            pos = [ids[i] for i in c["ids"]]
            r = log_det_distance(x[pos], gamma=gamma, seed=seed)
            rows.append({"key": c["key"], "pass": name, "features": digest, "n": len(pos), "gamma": gamma,
                         "ldd": None if r.partial else r.value, "ldd_at_last_step": float(r.curve[-1]),
                         "singular_after": r.singular_after})
    out = pd.DataFrame(rows)
    if len(out):
        with atomic_write(cache_path) as tmp:
            out.to_parquet(tmp, index=False)
    return out


def grid_table(grid_yaml: str | Path) -> pd.DataFrame:
    """One grid's cells with their design (pool, budget, tokens), metrics and LDD per representation: the feature
    files are made (store-cached) only when the cache lacks a cell."""
    cfg = load_grid(grid_yaml)
    out = Path(cfg.out)
    cells = pd.read_parquet(out / "cells.parquet")
    cells = cells[cells["method"] != "base model"]
    cache = pd.read_parquet(out / "ldd.parquet") if (out / "ldd.parquet").exists() else None
    covered = cache is not None and all(set(cells["key"]) <= set(cache.loc[cache["pass"] == p, "key"])
                                        for p in REPRESENTATIONS)
    pool = pools.build_pool(cfg, out / "pool")
    cells = fill_counts(cells, str(pool.scores), cfg)     # response tokens of cells that ran before they were recorded
    features = {}                   # every cell cached: the feature files are not read
    if not covered:                 # made (or checked to be this pool's) first: never a stale file
        pools.feature_passes(cfg, pool, set(REPRESENTATIONS))
        features = {p: pool.features(p) for p in REPRESENTATIONS}
    ldd = cell_ldds(out, features).pivot_table(index="key", columns="pass", values="ldd", aggfunc="first")
    ldd.columns = [f"ldd:{c}" for c in ldd.columns]
    meta = cells.set_index("key")[["method", "budget", "unit", "seed", "selected", "train_tokens", "response_tokens"]]
    table = meta.join(cell_metrics(out)).join(ldd)
    table["grid"], table["pool"] = Path(cfg.out).name, pool.fingerprint
    return table.reset_index()


def _partial_spearman(x, y, z) -> float:
    """Spearman of x and y with z held fixed: the correlation of the rank residuals after regressing each on z's
    ranks."""
    rx, ry, rz = (pd.Series(v).rank().to_numpy(float) for v in (x, y, z))
    if np.ptp(rz) == 0:
        return spearman(x, y)
    design = np.c_[np.ones_like(rz), rz]
    res = [r - design @ np.linalg.lstsq(design, r, rcond=None)[0] for r in (rx, ry)]
    return pearson(*res)


def verdict(low: float, high: float) -> str:
    """Against the paper's claim (a positive correlation with a loss): its sign established, none, or opposite."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "not computable"
    if low > 0:
        return "agrees (same direction)"
    if high < 0:
        return "does not reproduce (opposite direction)"
    return "no effect detected"


def correlations(table: pd.DataFrame, metrics: list[str], *,
                 n_boot: int = 2000) -> tuple[list[dict], list[tuple[str, str]]]:
    """Spearman and Pearson of each LDD with each metric (bootstrap CI over cells), over all cells and within each
    (pool, budget, unit) group of at least MIN_GROUP cells; partial Spearman with response tokens held fixed. A
    metric with fewer than 3 values over a scope's cells (a behaviour no model showed, or one answer in 80) gives no
    correlation there. Returns the rows and those (metric, scope) pairs."""
    rows, skipped = [], []
    groups = [("all cells", table)] + [
        (f"{g[0]} {fmt(g[1], g[2])}", part) for g, part in table.groupby(["grid", "budget", "unit"], dropna=False)
        if len(part) >= MIN_GROUP]
    for rep in REPRESENTATIONS:
        col = f"ldd:{rep}"
        if col not in table:
            continue
        for metric in metrics:
            if metric not in table:
                continue
            for scope, part in groups:
                ok = part[[col, metric]].notna().all(axis=1) & np.isfinite(part[col].astype(float))
                p = part[ok]
                if len(p) < 4 or p[col].nunique() < 3:
                    continue
                if p[metric].nunique() < 3:
                    if (metric, scope) not in skipped:      # named once, not per representation
                        skipped.append((metric, scope))
                    continue
                x, y = p[col].to_numpy(float), p[metric].to_numpy(float)
                for kind, fn in (("spearman", spearman), ("pearson", pearson)):
                    est = bootstrap_ci(fn, x, y, n_boot=n_boot)
                    rows.append({"representation": rep, "metric": metric, "scope": scope, "kind": kind, "n": len(p),
                                 "r": est[0], "low": est[1], "high": est[2], "verdict": verdict(est[1], est[2])})
                if scope != "all cells" and p["response_tokens"].notna().all():
                    z = p["response_tokens"].to_numpy(float)
                    est = bootstrap_ci(_partial_spearman, x, y, z, n_boot=n_boot)
                    rows.append({"representation": rep, "metric": metric, "scope": scope,
                                 "kind": "partial spearman | response tokens", "n": len(p), "r": est[0],
                                 "low": est[1], "high": est[2], "verdict": verdict(est[1], est[2])})
    return rows, skipped


def fmt(budget, unit) -> str:
    if budget is None or (isinstance(budget, float) and np.isnan(budget)):
        return "all"
    return f"{budget:g}" + {"tokens": " tok", "response": " resp tok"}.get(unit, "")


def run(grids: list[str], out: str | Path, *, metrics: list[str] | None = None, n_boot: int = 2000) -> dict:
    """Every grid's cell table (``cells.parquet`` beside the rows), the correlations, a JSON file and a plot."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.concat([grid_table(g) for g in grids], ignore_index=True)
    metrics = metrics or measured_metrics(table)
    missing = {r: int(table[f"ldd:{r}"].isna().sum()) if f"ldd:{r}" in table else len(table) for r in REPRESENTATIONS}
    if any(missing.values()):
        console.print(f"cells without an LDD (no features and nothing cached, or a singular kernel): {missing}",
                      highlight=False)
    rows, skipped = correlations(table, metrics, n_boot=n_boot)
    if skipped:
        console.print("no correlation where the metric takes fewer than 3 values over the cells: "
                      + "; ".join(f"{m} ({scope})" for m, scope in skipped), highlight=False)
    with atomic_write(out / "ldd-cells.parquet") as tmp:
        table.drop(columns=[c for c in ("ids",) if c in table]).to_parquet(tmp, index=False)
    result = {"grids": [str(g) for g in grids], "cells": len(table), "missing": missing, "rows": rows,
              "nearly_constant": [list(x) for x in skipped]}
    with atomic_write(out / "ldd.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str))
    return {**result, "table": table}
