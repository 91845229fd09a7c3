"""Selection toward a target (validation) set, from cached features: no model pass when the features exist.

- ``less``: LESS-style (Xia et al. 2024) cosine between each training example's projected LoRA gradient and the
  target examples' (grads pass), aggregated by max (default) or mean over targets; keep highest.
- ``repr``: representation-based selection (the family Ivison et al. 2025 found strongest at scale): cosine between
  mean-pooled last hidden states (lm-embed pass); round-robin over the target examples, each taking its most
  similar training example not yet taken, until the budget is met.
- ``datainf``: DataInf's closed-form influence on the target set's loss from per-layer LoRA gradients
  (``siftlm.scores.datainf``; grads pass with --keep-layers on both sets); keep the most beneficial.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from siftlm.backends import Executor
from siftlm.config import SelectConfig, UsageError
from siftlm.errors import DataError
from siftlm.scores.datainf import datainf
from siftlm.select.picked import Picked
from siftlm.select.topk import budget_count, topk
from siftlm.signals.table import layer_gradients, load_features
from siftlm.stats import l2_normalize


def _target(cfg: SelectConfig, features) -> np.ndarray:
    if features is None:
        raise UsageError(f"--method {cfg.method} needs --features (the training examples' features)")
    if not cfg.target:
        raise UsageError(f"--method {cfg.method} needs --target (the target set's features, its data file, or "
                         "'centroid')")
    if cfg.target == "centroid":               # no target set: the pool's own mean direction (typical examples)
        return l2_normalize(features).mean(0, keepdims=True)
    t = load_features(cfg.target)
    if t.shape[1] != np.shape(features)[1]:
        raise DataError(f"{cfg.target}: {t.shape[1]}-dim features, the training features have {np.shape(features)[1]}; "
                         "compute both with the same pass settings")
    return t


def similarity(features, target) -> np.ndarray:
    """Cosine similarity of every training example (rows) to every target example (columns)."""
    return l2_normalize(features) @ l2_normalize(target).T


def _ranked(table: pd.DataFrame, values: np.ndarray, cfg: SelectConfig, what: str) -> Picked:
    pos = topk(table["id"].to_numpy(), values, budget=cfg.budget, direction="high")
    n = len(table)
    return Picked(pos, [f"{what}={values[p]:.4g}: rank {r} of {n}" for r, p in enumerate(pos, start=1)], values[pos],
                  {f"{cfg.method}_score": values})


def pick_less(table: pd.DataFrame, features, cfg: SelectConfig, *, executor: Executor | None = None) -> Picked:
    sims = similarity(features, _target(cfg, features))
    if cfg.aggregate not in ("max", "mean"):
        raise UsageError(f"--aggregate must be max or mean, got {cfg.aggregate!r}")
    values = sims.max(1) if cfg.aggregate == "max" else sims.mean(1)
    return _ranked(table, values, cfg, f"{cfg.aggregate} gradient cosine to the target")


def pick_repr(table: pd.DataFrame, features, cfg: SelectConfig, *, executor: Executor | None = None) -> Picked:
    sims = similarity(features, _target(cfg, features))
    k = budget_count(cfg.budget, len(table))
    order = np.argsort(-sims, axis=0, kind="stable")            # for each target: training rows, most similar first
    taken, picks, reasons, cursor = set(), [], [], np.zeros(sims.shape[1], dtype=int)
    while len(picks) < min(k, len(table)):
        for t in range(sims.shape[1]):
            while cursor[t] < len(table) and order[cursor[t], t] in taken:
                cursor[t] += 1
            if cursor[t] == len(table) or len(picks) >= k:
                continue
            p = int(order[cursor[t], t])
            taken.add(p)
            picks.append(p)
            reasons.append(f"round {len(picks) // sims.shape[1] + 1}: nearest to target {t} (cosine {sims[p, t]:.4g})")
    best = sims.max(1)
    return Picked(np.array(picks), reasons, best[picks], {"repr_score": best})


def pick_datainf(table: pd.DataFrame, features, cfg: SelectConfig, *, executor: Executor | None = None) -> Picked:
    if not cfg.features or not cfg.target:
        raise UsageError("--method datainf needs --features and --target: grads passes run with --keep-layers")
    train = layer_gradients(cfg.features, table["id"].tolist())
    target_ids = pd.read_parquet(cfg.target, columns=["id"])["id"].tolist()
    values = datainf(train, layer_gradients(cfg.target, target_ids))
    return _ranked(table, values, cfg, "DataInf benefit on the target loss")
