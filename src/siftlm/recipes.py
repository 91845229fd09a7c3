"""End-to-end recipes over the pipeline: score a dataset (DavIR, LP and baselines) and write a selection.

``score_dataset`` runs (or reuses from the store) every model pass the scores need;
``write_selection`` turns a scored table into ``selected.jsonl`` + ``selection.parquet``;
``run_davir`` does both and writes the summary, which is what ``siftlm demo`` runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm import scores as score_registry
from siftlm.data import Example, read_dataset, write_rejects, write_selected
from siftlm.data.io import atomic_write
from siftlm.models.load import load_model
from siftlm.pipeline import (
    Prepared,
    SignalConfig,
    Timer,
    add_scores,
    length_correlations,
    loss_signals,
    prepare,
    select,
    signals_table,
    train_reference,
)
from siftlm.report import write_report
from siftlm.signals.trajectory import TrainConfig


@dataclass
class RunConfig:
    data: str = ""                    # dataset file or folder
    model: str = "builtin:smollm2"    # model folder, .gguf file, builtin:<name> or hub id
    out: str = "siftlm-out"           # output folder
    format: str | None = None         # override format detection
    by: str = "davir"                 # score to select by
    budget: float = 0.1               # fraction (< 1) or count (>= 1)
    direction: str | None = None      # high | low; default from the score registry
    ifd: bool = True                  # run the unconditional pass for IFD
    reference: str | None = None      # training folder of the reference model (default OUT/reference);
                                      # an existing siftlm training folder's own settings are used
    signals: SignalConfig = field(default_factory=SignalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def score_dataset(cfg: RunConfig, timer: Timer | None = None) -> tuple[Prepared, pd.DataFrame, dict]:
    """Base pass, reference fine-tune with trajectory, reference pass, unconditional pass, all scores."""
    timer = timer or Timer()
    with timer("load model"):
        lm = load_model(cfg.model)
    with timer("read + encode"):
        ds = read_dataset(cfg.data, format=cfg.format)
        prep = prepare(ds, lm.tokenizer, cfg.signals)
    with timer("base loss pass"):
        base = loss_signals(lm.model, lm.fingerprint, prep, label="base loss")
    uncond = None
    if cfg.ifd:
        with timer("unconditional pass (IFD)"):
            uncond = loss_signals(lm.model, lm.fingerprint, prep, name="uncond", label="response-only loss")
    ref_dir = Path(cfg.reference) if cfg.reference else Path(cfg.out) / "reference"
    tcfg = cfg.train
    if (ref_dir / "siftlm-identity.json").exists():
        tcfg = TrainConfig(**json.loads((ref_dir / "siftlm-identity.json").read_text())["config"])
    with timer("reference fine-tune + trajectory"):
        traj, fps = train_reference(lm, prep, ref_dir, tcfg)
    table = signals_table(prep, base, ref=traj[-1], uncond=uncond, trajectory=traj)
    table, guarded = add_scores(table)
    return prep, table, {"guarded": guarded, "model_fingerprints": fps, "train": tcfg}


def write_selection(examples: list[Example], table: pd.DataFrame, out: str | Path, *, by: str, budget: float,
                    direction: str | None = None) -> pd.DataFrame:
    """Select top-``budget`` by ``by``; write ``scores.parquet``, ``selection.parquet``, ``selected.jsonl``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    direction = direction or score_registry.SCORES.get(by, (None, None, "high"))[2]
    table = select(table, by, budget=budget, direction=direction)
    n = len(table)
    chosen = table[table["selected"]].sort_values("rank")
    inputs = _input_columns(table, by)
    selection = pd.DataFrame({
        "id": chosen["id"], "rank": chosen["rank"], "score": chosen[by],
        "reason": [f"{by}={row[by]:.4g} ({', '.join(f'{c}={row[c]:.4g}' for c in inputs)}): rank {row['rank']} of {n}, "
                   f"top {len(chosen)} by {direction}est {by}" for _, row in chosen.iterrows()],
    })
    _write_selection_files(examples, table, selection, out)
    return table


def _write_selection_files(examples: list[Example], table: pd.DataFrame, selection: pd.DataFrame, out: Path) -> None:
    with atomic_write(out / "scores.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_write(out / "selection.parquet") as tmp:
        selection.to_parquet(tmp, index=False)
    by_id = {e.id: e for e in examples}
    write_selected([by_id[i] for i in selection["id"]], out / "selected.jsonl")


def load_features(path: str | Path, ids: list[str]) -> np.ndarray:
    """Feature vectors aligned with ``ids``: a .npy with one row per id in that order, or a Parquet file
    with an ``id`` column and one list-valued column (``vector``/``embedding``/``features``)."""
    path = Path(path)
    if path.suffix == ".npy":
        x = np.load(path, allow_pickle=False)
        if x.ndim != 2 or len(x) != len(ids):
            raise ValueError(f"{path}: shape {x.shape}, expected ({len(ids)}, D) rows in the scores table's order")
        return x
    frame = pd.read_parquet(path)
    col = next((c for c in ("vector", "embedding", "features") if c in frame), None)
    if "id" not in frame or col is None:
        raise ValueError(f"{path}: needs an 'id' column and one of vector/embedding/features")
    vecs = dict(zip(frame["id"], frame[col], strict=True))
    missing = [i for i in ids if i not in vecs]
    if missing:
        raise ValueError(f"{path}: no vector for {len(missing)} ids (first: {missing[0]})")
    return np.stack([np.asarray(vecs[i], dtype=np.float32) for i in ids])


def write_dpp_selection(examples: list[Example], table: pd.DataFrame, features: np.ndarray, out: str | Path, *,
                        budget: float, gamma: float = 1.0, quality_by: str | None = None, lam: float = 0.0,
                        normalize: bool = True, checkpoint: str | Path | None = None, direction: str | None = None):
    """Greedy MAP DPP selection (diversity, or quality x diversity with ``quality_by`` and ``lam`` > 0).

    A score whose direction (``direction``, else the registry's) is "low" (e.g. lp) is negated to serve as
    quality. Rank = pick order; the reason names the marginal gain. Returns (table, DPPResult);
    ``result.stopped`` says why a selection is short.
    """
    from siftlm.select.dpp import greedy_map
    from siftlm.select.topk import budget_count

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = np.asarray(features, dtype=np.float32)
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    quality = None
    if quality_by:
        sign = -1.0 if (direction or score_registry.SCORES.get(quality_by, (None, None, "high"))[2]) == "low" else 1.0
        quality = sign * table[quality_by].to_numpy(dtype=np.float64)
    k = budget_count(budget, len(table))
    res = greedy_map(x, k, gamma=gamma, quality=quality, lam=lam, checkpoint=checkpoint)
    table = table.copy()
    table["rank"] = 0
    table.loc[table.index[res.order], "rank"] = np.arange(1, len(res.order) + 1)
    table["selected"] = table["rank"] > 0
    table["dpp_gain"] = np.nan
    table.loc[table.index[res.order], "dpp_gain"] = res.gains
    chosen = table.iloc[res.order]
    q_text = [f", {quality_by}={v:.4g}" for v in chosen[quality_by]] if quality_by else [""] * len(chosen)
    selection = pd.DataFrame({
        "id": chosen["id"].to_numpy(), "rank": chosen["rank"].to_numpy(), "score": res.gains,
        "reason": [f"dpp pick {r} of {len(res.order)}: log marginal gain {g:.4g}{qt} (gamma={gamma}, lambda={lam})"
                   for r, g, qt in zip(chosen["rank"], res.gains, q_text, strict=True)],
    })
    _write_selection_files(examples, table, selection, out)
    return table, res


def _input_columns(table: pd.DataFrame, by: str) -> list[str]:
    """The signal columns a score is computed from, so each selected row says why it was kept."""
    needs = score_registry.SCORES[by][1] if by in score_registry.SCORES else ()
    cols: list[str] = []
    for need in needs:
        if need.endswith("_trajectory"):
            kind = need.split("_")[0]
            cols += sorted((c for c in table.columns if c.startswith(kind + "_") and c[len(kind) + 1:].isdigit()),
                           key=lambda c: int(c.split("_")[1]))
        elif need in table:
            cols.append(need)
    return cols


def write_subset_selection(examples: list[Example], table: pd.DataFrame, features: np.ndarray | None,
                           out: str | Path, *, method: str, budget: float, by: str | None = None,
                           direction: str | None = None, seed: int = 0, n_clusters: int | None = None,
                           threshold: float = 0.95, kmeans_backend: str = "sklearn") -> pd.DataFrame:
    """random | cluster (each k-means cluster's share by ``by``) | cluster-random | dedup (cosine >= threshold).

    Writes the same three files as ``write_selection``; rows carry ``cluster`` and, for dedup, ``duplicate_of``.
    """
    from siftlm.select.cluster import apportion, kmeans, per_cluster, random_subset
    from siftlm.select.dedup import dedup
    from siftlm.select.topk import budget_count

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = table.copy()
    ids = table["id"].tolist()
    n = len(table)
    reasons: list[str]
    if method == "random":
        k = budget_count(budget, n)
        pos = random_subset(n, k, seed=seed)
        reasons = [f"uniform random, seed {seed}: {k} of {n}"] * k
    elif method in ("cluster", "cluster-random"):
        if features is None:
            raise ValueError(f"--method {method} needs --features (sentence embeddings)")
        k = budget_count(budget, n)
        labels = kmeans(features, n_clusters, seed=seed, backend=kmeans_backend)
        table["cluster"] = labels
        direction = direction or score_registry.SCORES.get(by or "", (None, None, "high"))[2]
        scores = table[by].to_numpy() if method == "cluster" else None
        pos = per_cluster(ids, labels, k, scores=scores, direction=direction, seed=seed)
        sizes = dict(zip(*np.unique(labels, return_counts=True), strict=True))
        quota = dict(zip(sorted(sizes), apportion([sizes[c] for c in sorted(sizes)], k), strict=True))
        how = f"{direction}est {by}" if method == "cluster" else f"random (seed {seed})"
        reasons = [f"cluster {labels[p]} (size {sizes[labels[p]]}, quota {quota[labels[p]]}): {how}"
                   + (f" {by}={table[by].iloc[p]:.4g}" if method == "cluster" else "") for p in pos]
    elif method == "dedup":
        if features is None:
            raise ValueError("--method dedup needs --features (embeddings)")
        labels = kmeans(features, n_clusters, seed=seed, backend=kmeans_backend) if n > 20_000 else None
        pos, dropped = dedup(features, ids, threshold=threshold, labels=labels)
        table["duplicate_of"] = [dropped.get(i) for i in ids]
        reasons = [f"no kept example with cosine >= {threshold}"] * len(pos)
    else:
        raise ValueError(f"unknown method {method!r}")
    table["rank"] = 0
    table.loc[table.index[pos], "rank"] = np.arange(1, len(pos) + 1)
    table["selected"] = table["rank"] > 0
    chosen = table.iloc[pos]
    selection = pd.DataFrame({"id": chosen["id"].to_numpy(), "rank": chosen["rank"].to_numpy(),
                              "score": chosen[by].to_numpy() if by in chosen else np.nan, "reason": reasons})
    _write_selection_files(examples, table, selection, out)
    return table


def run_davir(cfg: RunConfig) -> dict:
    """The whole DavIR pipeline; returns the summary that is also written to ``summary.json``."""
    timer = Timer()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    prep, table, extra = score_dataset(cfg, timer)
    write_rejects(prep.rejects, out / "rejects.jsonl")
    with timer("select + write"):
        table = write_selection(prep.examples, table, out, by=cfg.by, budget=cfg.budget, direction=cfg.direction)
    counts = prep.counts()
    counts["selected"] = int(table["selected"].sum())
    summary = {
        "data": str(cfg.data), "format": prep.dataset.format, "model": cfg.model, "counts": counts,
        "selection": {"by": cfg.by, "budget": cfg.budget,
                      "direction": cfg.direction or score_registry.SCORES[cfg.by][2]},
        "score_means": {k: _finite_mean(table[k]) for k in score_registry.SCORES if k in table},
        "non_finite_scores": extra["guarded"],
        "length_correlations": length_correlations(table),
        "timings_s": timer.times,
        "settings": {"signals": asdict(cfg.signals), "train": asdict(extra["train"])},
        "outputs": {k: str(out / k) for k in ("scores.parquet", "selection.parquet", "selected.jsonl",
                                              "rejects.jsonl", "summary.json", "report.html")},
    }
    with atomic_write(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    write_report(table, summary, out / "report.html", by=cfg.by)
    return summary


def _finite_mean(s: pd.Series) -> float | None:
    v = s.to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None
