"""``siftlm run --target FILE``: targeted selection in one command. The examples of FILE (a few dozen of what you
want the model to learn) steer the selection: every training example and every target example gets the same
features (one cached pass each), and the method keeps the training examples nearest to the targets. No reference
fine-tune is needed. Writes what ``siftlm run`` writes: scores.parquet (with the method's score), selection.parquet,
selected.jsonl, rejects.jsonl (and target-rejects.jsonl), features.parquet and target-features.parquet, summary.json
and report.html.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from siftlm.backends import Runtime
from siftlm.config import DataConfig, RunConfig, SelectConfig, UsageError, closest
from siftlm.data import open_dataset, write_rejects
from siftlm.data.write import rejects_by_reason, require_examples
from siftlm.files import atomic_write
from siftlm.models.load import load_model, load_sentence_model
from siftlm.progress import Timer
from siftlm.recipes.runtime import runtime_for
from siftlm.report import evidence
from siftlm.report.selection import write_report
from siftlm.select.run import METHODS, by_tokens, write_selection
from siftlm.signals.passes import run_pass, stored
from siftlm.signals.prepare import prepare, prepare_texts
from siftlm.signals.table import load_features, signals_table, write_frame
from siftlm.stats import finite_mean

# --target-method: (selection method, feature pass); the grids' names are repr->query, less->query, nearest->query
TARGET_METHODS = {"repr": ("repr", "lm-embed"), "less": ("less", "grads"), "nearest": ("less", "embed")}


def _features(prep, ds_texts, pass_name: str, lm, timer: Timer, label: str, runtime: Runtime) -> pd.DataFrame:
    if pass_name == "embed":
        sentence = load_sentence_model()
        with timer(f"{label} sentence embeddings"):
            return run_pass(ds_texts, "embed", sentence, runtime=runtime, options={"part": "full"},
                            label=f"sentence embeddings ({label})")
    step = f"{label} {pass_name} pass"
    if stored(prep, pass_name, lm, runtime=runtime):
        timer.cached.append(step)
    with timer(step):
        return run_pass(prep, pass_name, lm, runtime=runtime, label=f"{pass_name} ({label})")


def run_targeted(cfg: RunConfig) -> dict:
    """Select the examples of ``cfg.data`` nearest to those of ``cfg.target`` with ``cfg.target_method``."""
    if cfg.target_method not in TARGET_METHODS:
        raise UsageError(f"unknown --target-method {cfg.target_method!r}{closest(cfg.target_method, TARGET_METHODS)}; "
                         f"known: {', '.join(TARGET_METHODS)}")
    method, pass_name = TARGET_METHODS[cfg.target_method]
    timer, out = Timer(), Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with timer("read"):
        ds = require_examples(open_dataset(cfg.data, cfg.input), out / "rejects.jsonl")
        target = require_examples(open_dataset(cfg.target, DataConfig()), out / "target-rejects.jsonl")
    with timer("load model"):
        lm = load_model(cfg.model, dtype=cfg.signals.dtype)
    with timer("encode"):
        prep, tprep = prepare(ds, lm.tokenizer, cfg.signals), prepare(target, lm.tokenizer, cfg.signals)
    write_rejects(prep.rejects, out / "rejects.jsonl")
    write_rejects(tprep.rejects, out / "target-rejects.jsonl")
    texts = (prepare_texts(prep.dataset, cfg.signals), prepare_texts(tprep.dataset, cfg.signals)) \
        if pass_name == "embed" else (None, None)
    rt = runtime_for(cfg.signals)
    frame = _features(prep, texts[0], pass_name, lm, timer, "data", rt)
    tframe = _features(tprep, texts[1], pass_name, lm, timer, "target", rt)
    meta = {"pass": pass_name, "model": cfg.model if pass_name != "embed" else "builtin:all-minilm-l6-v2"}
    write_frame(frame, out / "features.parquet", meta)
    write_frame(tframe, out / "target-features.parquet", meta)
    table = signals_table(prep, None)
    scfg = SelectConfig(method=method, budget=cfg.budget, budget_tokens=cfg.budget_tokens, budget_on=cfg.budget_on,
                        target=str(out / "target-features.parquet"), features=str(out / "features.parquet"))
    x = load_features(out / "features.parquet", table["id"].tolist())
    with timer("select + write"):
        picked = by_tokens(table, x, scfg) if cfg.budget_tokens is not None else METHODS[method].pick(table, x, scfg)
        written = write_selection(prep.examples, table, picked, out, language=cfg.language)
    score = f"{method}_score"
    summary = {
        "data": str(cfg.data), "target": str(cfg.target), "format": prep.dataset.format, "model": cfg.model,
        "counts": {**prep.counts(), "selected": int(written.table["selected"].sum())},
        "target_counts": tprep.counts(), "rejects_by_reason": rejects_by_reason(prep.rejects),
        "selection": {"by": score, "method": f"{cfg.target_method} -> target", "features": pass_name,
                      "budget": cfg.budget, "budget_tokens": cfg.budget_tokens, "direction": "high"},
        "score_means": {score: finite_mean(written.table[score])}, "length_correlations": {},
        "timings_s": timer.times, "cached": timer.cached, "memory": timer.memory(),
        "precision": {"compute": lm.precision.name, "reason": lm.precision.reason} if lm.precision else None,
        "settings": {"signals": asdict(cfg.signals)}, "detectors": written.detectors,
        "evidence": evidence.for_target(cfg.target_method),
        "outputs": {k: str(out / k) for k in ("scores.parquet", "selection.parquet", "selected.jsonl", "rejects.jsonl",
                                               "summary.json", "report.html")},
    }
    with atomic_write(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    write_report(written.table, summary, out / "report.html", by=score, examples=prep.examples)
    return summary
