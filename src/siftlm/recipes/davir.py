"""The DavIR pipeline end to end: score a dataset (DavIR, RHO-LM, LP, LP_app, IFD and baselines), select, and
write the summary and the report. ``siftlm demo`` and ``siftlm score`` run these.

``score_dataset`` runs (or reuses from the store) every model pass the scores need: the base loss pass, the
response-only pass (IFD), and the reference fine-tune with its trajectory P_0..P_n (the reference model is the
base fine-tuned on the full set, i.e. the model after the last epoch).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from siftlm.config import RunConfig, SelectConfig, TrainConfig, from_dict
from siftlm.data import read_dataset, write_rejects
from siftlm.data.io import atomic_write
from siftlm.models.load import load_model
from siftlm.progress import Timer
from siftlm.report.selection import write_report
from siftlm.report.stats import finite_mean, length_correlations
from siftlm.scores import SCORES, add_scores, direction
from siftlm.select import topk
from siftlm.select.run import write_selection
from siftlm.signals.passes import run_pass
from siftlm.signals.prepare import Prepared, prepare
from siftlm.signals.table import signals_table
from siftlm.signals.trajectory import train_reference


def reference_config(folder: Path, given: TrainConfig) -> TrainConfig:
    """The settings of an existing siftlm training folder (so it is reused as it is), else ``given``."""
    ident = folder / "siftlm-identity.json"
    return from_dict(TrainConfig, json.loads(ident.read_text())["config"]) if ident.exists() else given


def score_dataset(cfg: RunConfig, timer: Timer | None = None, *, lm=None) -> tuple[Prepared, pd.DataFrame, dict]:
    """Base pass, response-only pass, reference fine-tune with trajectory, every score (``lm``: the model, if it is
    loaded already)."""
    timer = timer or Timer()
    if lm is None:
        with timer("load model"):
            lm = load_model(cfg.model)
    with timer("read + encode"):
        prep = prepare(read_dataset(cfg.data, format=cfg.format), lm.tokenizer, cfg.signals)
    with timer("base loss pass"):
        base = run_pass(prep, "loss", lm.model, lm.fingerprint, label="base loss")
    uncond = None
    if cfg.ifd:
        with timer("unconditional pass (IFD)"):
            uncond = run_pass(prep, "uncond", lm.model, lm.fingerprint, label="response-only loss")
    ref_dir = Path(cfg.reference) if cfg.reference else Path(cfg.out) / "reference"
    tcfg = reference_config(ref_dir, cfg.train)
    with timer("reference fine-tune + trajectory"):
        traj, fps = train_reference(lm, prep, ref_dir, tcfg)
    table, guarded = add_scores(signals_table(prep, base, ref=traj[-1], uncond=uncond, trajectory=traj))
    return prep, table, {"guarded": guarded, "model_fingerprints": fps, "train": tcfg}


def run_davir(cfg: RunConfig) -> dict:
    """Score, select the top ``cfg.budget`` by ``cfg.by`` and write every output; returns the summary that is
    also written to ``summary.json``."""
    timer = Timer()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    prep, table, extra = score_dataset(cfg, timer)
    write_rejects(prep.rejects, out / "rejects.jsonl")
    with timer("select + write"):
        picked = topk.pick(table, None, SelectConfig(by=cfg.by, budget=cfg.budget, direction=cfg.direction))
        table = write_selection(prep.examples, table, picked, out).table
    counts = {**prep.counts(), "selected": int(table["selected"].sum())}
    summary = {
        "data": str(cfg.data), "format": prep.dataset.format, "model": cfg.model, "counts": counts,
        "selection": {"by": cfg.by, "budget": cfg.budget, "direction": direction(cfg.by, cfg.direction)},
        "score_means": {k: finite_mean(table[k]) for k in SCORES if k in table},
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


def score_to_file(cfg: RunConfig) -> tuple[pd.DataFrame, dict]:
    """``score_dataset`` and write ``OUT/scores.parquet``; returns the table and the length correlations."""
    prep, table, extra = score_dataset(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "scores.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    return table, {"length_correlations": length_correlations(table), "non_finite": extra["guarded"]}


def train_on_data(data: str, model: str, out: str, signals, tcfg: TrainConfig, *, format: str | None = None) -> list:
    """``siftlm train``: the reference fine-tune with its trajectory; returns the frames P_0..P_n."""
    lm = load_model(model)
    prep = prepare(read_dataset(data, format=format), lm.tokenizer, signals)
    return train_reference(lm, prep, out, tcfg)[0]
