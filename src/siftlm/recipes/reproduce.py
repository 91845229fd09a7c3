"""The papers' measurable claims on your model and data, each number beside the paper's with a bootstrap CI.

Tables (``siftlm reproduce TABLE ...``):

- ``davir-table1``: response loss and predictive entropy against length (DavIR Table 1, Pearson / Spearman);
- ``davir-table2``: |correlation| of RHO-LM and of DavIR with length, and whether DavIR's is lower (Table 2);
- ``davir-table3``: each DPO objective's Pearson correlation with the response-length difference after a short
  vanilla DPO run, and whether DavIR-DPO's is the closest to 0 of the sigmoid family (Table 3);
- ``lp-table3``: Kendall tau between LP(1) and LP_app(1) (learning-percentage Table 3);
- ``dpp-eq3``: log-determinant distance (eq. 3) of a DPP selection, the top-k by DavIR and random subsets of the
  same size, in normalised LoRA-gradient space (the DPP paper's claim: DPP subsets are the most diverse).

Lengths are total tokens (prompt + response, as the tables' "number of tokens in a given document"); the DPO
table uses chosen - rejected response tokens. CIs are percentile intervals over 1,000 bootstrap resamples of
the examples (pairs); "claim" rows bootstrap the paired difference.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.assets import demo_data
from siftlm.config import DPOTrainConfig, GradConfig, ReproduceConfig, RunConfig, SelectConfig, UsageError
from siftlm.data import open_dataset
from siftlm.diversity import log_det_distance
from siftlm.files import atomic_write
from siftlm.models.load import load_model
from siftlm.progress import Timer
from siftlm.recipes import ldd_grid
from siftlm.recipes.davir import score_dataset
from siftlm.recipes.dpo import run_dpo
from siftlm.recipes.dpo_length import analyze_dpo_length
from siftlm.recipes.runtime import runtime_for
from siftlm.report import reproduce as page
from siftlm.select import dpp, sample, topk
from siftlm.signals.passes import run_pass
from siftlm.signals.prepare import prepare
from siftlm.signals.table import trajectory_columns
from siftlm.stats import bootstrap_ci, kendall, l2_normalize, pearson, spearman

TABLES = ("davir-table1", "davir-table2", "davir-table3", "lp-table3", "dpp-eq3", "dpp-fig2", "dpp-fig4")
GRID_TABLES = ("dpp-fig2", "dpp-fig4")      # from committed experiment grids (--grids), no model of their own

# the papers' numbers for the rows we measure
DAVIR_T1 = {("entropy", "pearson"): {"gemma-2b": -0.68, "gemma-2-2b": -0.66},
            ("loss", "pearson"): {"gemma-2b": -0.56, "gemma-2-2b": -0.61},
            ("entropy", "spearman"): {"gemma-2b": -0.83, "gemma-2-2b": -0.80},
            ("loss", "spearman"): {"gemma-2b": -0.69, "gemma-2-2b": -0.76}}
DAVIR_T2 = {("rho", "spearman"): {"gemma-2b": 0.75, "gemma-2-2b": 0.83},
            ("rho", "pearson"): {"gemma-2b": 0.64, "gemma-2-2b": 0.64},
            ("davir", "spearman"): {"gemma-2b": 0.30, "gemma-2-2b": 0.47},
            ("davir", "pearson"): {"gemma-2b": 0.33, "gemma-2-2b": 0.46}}
DAVIR_T3 = {"sigmoid": 0.38, "apo_down": 0.36, "apo_zero": 0.39, "hinge": 0.39, "ipo": -0.10, "nca_pair": 0.29,
            "sppo_hard": -0.11, "davir": 0.07}          # UltraFeedback, Zephyr-7B-SFT; TRL names
LP_T3 = {"OPT-1.3B": 0.53, "OPT-2.7B": 0.55, "OPT-6.7B": 0.60, "OPT-13B": 0.61, "Llama-2-7B": 0.64, "Llama-2-13B": 0.62}
CORR = {"pearson": pearson, "spearman": spearman}


@dataclass
class Row:
    table: str
    quantity: str
    paper: str              # the paper's value(s), as printed there
    ours: float
    low: float              # bootstrap CI (or the spread over seeds, for LDD)
    high: float
    verdict: str
    n: int


def _paper(values: dict) -> str:
    return ", ".join(f"{v:+.2f} ({k})" for k, v in values.items())


def _against(ours, low, high, values: dict) -> str:
    """Agreement with a set of paper values, from our CI alone: it overlaps their range; it holds 0 (no sign is
    established, whatever the point estimate's); it lies on the papers' side of 0 (weaker or stronger); or opposite."""
    lo, hi = min(values.values()), max(values.values())
    if high >= lo and low <= hi:
        return "agrees: CI overlaps the paper's range"
    if low <= 0 <= high:
        return "no sign detected: our CI includes 0, the paper's range does not"
    if np.sign(low) == np.sign(high) == np.sign(lo) == np.sign(hi):
        return f"same sign, {'weaker' if abs(ours) < min(abs(lo), abs(hi)) else 'stronger'} than the paper"
    return "disagrees: opposite sign"


def _claim(name: str, table: str, diff: tuple, n: int, what: str) -> Row:
    d, low, high = diff
    verdict = "agrees" if low > 0 else ("disagrees" if high < 0 else "inconclusive: CI includes 0")
    return Row(table, name, what, d, low, high, verdict, n)


def davir_table1(t: pd.DataFrame, n_boot: int) -> list[Row]:
    length = (t["n_prompt"] + t["n_response"]).to_numpy(float)
    rows = []
    for (signal, kind), paper in DAVIR_T1.items():
        est = bootstrap_ci(CORR[kind], t[f"base_{signal}"].to_numpy(), length, n_boot=n_boot)
        rows.append(Row("davir-table1", f"{signal} ~ length ({kind})", _paper(paper), *est, _against(*est, paper), len(t)))
    return rows


def davir_table2(t: pd.DataFrame, n_boot: int) -> list[Row]:
    length = (t["n_prompt"] + t["n_response"]).to_numpy(float)
    rows = []
    for (score, kind), paper in DAVIR_T2.items():
        est = bootstrap_ci(lambda s, n, f=CORR[kind]: abs(f(s, n)), t[score].to_numpy(), length, n_boot=n_boot)
        rows.append(Row("davir-table2", f"|{score} ~ length| ({kind})", _paper(paper), *est, _against(*est, paper), len(t)))
    for kind, f in CORR.items():
        diff = bootstrap_ci(lambda r, d, n, f=f: abs(f(r, n)) - abs(f(d, n)), t["rho"].to_numpy(), t["davir"].to_numpy(),
                            length, n_boot=n_boot)
        rows.append(_claim(f"|rho| - |davir| ({kind})", "davir-table2", diff, len(t),
                           "> 0 (DavIR less length-dependent): 0.45 / 0.31 (gemma-2b), 0.36 / 0.18 (gemma-2-2b)"))
    return rows


def lp_table3(t: pd.DataFrame, n_boot: int) -> list[Row]:
    est = bootstrap_ci(kendall, t["lp"].to_numpy(), t["lp_app"].to_numpy(), n_boot=n_boot)
    n_epochs = len(trajectory_columns(t, "ppl")) - 1
    return [Row("lp-table3", f"Kendall tau(LP(1), LP_app(1)), {n_epochs} epochs", _paper(LP_T3), *est,
                _against(*est, LP_T3), len(t))]


def davir_table3(pairs: pd.DataFrame, table: pd.DataFrame, values: dict, n_boot: int) -> list[Row]:
    x = pairs["length_diff"].to_numpy(float)
    rows = []
    for loss, paper in DAVIR_T3.items():
        est = bootstrap_ci(pearson, values[loss], x, n_boot=n_boot)
        rows.append(Row("davir-table3", f"{loss} objective ~ length difference (pearson)", f"{paper:+.2f}", *est,
                        _against(*est, {"UltraFeedback": paper}), len(pairs)))
    diff = bootstrap_ci(lambda v, d, n: abs(pearson(v, n)) - abs(pearson(d, n)), values["sigmoid"], values["davir"], x,
                        n_boot=n_boot)
    rows.append(_claim("|sigmoid r| - |davir r|", "davir-table3", diff, len(pairs), "> 0: 0.38 - 0.07 = 0.31"))
    return rows


def dpp_eq3(t: pd.DataFrame, features: np.ndarray, budget: float, seeds: int = 10) -> list[Row]:
    """LDD of a DPP subset, the top-k by DavIR and random subsets; the spread is over reference seeds (random:
    over subset seeds too)."""
    x = l2_normalize(features)
    cfg = SelectConfig(by="davir", budget=budget)
    subsets = {"dpp": dpp.pick(t, x, replace(cfg, method="dpp", lam=0.0)).positions,
               "top-k by davir": topk.pick(t, x, cfg).positions}

    def ldd(pos, seed):
        return log_det_distance(x[pos], seed=seed).value

    rows, means = [], {}
    for name, pos in subsets.items():
        vals = [ldd(pos, s) for s in range(seeds)]
        means[name] = vals
        rows.append(Row("dpp-eq3", f"LDD of the {name} subset (k={len(pos)})", "lower = more diverse",
                        float(np.mean(vals)), float(np.min(vals)), float(np.max(vals)), "", len(t)))
    vals = [ldd(sample.pick(t, x, replace(cfg, seed=s)).positions, s) for s in range(seeds)]
    means["random"] = vals
    rows.append(Row("dpp-eq3", f"LDD of random subsets (k={len(subsets['dpp'])}, {seeds} seeds)", "lower = more diverse",
                    float(np.mean(vals)), float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5)), "", len(t)))
    for other in ("random", "top-k by davir"):
        d = np.array(means[other]) - np.array(means["dpp"])
        verdict = "agrees" if (d > 0).all() else ("disagrees" if (d < 0).all() else "inconclusive across seeds")
        rows.append(Row("dpp-eq3", f"LDD({other}) - LDD(dpp)", "> 0 (DPP subsets most diverse)", float(d.mean()),
                        float(d.min()), float(d.max()), verdict, len(t)))
    return rows


def reproduce(cfg: ReproduceConfig, tables: list[str] | None = None) -> list[Row]:
    """Run what ``tables`` need (cached passes are reused), write ``reproduce.json`` and ``report.html`` to
    ``cfg.out``; returns the rows."""
    tables = list(tables or [t for t in TABLES if t not in GRID_TABLES or cfg.grids])
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise UsageError(f"unknown table {unknown[0]!r}; known: {', '.join(TABLES)}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, data=cfg.data or str(demo_data("alpaca_en_demo")), pairs=cfg.pairs or str(demo_data("dpo_en_demo")))
    timer, rows, extra = Timer(), [], ""
    if set(tables) & set(GRID_TABLES):
        grids = [g.strip() for g in cfg.grids.split(",") if g.strip()]
        if not grids:
            raise UsageError("dpp-fig2 / dpp-fig4 need --grids: experiment grid YAMLs whose cells were run "
                             "(e.g. runs/grids/clean.yaml,runs/grids/clean-25.yaml)")
        with timer("LDD of every fine-tuned cell"):
            res = ldd_grid.run(grids, out / "ldd", n_boot=cfg.n_boot)
        rows += ldd_rows(res["rows"], tables)
        extra = page.ldd_figure(res["table"])
    lm = None
    if set(tables) & {"davir-table1", "davir-table2", "lp-table3", "dpp-eq3", "davir-table3"}:
        lm = load_model(cfg.model, dtype=cfg.signals.dtype, master_fp32=cfg.train.full)
    if set(tables) & {"davir-table1", "davir-table2", "lp-table3", "dpp-eq3"}:
        run = RunConfig(data=cfg.data, model=cfg.model, out=str(out), ifd=False, signals=cfg.signals, train=cfg.train)
        g = None
        if "dpp-eq3" in tables:     # the base model's LoRA gradients (DPP paper §3.3), before training changes it
            with timer("grads pass (LoRA-gradient features)"):
                g = run_pass(prepare(open_dataset(cfg.data, run.input), lm.tokenizer, cfg.signals), "grads", lm,
                             runtime=runtime_for(cfg.signals), options={"grad": GradConfig()}, label="lora gradients")
        with timer("score (base pass, reference fine-tune, trajectory)"):
            prep, t, _ = score_dataset(run, timer, lm=lm)
        with atomic_write(out / "scores.parquet") as tmp:
            t.to_parquet(tmp, index=False)
        for name, fn in (("davir-table1", davir_table1), ("davir-table2", davir_table2), ("lp-table3", lp_table3)):
            if name in tables:
                rows += fn(t, cfg.n_boot)
        if g is not None:       # matched by id, not position: the grads pass read and encoded the data itself
            rows += dpp_eq3(t, np.stack(g.set_index("id").loc[t["id"], "vector"].to_list()).astype(np.float64),
                            cfg.budget)
    if "davir-table3" in tables:
        dcfg = DPOTrainConfig(loss="sigmoid", max_steps=cfg.dpo_steps, batch_size=2, lr=cfg.dpo_lr, save_steps=10_000)
        sig = replace(cfg.signals, limit=cfg.pair_limit)
        with timer("vanilla DPO run"):
            run_dpo(cfg.pairs, cfg.model, out / "dpo", sig, dcfg)
        with timer("DPO objectives vs length"):
            table, values, pairs = analyze_dpo_length(cfg.pairs, str(out / "dpo" / "final"), cfg.model,
                                                      out / "dpo-length", sig, with_values=True)
        rows += davir_table3(pairs, table, values, cfg.n_boot)
    with atomic_write(out / "reproduce.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(cfg), "timings_s": timer.times, "rows": [asdict(r) for r in rows]},
                                  indent=2, default=str))
    page.write(rows, out / "report.html", title=f"siftlm reproduce: {cfg.model} on {Path(cfg.data).name}",
               settings=asdict(cfg), timings=timer.times, extra=extra)
    return rows


def ldd_rows(found: list[dict], tables: list[str]) -> list[Row]:
    """The DPP paper's Figure 2 (gradient features) and Figure 4 (the other representations) as rows: each
    correlation of a cell's LDD with its held-out loss, beside the paper's."""
    out = []
    for r in found:
        table = "dpp-fig2" if r["representation"] == "grads" else "dpp-fig4"
        if table not in tables:
            continue
        paper = ("+0.85 on a loss (-0.85 with performance, Pearson and Spearman)" if table == "dpp-fig2"
                 else "no useful predictor (Figure 4: only gradient features predict)")
        out.append(Row(table, f"{r['kind']}(LDD {r['representation']}, {r['metric']}), {r['scope']}", paper,
                       r["r"], r["low"], r["high"], r["verdict"], r["n"]))
    return out
