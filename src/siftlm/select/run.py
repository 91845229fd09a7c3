"""Selection from one scored source: scores + data + features -> a method -> the selection files.

A method is ``topk`` | ``dpp`` | ``<score>+dpp`` (the score as DPP quality, e.g. ``davir+dpp``: learnability
plus diversity) | ``cluster`` | ``cluster-random`` | ``random`` | ``dedup``. Every method returns a ``Picked``
and ``write_selection`` is the one writer of its files:

- ``scores.parquet``: the input table plus ``rank`` (selection order 1..k; empty for rows not selected),
  ``selected`` and the method's own columns (``cluster``, ``duplicate_of``, ``dpp_gain``);
- ``selection.parquet``: the selected rows in order: ``id``, ``rank``, ``score``, ``reason``;
- ``selected.jsonl``: the selected examples exactly as they were in the input file.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.config import DEFAULT_BUDGET, DEFAULT_BY, SelectConfig, UsageError, closest
from siftlm.data import Example, read_dataset, write_selected
from siftlm.files import atomic_write
from siftlm.select import cluster, dedup, dpp, s2l, sample, targeted, topk
from siftlm.select.picked import Picked
from siftlm.signals.table import load_features

METHODS = {
    "topk": topk.pick,
    "dpp": dpp.pick,
    "cluster": cluster.pick_cluster,
    "cluster-random": cluster.pick_cluster_random,
    "random": sample.pick,
    "dedup": dedup.pick,
    "s2l": s2l.pick,
    "less": targeted.pick_less,
    "repr": targeted.pick_repr,
    "datainf": targeted.pick_datainf,
}
DEFAULT_QUALITY_LAMBDA = 0.5   # <score>+dpp without --lam: beta = 0.5, quality and diversity weighted alike
SELECTION_COLUMNS = ("rank", "selected", "cluster", "duplicate_of", "dpp_gain", "less_score", "repr_score",
                     "datainf_score")


@dataclass
class Selected:
    table: pd.DataFrame              # the scores table with rank / selected (and the method's columns)
    selection: pd.DataFrame          # the kept rows: id, rank, score, reason
    examples: list                   # the kept examples, in selection order
    format: str
    note: str = ""                   # e.g. why a DPP selection is short
    counts: dict = field(default_factory=dict)
    by: str | None = None            # the score the selection ranked by, if any


def resolve(cfg: SelectConfig) -> SelectConfig:
    """The config a method runs with: ``<score>+dpp`` becomes dpp with that quality (lambda 0.5 unless given);
    ``by`` and ``budget`` get their defaults where the method has one."""
    method, by, lam, budget = cfg.method, cfg.by, cfg.lam, cfg.budget
    if method.endswith("+dpp"):
        method, by, lam = "dpp", method[: -len("+dpp")], DEFAULT_QUALITY_LAMBDA if lam is None else lam
    if method not in METHODS:
        raise UsageError(f"unknown method {cfg.method!r}{closest(cfg.method, METHODS)}; known: {', '.join(METHODS)}, "
                         "<score>+dpp")
    if method != "dedup":
        by = by or DEFAULT_BY
        budget = DEFAULT_BUDGET if budget is None else budget
    return replace(cfg, method=method, by=by, lam=lam, budget=budget)


def write_selection(examples: list[Example], table: pd.DataFrame, picked: Picked, out: str | Path) -> Selected:
    """Write scores.parquet, selection.parquet and selected.jsonl for ``picked`` rows of ``table``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = table.drop(columns=[c for c in SELECTION_COLUMNS if c in table]).reset_index(drop=True)
    for name, values in picked.columns.items():
        table[name] = values
    rank = pd.array([pd.NA] * len(table), dtype="Int64")
    rank[picked.positions] = np.arange(1, len(picked.positions) + 1)
    table["rank"] = rank
    table["selected"] = table["rank"].notna().to_numpy()
    selection = pd.DataFrame({"id": table["id"].to_numpy()[picked.positions],
                              "rank": np.arange(1, len(picked.positions) + 1, dtype=np.int64),
                              "score": np.asarray(picked.score, dtype=np.float64), "reason": picked.reasons})
    with atomic_write(out / "scores.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_write(out / "selection.parquet") as tmp:
        selection.to_parquet(tmp, index=False)
    by_id = {e.id: e for e in examples}
    kept = [by_id[i] for i in selection["id"]]
    write_selected(kept, out / "selected.jsonl")
    return Selected(table, selection, kept, "", picked.note)


def token_counts(table: pd.DataFrame) -> np.ndarray:
    """Prompt + response tokens of every scored example (what a fine-tune trains on)."""
    if "n_prompt" not in table or "n_response" not in table:
        raise UsageError("--budget-tokens needs the n_prompt and n_response columns (a scores.parquet of siftlm score)")
    return (table["n_prompt"] + table["n_response"]).to_numpy(dtype=np.int64)


def by_tokens(table: pd.DataFrame, features, cfg: SelectConfig) -> Picked:
    """The method's selection under a token budget: the largest count whose selection fits in the budget, found by
    bisection over counts. Exact for methods whose selections are nested (a larger count keeps every pick of a
    smaller one: topk, random, dpp, repr); for per-cluster quotas, a count at which one more would not fit."""
    tokens = token_counts(table)
    budget = cfg.budget_tokens
    if isinstance(budget, bool) or budget <= 0:
        raise UsageError(f"--budget-tokens must be a positive count or a fraction in (0, 1], got {budget}")
    limit = int(np.floor(budget * tokens.sum())) if isinstance(budget, float) and budget <= 1 else int(budget)
    method = METHODS[cfg.method]
    if cfg.method == "dpp" and cfg.dpp_dtype == "auto":     # one precision for every count: one checkpoint identity
        d = np.shape(features)[1] if features is not None else 0
        cfg = replace(cfg, dpp_dtype=str(dpp.choose_dtype(len(table), len(table), d, dpp.torch.device("cpu"))).split(".")[-1])

    def at(k: int) -> tuple[Picked, int] | None:
        try:
            picked = method(table, features, replace(cfg, budget=k))
        except ValueError:              # e.g. more picks than finite scores: this count cannot be selected
            return None
        return picked, int(tokens[picked.positions].sum())

    lo, hi = 0, len(table)              # invariant: count lo fits (0 always does), hi + 1 does not or is past the end
    best = None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        got = at(mid)
        if got is not None and got[1] <= limit:
            lo, best = mid, got[0]
        else:
            hi = mid - 1
    if best is None:
        raise ValueError(f"--budget-tokens {budget}: no example fits in {limit} tokens (the shortest has "
                         f"{int(tokens.min())})")
    used = int(tokens[best.positions].sum())
    note = f"token budget {limit}: {len(best.positions)} examples, {used} tokens"
    return replace(best, note=f"{best.note}; {note}" if best.note else note)


def run_selection(cfg: SelectConfig, out: str | Path) -> Selected:
    """Select from one source with ``cfg.method`` and write the selection files into ``out``."""
    out = Path(out)
    cfg = resolve(cfg)
    if not Path(cfg.scores).exists():
        raise FileNotFoundError(f"{cfg.scores}: no such scores file")
    if not cfg.data:
        raise UsageError("--data is needed: the dataset the scores belong to (for selected.jsonl)")
    table = pd.read_parquet(cfg.scores)
    ds = read_dataset(cfg.data, format=cfg.format)
    by_id = {e.id for e in ds.examples}
    missing = [i for i in table["id"] if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} ids of {cfg.scores} are not in {cfg.data} (first: {missing[0]}); wrong dataset?")
    x = load_features(cfg.features, table["id"].tolist()) if cfg.features and cfg.method != "datainf" else None
    own_checkpoint = cfg.method == "dpp" and cfg.checkpoint is None
    if own_checkpoint:
        cfg = replace(cfg, checkpoint=str(out / "dpp-checkpoint"))
    picked = by_tokens(table, x, cfg) if cfg.budget_tokens is not None else METHODS[cfg.method](table, x, cfg)
    if own_checkpoint and not cfg.keep_checkpoint:      # done: its rows take 8 x N x M bytes (GBs at scale)
        shutil.rmtree(cfg.checkpoint, ignore_errors=True)
    res = write_selection(ds.examples, table, picked, out)
    res.by = cfg.by if cfg.method in ("topk", "cluster") or (cfg.method == "dpp" and cfg.lam) \
        else None
    res.format = ds.format
    res.counts = {"read": ds.n_read, "rejected": len(ds.rejects), "scored": len(table),
                  "not_scored": len(ds.examples) - len(table), "selected": len(res.selection)}
    return res
