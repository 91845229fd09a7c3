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

from siftlm.backends import Runtime
from siftlm.config import DataConfig, RunConfig, SelectConfig, TrainConfig, from_dict
from siftlm.data import open_dataset, write_rejects
from siftlm.data.write import rejects_by_reason, require_examples
from siftlm.files import atomic_write
from siftlm.models.load import load_model
from siftlm.progress import Timer, console
from siftlm.recipes.runtime import runtime_for
from siftlm.report import evidence
from siftlm.report.selection import write_report
from siftlm.scores import SCORES, add_scores, direction
from siftlm.select import topk
from siftlm.select.run import by_tokens, write_selection
from siftlm.signals.passes import run_pass, stored
from siftlm.signals.prepare import Prepared, prepare
from siftlm.signals.table import signals_table
from siftlm.stats import finite_mean, length_correlations
from siftlm.train.reference import check_folder, find_reference, finished, identity, stored_identity, train_reference


def reference_config(folder: Path, given: TrainConfig) -> TrainConfig:
    """The settings of an existing siftlm training folder (so it is reused as it is), else ``given``."""
    stored = stored_identity(folder)
    return from_dict(TrainConfig, stored["config"]) if stored is not None else given


def reference_folder(cfg: RunConfig, prep: Prepared, base_fp: str, runtime: Runtime | None = None) -> tuple[Path, TrainConfig]:
    """Where the reference model is (or will be trained) and with which settings: ``--reference``, else a finished
    training of this data, model and settings recorded in the store, else OUT/reference. A folder holding a run on
    other data is an error here, before any model pass."""
    if cfg.reference:
        folder = Path(cfg.reference)
    else:
        folder = Path(cfg.out) / "reference"
        if stored_identity(folder) is None:
            found = find_reference(prep, base_fp, cfg.train, runtime)
            if found is not None:
                console.print(f"reference: reusing {found} (same data, model and settings)", highlight=False)
                folder = found
    tcfg = reference_config(folder, cfg.train)
    check_folder(folder, identity(prep, base_fp, tcfg))
    return folder, tcfg


def score_dataset(cfg: RunConfig, timer: Timer | None = None, *, lm=None, prep: Prepared | None = None,
                  runtime: Runtime | None = None) -> tuple[Prepared, pd.DataFrame, dict]:
    """Base pass, response-only pass, reference fine-tune with trajectory, every score (``lm``: the model, if it is
    loaded already; ``prep``: the data prepared with its tokenizer, if it is; ``runtime``: where passes and the
    training run, default as ``cfg.signals`` says)."""
    timer = timer or Timer()
    rt = runtime or runtime_for(cfg.signals)
    if prep is None:
        with timer("read"):               # before the model: a file with nothing valid fails in a second
            ds = require_examples(open_dataset(cfg.data, cfg.input), Path(cfg.out) / "rejects.jsonl")
    if lm is None:
        with timer("load model"):
            lm = load_model(cfg.model, dtype=cfg.signals.dtype, master_fp32=cfg.train.full)
    if prep is None:
        with timer("encode"):
            prep = prepare(ds, lm.tokenizer, cfg.signals)
    ref_dir, tcfg = reference_folder(cfg, prep, lm.fingerprint, rt)     # checked before any pass runs
    passes = [("base loss pass", "loss", "base loss")] + (
        [("unconditional pass (IFD)", "uncond", "response-only loss")] if cfg.ifd else [])
    frames = {}
    for step, name, label in passes:
        if stored(prep, name, lm, runtime=rt):
            timer.cached.append(step)
        with timer(step):
            frames[name] = run_pass(prep, name, lm, runtime=rt, label=label)
    base, uncond = frames["loss"], frames.get("uncond")
    if finished(ref_dir, lm.fingerprint):
        timer.cached.append("reference fine-tune + trajectory")
    with timer("reference fine-tune + trajectory"):
        traj, fps, _ = train_reference(lm, prep, ref_dir, tcfg, runtime=rt)
    table, guarded = add_scores(signals_table(prep, base, ref=traj[-1], uncond=uncond, trajectory=traj))
    return prep, table, {"guarded": guarded, "model_fingerprints": fps, "train": tcfg,
                         "precision": {"compute": lm.precision.name, "reason": lm.precision.reason}}


def run_davir(cfg: RunConfig, *, select: bool = True) -> dict:
    """Score, select the top ``cfg.budget`` by ``cfg.by`` (unless ``select`` is False) and write every output:
    scores.parquet (selection.parquet, selected.jsonl), rejects.jsonl, summary.json, report.html. Returns the summary."""
    timer = Timer()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    prep, table, extra = score_dataset(cfg, timer)
    write_rejects(prep.rejects, out / "rejects.jsonl")
    with timer("select + write"):
        if select:
            scfg = SelectConfig(by=cfg.by, budget=cfg.budget, budget_tokens=cfg.budget_tokens, direction=cfg.direction,
                                budget_on=cfg.budget_on)
            picked = by_tokens(table, None, scfg) if cfg.budget_tokens is not None else topk.pick(table, None, scfg)
            written = write_selection(prep.examples, table, picked, out, language=cfg.language)
            table, detectors = written.table, written.detectors
        else:
            with atomic_write(out / "scores.parquet") as tmp:
                table.to_parquet(tmp, index=False)
    counts = {**prep.counts(), **({"selected": int(table["selected"].sum())} if select else {})}
    files = ("scores.parquet",) + (("selection.parquet", "selected.jsonl") if select else ()) + (
        "rejects.jsonl", "summary.json", "report.html")
    summary = {
        "data": str(cfg.data), "format": prep.dataset.format, "model": cfg.model, "counts": counts,
        "rejects_by_reason": rejects_by_reason(prep.rejects),
        "selection": {"by": cfg.by, "budget": cfg.budget, "budget_tokens": cfg.budget_tokens,
                      "direction": direction(cfg.by, cfg.direction)} if select else None,
        "score_means": {k: finite_mean(table[k]) for k in SCORES if k in table},
        "non_finite_scores": extra["guarded"],
        "length_correlations": length_correlations(table),
        "timings_s": timer.times,
        "cached": timer.cached,
        "memory": timer.memory(),
        "precision": extra["precision"],
        "settings": {"signals": asdict(cfg.signals), "train": asdict(extra["train"])},
        "evidence": evidence.for_score(cfg.by) if select else None,
        "detectors": detectors if select else None,
        "outputs": {k: str(out / k) for k in files},
    }
    with atomic_write(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    write_report(table, summary, out / "report.html", by=cfg.by, examples=prep.examples)
    return summary


def train_on_data(data: str, model: str, out: str, signals, tcfg: TrainConfig, src: DataConfig) -> tuple[list, Prepared]:
    """``siftlm train``: the reference fine-tune with its trajectory (and ``OUT/rejects.jsonl``); returns the frames
    P_0..P_n and the prepared data."""
    ds = require_examples(open_dataset(data, src), Path(out) / "rejects.jsonl")
    lm = load_model(model, dtype=signals.dtype, master_fp32=tcfg.full)
    prep = prepare(ds, lm.tokenizer, signals)
    Path(out).mkdir(parents=True, exist_ok=True)
    write_rejects(prep.rejects, Path(out) / "rejects.jsonl")
    return train_reference(lm, prep, out, tcfg, runtime=runtime_for(signals)).frames, prep
