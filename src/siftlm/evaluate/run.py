"""``siftlm evaluate``: held-out loss, generation and judging of one model on one or more evaluation sets.

Per set it writes ``<set>/losses.parquet`` (per-example response loss of the reference answers), ``<set>/outputs.json``
(alpaca_eval's model-outputs format: instruction, output, generator, dataset), ``<set>/judgments.parquet`` and, for
all sets, ``summary.json``: every mean with its 95% bootstrap CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm import stats
from siftlm.backends import Runtime
from siftlm.config import EvaluateConfig
from siftlm.data import detect
from siftlm.errors import UsageError
from siftlm.evaluate import behaviour
from siftlm.evaluate.generate import generate
from siftlm.evaluate.judge import Judge
from siftlm.evaluate.sets import EvalItem, as_dataset, load_eval_set
from siftlm.files import atomic_write
from siftlm.models.load import load_model
from siftlm.progress import bar
from siftlm.signals.passes import run_pass
from siftlm.signals.prepare import prepare


def set_name(spec: str) -> str:
    return spec.removeprefix("builtin:") if spec.startswith("builtin:") else Path(spec).stem


def heldout_loss(lm, items: list[EvalItem], cfg: EvaluateConfig, name: str, runtime: Runtime | None = None) -> pd.DataFrame:
    """Per-example mean response NLL of the reference answers (the items that have them), through the loss pass."""
    ds = as_dataset(items, name)
    if not ds.examples:
        return pd.DataFrame(columns=["id", "loss", "n_tokens"])
    prep = prepare(ds, lm.tokenizer, cfg.signals)
    frame = run_pass(prep, "loss", lm, runtime=runtime, label=f"{name} held-out loss")
    return frame[["id", "loss", "nll_sum", "n_tokens"]]


def per_token_ci(losses: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Held-out loss per token (summed NLL / summed tokens over the items) with a bootstrap CI over items."""
    nll, n = losses["nll_sum"].to_numpy(dtype=float), losses["n_tokens"].to_numpy(dtype=float)
    if not len(n) or n.sum() == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    m, lo, hi = stats.bootstrap_ci(lambda a, b: a.sum() / b.sum(), nll, n, n_boot=n_boot, seed=seed)
    return {"mean": m, "low": lo, "high": hi, "n": int(len(n)), "tokens": int(n.sum())}


def _outputs(items: list[EvalItem], answers: list[list[str]], generator: str) -> list[dict]:
    """alpaca_eval's model-outputs records (the first turn); later turns under ``turns``."""
    return [{"instruction": i.turns[0], "output": a[0], "generator": generator, "dataset": i.dataset, "id": i.id,
             **({"turns": a} if len(a) > 1 else {})} for i, a in zip(items, answers, strict=True)]


def judge_set(judge: Judge, items: list[EvalItem], answers: list[list[str]], cfg: EvaluateConfig,
              mode: str) -> tuple[pd.DataFrame, dict]:
    """Pairwise preferences against the references (or ``cfg.compare``) or single-answer grades, with the summary."""
    if mode == "single":
        jobs = []
        for item, ans in zip(items, answers, strict=True):
            convo = []
            for t, (q, a) in enumerate(zip(item.turns, ans, strict=True)):
                convo = convo + [{"role": "user", "content": q}]
                ref = item.references[t] if item.references else None
                jobs.append((f"{item.id}:turn{t + 1}", convo, a, ref))
                convo = convo + [{"role": "assistant", "content": a}]
        rows = pd.DataFrame(judge.grade(jobs))
        return rows, {"mode": "single", "grade": stats.mean_ci(rows["grade"].astype(float), n_boot=cfg.n_boot,
                                                                seed=cfg.seed)}
    others = _other_outputs(items, cfg)
    jobs = [(i.id, i.turns[0], a[0], others[i.id]) for i, a in zip(items, answers, strict=True) if i.id in others]
    if not jobs:
        raise UsageError("pairwise judging needs something to compare with: the set has no reference answers; give "
                         "--compare (another model's outputs) or --judge-mode single")
    rows = pd.DataFrame(judge.pairwise(jobs))
    rows["length_diff"] = [len(m) - len(o) for _, _, m, o in jobs]       # characters, as AlpacaEval measures length
    pref = rows["preference"].astype(float)
    return rows, {"mode": "pairwise", "against": cfg.compare or "references",
                  "win_rate": stats.win_rate(pref, n_boot=cfg.n_boot, seed=cfg.seed),
                  "length_controlled": stats.length_controlled_win_rate(pref, rows["length_diff"]),
                  "avg_length_model": float(np.mean([len(m) for _, _, m, _ in jobs])) if jobs else None,
                  "avg_length_other": float(np.mean([len(o) for _, _, _, o in jobs])) if jobs else None}


def _other_outputs(items: list[EvalItem], cfg: EvaluateConfig) -> dict[str, str]:
    if not cfg.compare:
        return {i.id: i.references[0] for i in items if i.references}
    rows = json.loads(Path(cfg.compare).read_text())
    by_id = {r["id"]: r["output"] for r in rows if "id" in r}
    by_instruction = {r["instruction"]: r["output"] for r in rows}
    return {i.id: by_id.get(i.id, by_instruction.get(i.turns[0])) for i in items
            if i.id in by_id or i.turns[0] in by_instruction}


def evaluate_model(lm, cfg: EvaluateConfig, runtime: Runtime | None = None) -> dict:
    """Every set of ``cfg.eval``: held-out loss, generation, judging as asked; writes the files and the summary.
    Passes run by ``runtime`` (default: this process)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    judge = Judge(cfg.judge, out / "judge-cache") if cfg.judge.url else None
    summary = {"model": lm.name, "model_fingerprint": lm.fingerprint,
               "precision": {"compute": lm.precision.name, "reason": lm.precision.reason} if lm.precision else None,
               "sets": {}}
    for spec in [s.strip() for s in cfg.eval.split(",") if s.strip()]:
        name = set_name(spec)
        items = load_eval_set(spec)[: cfg.limit] if cfg.limit else load_eval_set(spec)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        info: dict = {"items": len(items), "with_references": sum(1 for i in items if i.references)}
        if cfg.loss:
            losses = heldout_loss(lm, items, cfg, name, runtime)
            with atomic_write(folder / "losses.parquet") as tmp:
                losses.to_parquet(tmp, index=False)
            info["loss"] = stats.mean_ci(losses["loss"], n_boot=cfg.n_boot, seed=cfg.seed)       # per item
            info["loss_per_token"] = per_token_ci(losses, n_boot=cfg.n_boot, seed=cfg.seed)
        if cfg.behaviour:
            with bar(f"{name} behaviour", len(items), enabled=cfg.signals.progress) as advance:
                acts = behaviour.behaviour(lm, items, max_new_tokens=cfg.max_new_tokens, language=cfg.language,
                                           continuations=behaviour.continuations(), signals=cfg.signals, name=name,
                                           on_batch=advance, runtime=runtime)
            with atomic_write(folder / "behaviour.parquet") as tmp:
                acts.to_parquet(tmp, index=False)
            info["behaviour"] = {c: stats.mean_ci(acts[c], n_boot=cfg.n_boot, seed=cfg.seed)
                                 for c in (*detect.FLAGS, "words", "prop_refusal", "prop_foreign") if c in acts}
        if cfg.generate or judge:
            with bar(f"{name} generation", sum(len(i.turns) for i in items), enabled=cfg.signals.progress) as advance:
                answers = generate(lm, items, max_new_tokens=cfg.max_new_tokens, sample=cfg.sample, seed=cfg.seed,
                                   token_budget=cfg.signals.token_budget, on_batch=advance)
            with atomic_write(folder / "outputs.json") as tmp:
                tmp.write_text(json.dumps(_outputs(items, answers, cfg.generator or lm.name), indent=2,
                                          ensure_ascii=False))
            if judge:
                mode = cfg.judge_mode if cfg.judge_mode != "auto" else ("single" if name == "mt-bench" else "pairwise")
                rows, info["judge"] = judge_set(judge, items, answers, cfg, mode)
                with atomic_write(folder / "judgments.parquet") as tmp:
                    rows.to_parquet(tmp, index=False)
        summary["sets"][name] = info
    if judge:
        summary["judge"] = {"url": cfg.judge.url, "model": cfg.judge.model, "key_env": cfg.judge.key_env,
                            **{k: v for k, v in vars(judge.stats).items() if k != "failures"},
                            "failures": len(judge.stats.failures), "failures_file": str(out / "failures.jsonl")}
        judge.write_failures(out / "failures.jsonl")
    with atomic_write(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    if judge:
        judge.check(judge.stats.requests + judge.stats.cached, "judge requests")
    return summary


def evaluate(model: str, cfg: EvaluateConfig, *, adapter: str | None = None, runtime: Runtime | None = None) -> dict:
    """Load ``model`` (a folder, builtin:<name>, hub id, or an adapter folder such as ``siftlm finetune``'s
    OUT/final) and evaluate it."""
    lm = load_model(model, adapter=adapter, dtype=cfg.signals.dtype)
    return evaluate_model(lm, cfg, runtime)
