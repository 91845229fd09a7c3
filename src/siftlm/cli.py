"""siftlm command line: each command parses its options, calls one library function and writes one artifact.

``siftlm --config run.yaml COMMAND`` fills any command's options from the YAML section named after it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from siftlm.data.io import atomic_write

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Pick the post-training data worth keeping, using the model itself.")
console = Console()

DEMO_LIMIT = 128  # examples: measured 7.9 min for 150 on 2 CPU cores (fresh cache); 128 leaves margin under 10 min


@app.callback()
def main(ctx: typer.Context,
         config: Optional[Path] = typer.Option(None, "--config", help="YAML file: {command: {option: value}}")):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model load is noise next to ours
    if config:
        ctx.default_map = yaml.safe_load(config.read_text()) or {}


def _fail(msg: str) -> None:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(1)


def _signal_cfg(store, max_length, template, token_budget, limit, shard_size=512):
    from siftlm.pipeline import SignalConfig

    return SignalConfig(store=str(store), max_length=max_length, template=template, token_budget=token_budget,
                        limit=limit, shard_size=shard_size, progress=True)


StoreOpt = typer.Option(Path("siftlm-store"), help="signal store folder (cached, resumable passes)")
MaxLenOpt = typer.Option(1024, help="max tokens; prompt cut from the left first, else the example is rejected")
TemplateOpt = typer.Option("auto", help="auto | chat | alpaca")
BudgetTokOpt = typer.Option(4096, help="padded tokens per forward batch")
LimitOpt = typer.Option(None, help="use only the first N valid examples")
FormatOpt = typer.Option(None, "--format", help="override format detection (alpaca, sharegpt, messages, ...)")


@app.command()
def inspect(data: Path = typer.Argument(..., help="dataset file or HF dataset folder"),
            format: Optional[str] = FormatOpt,
            rejects: Optional[Path] = typer.Option(None, help="write every reject to this jsonl"),
            show: int = typer.Option(10, help="rejects to print")):
    """Detect the format, count examples and rejects, show the first rejects."""
    from siftlm.data import DataError, read_dataset, summarize, write_rejects

    try:
        ds = read_dataset(data, format=format)
    except DataError as e:
        _fail(str(e))
    s = summarize(ds)
    t = Table(title=f"{data}  ({s['format']})")
    t.add_column("count")
    t.add_column("n", justify="right")
    for k in ("n_read", "n_kept", "n_rejected"):
        t.add_row(k[2:], str(s[k]))
    for reason, n in s["rejects_by_reason"].items():
        t.add_row(f"  rejected: {reason}", str(n))
    for kind, n in s["kinds"].items():
        t.add_row(f"  kind: {kind}", str(n))
    console.print(t)
    for r in ds.rejects[:show]:
        console.print(escape(f"  {r.source}:{r.line} [{r.field}] {r.reason}"))
    if rejects:
        write_rejects(ds.rejects, rejects)
        console.print(f"rejects written to {rejects}")
    if not ds.examples:
        _fail(f"{data}: nothing valid ({ds.n_read} records read, all rejected)")


@app.command()
def signals(data: Path = typer.Argument(...),
            model: str = typer.Option("builtin:smollm2", help="model folder, .gguf, builtin:<name> or hub id"),
            adapter: Optional[Path] = typer.Option(None, help="PEFT adapter folder on top of the model"),
            pass_: str = typer.Option("loss", "--pass",
                                      help="loss | uncond (response without prompt, for IFD) | lm-embed (mean hidden state)"),
            store: Path = StoreOpt, max_length: int = MaxLenOpt, template: str = TemplateOpt,
            token_budget: int = BudgetTokOpt, limit: Optional[int] = LimitOpt, format: Optional[str] = FormatOpt,
            out: Optional[Path] = typer.Option(None, help="also write the pass here (Parquet; .npy for lm-embed)")):
    """Run one batched model pass over a dataset into the signal store (skips finished shards)."""
    from siftlm.data import read_dataset
    from siftlm.models.load import load_model
    from siftlm.pipeline import loss_signals, prepare

    if pass_ not in ("loss", "uncond", "lm-embed"):
        _fail(f"unknown pass {pass_!r}; known: loss, uncond, lm-embed")
    lm = load_model(model, adapter=str(adapter) if adapter else None)
    prep = prepare(read_dataset(data, format=format), lm.tokenizer,
                   _signal_cfg(store, max_length, template, token_budget, limit))
    if pass_ == "lm-embed":
        import numpy as np

        from siftlm.pipeline import embed_signals

        x = embed_signals(lm.model, lm.fingerprint, prep)
        if out:
            with atomic_write(out) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, x)
        console.print(f"lm-embed: {x.shape[0]} x {x.shape[1]} vectors" + (f" -> {out}" if out else ""))
        return
    frame = loss_signals(lm.model, lm.fingerprint, prep, name=pass_)
    if out:
        with atomic_write(out) as tmp:
            frame.to_parquet(tmp, index=False)
    t = Table(title=f"pass {pass_}: {len(frame)} examples, model {lm.fingerprint}")
    for c in ("loss", "entropy", "el2n", "acc", "n_tokens"):
        t.add_column(c, justify="right")
    t.add_row(*(f"{frame[c].mean():.4f}" for c in ("loss", "entropy", "el2n", "acc", "n_tokens")))
    console.print(t)


@app.command()
def train(data: Path = typer.Argument(...), model: str = typer.Option("builtin:smollm2"),
          out: Path = typer.Option(Path("siftlm-reference"), help="training folder (epoch-N adapters)"),
          epochs: int = typer.Option(2), lr: float = typer.Option(2e-4),
          full: bool = typer.Option(False, help="full fine-tuning instead of LoRA"),
          lora_r: int = typer.Option(8), lora_alpha: int = typer.Option(16),
          target_modules: str = typer.Option("all-linear"), train_budget: int = typer.Option(2048, help="padded tokens per step"),
          seed: int = typer.Option(0), store: Path = StoreOpt, max_length: int = MaxLenOpt,
          template: str = TemplateOpt, token_budget: int = BudgetTokOpt, limit: Optional[int] = LimitOpt,
          format: Optional[str] = FormatOpt):
    """Fine-tune on all examples (the reference model), evaluating every example before and after each epoch."""
    from siftlm.data import read_dataset
    from siftlm.models.load import load_model
    from siftlm.pipeline import prepare, train_reference
    from siftlm.signals.trajectory import TrainConfig

    lm = load_model(model)
    prep = prepare(read_dataset(data, format=format), lm.tokenizer,
                   _signal_cfg(store, max_length, template, token_budget, limit))
    tcfg = TrainConfig(epochs=epochs, lr=lr, full=full, lora_r=lora_r, lora_alpha=lora_alpha,
                       target_modules=target_modules, token_budget=train_budget, seed=seed)
    traj, _ = train_reference(lm, prep, out, tcfg)
    t = Table(title=f"trajectory in {out}")
    t.add_column("epoch")
    t.add_column("mean loss", justify="right")
    t.add_column("token acc", justify="right")
    for i, f in enumerate(traj):
        t.add_row(str(i), f"{f['loss'].mean():.4f}", f"{f['acc'].mean():.4f}")
    console.print(t)


def _run_cfg(data, model, out, by, budget, direction, epochs, lr, train_budget, seed, store, max_length,
             template, token_budget, limit, format, ifd):
    from siftlm.recipes import RunConfig
    from siftlm.signals.trajectory import TrainConfig

    return RunConfig(data=str(data), model=model, out=str(out), format=format, by=by, budget=budget,
                     direction=direction, ifd=ifd,
                     signals=_signal_cfg(store, max_length, template, token_budget, limit),
                     train=TrainConfig(epochs=epochs, lr=lr, token_budget=train_budget, seed=seed))


@app.command()
def score(data: Path = typer.Argument(...), model: str = typer.Option("builtin:smollm2"),
          out: Path = typer.Option(Path("siftlm-out")), epochs: int = typer.Option(2), lr: float = typer.Option(2e-4),
          train_budget: int = typer.Option(2048), seed: int = typer.Option(0), store: Path = StoreOpt,
          max_length: int = MaxLenOpt, template: str = TemplateOpt, token_budget: int = BudgetTokOpt,
          limit: Optional[int] = LimitOpt, format: Optional[str] = FormatOpt, ifd: bool = typer.Option(True),
          reference: Optional[Path] = typer.Option(None, help="`siftlm train` folder (default OUT/reference)")):
    """Compute every score (DavIR, RHO-LM, LP, LP_app, IFD, EL2N, ppl, forgetting, tokens) into scores.parquet.

    Runs or reuses the base pass, the reference fine-tune (OUT/reference) with its trajectory and the
    unconditional pass.
    """
    from siftlm.pipeline import length_correlations
    from siftlm.recipes import score_dataset

    cfg = _run_cfg(data, model, out, "davir", 0.1, None, epochs, lr, train_budget, seed, store, max_length,
                   template, token_budget, limit, format, ifd)
    cfg.reference = str(reference) if reference else None
    prep, table, extra = score_dataset(cfg)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "scores.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    _print_correlations(length_correlations(table))
    console.print(f"{len(table)} examples scored -> {out / 'scores.parquet'}; non-finite: {extra['guarded']}")


@app.command("select")
def select_cmd(scores: Path = typer.Argument(..., help="scores.parquet from `siftlm score`"),
               data: Path = typer.Option(..., help="the dataset the scores belong to (for selected.jsonl)"),
               method: str = typer.Option("topk", help="topk | dpp | cluster | cluster-random | random | dedup"),
               by: str = typer.Option("davir", help="score for topk; the quality for dpp when --lam > 0"),
               budget: float = typer.Option(0.1, help="fraction (<1) or count"),
               direction: Optional[str] = typer.Option(None, help="high | low (default: the score's)"),
               features: Optional[Path] = typer.Option(None, help="dpp: .npy rows in scores order, or .parquet id+vector"),
               gamma: float = typer.Option(1.0, help="dpp: RBF kernel exp(-gamma ||x-y||^2)"),
               lam: float = typer.Option(0.0, help="dpp: quality weight lambda in [0,1); 0 = diversity only"),
               normalize: bool = typer.Option(True, help="dpp: L2-normalise features first"),
               clusters: Optional[int] = typer.Option(None, help="cluster: k-means k (default N/50)"),
               threshold: float = typer.Option(0.95, help="dedup: cosine similarity that counts as a duplicate"),
               seed: int = typer.Option(0),
               out: Path = typer.Option(Path("siftlm-selection")), format: Optional[str] = FormatOpt):
    """Keep the top examples by a score, or a diverse set by DPP: selected.jsonl (input format) + selection.parquet."""
    import pandas as pd

    from siftlm.data import read_dataset
    from siftlm.recipes import load_features, write_dpp_selection, write_selection, write_subset_selection

    table = pd.read_parquet(scores)
    ds = read_dataset(data, format=format)
    by_id = {e.id: e for e in ds.examples}
    missing = [i for i in table["id"] if i not in by_id]
    if missing:
        _fail(f"{len(missing)} scored ids are not in {data} (first: {missing[0]}); wrong dataset?")
    table = table.drop(columns=["rank", "selected"], errors="ignore")
    if method == "topk":
        table = write_selection(ds.examples, table, out, by=by, budget=budget, direction=direction)
    elif method == "dpp":
        if features is None:
            _fail("--method dpp needs --features")
        x = load_features(features, table["id"].tolist())
        table, res = write_dpp_selection(ds.examples, table, x, out, budget=budget, gamma=gamma,
                                         quality_by=by if lam > 0 else None, lam=lam, normalize=normalize,
                                         checkpoint=out / "dpp-checkpoint")
        if res.stopped:
            console.print(f"[yellow]warning:[/yellow] {escape(res.stopped)}")
    elif method in ("cluster", "cluster-random", "random", "dedup"):
        x = load_features(features, table["id"].tolist()) if features else None
        try:
            table = write_subset_selection(ds.examples, table, x, out, method=method, budget=budget,
                                           by=by if method == "cluster" else None, direction=direction, seed=seed,
                                           n_clusters=clusters, threshold=threshold)
        except ValueError as e:
            _fail(str(e))
    else:
        _fail(f"unknown method {method!r}; known: topk, dpp, cluster, cluster-random, random, dedup")
    console.print(f"selected {int(table['selected'].sum())} of {len(table)} ({method}) -> {out / 'selected.jsonl'}")


@app.command()
def diversity(features: list[Path] = typer.Argument(..., help="one or more .npy feature files (N x D)"),
              gamma: float = typer.Option(1.0), steps: Optional[int] = typer.Option(None, help="greedy steps (default N)"),
              seed: int = typer.Option(0, help="seed of the random unit-vector reference"),
              normalize: bool = typer.Option(True), plot: Path = typer.Option(Path("ldd.png")),
              json_out: Path = typer.Option(Path("ldd.json"), "--json", help="values and curves as JSON")):
    """Log-determinant distance of each dataset to random unit vectors (lower = more diverse), with the curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from siftlm.select.dpp import log_det_distance

    t = Table(title=f"log-determinant distance (gamma={gamma})")
    for c in ("features", "N", "D", "LDD"):
        t.add_column(c)
    fig, ax = plt.subplots(figsize=(6, 4))
    results = {}
    for f in features:
        x = np.load(f, allow_pickle=False).astype(np.float64)
        if normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        value, curve = log_det_distance(x, gamma=gamma, steps=steps, seed=seed)
        ax.plot(np.arange(1, len(curve) + 1), curve, label=f.name)
        t.add_row(str(f), str(len(x)), str(x.shape[1]), f"{value:.4f}")
        results[str(f)] = {"ldd": value, "n": len(x), "d": int(x.shape[1]), "curve": curve.tolist()}
    ax.set(xlabel="greedy step n", ylabel="(1/n) log det R_n / det L_n", title="log-determinant distance")
    ax.legend()
    fig.savefig(plot, dpi=90, bbox_inches="tight")
    with atomic_write(json_out) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    console.print(t)
    console.print(f"curves -> {plot}")


@app.command()
def demo(out: Path = typer.Option(Path("siftlm-demo")), limit: int = typer.Option(DEMO_LIMIT, help="examples to use"),
         epochs: int = typer.Option(2, help=">= 2 so LP(1) is informative"), lr: float = typer.Option(1e-3),
         budget: float = typer.Option(0.1), model: str = typer.Option("builtin:smollm2"),
         max_length: int = typer.Option(512), token_budget: int = BudgetTokOpt,
         train_budget: int = typer.Option(1024)):
    """The whole DavIR pipeline on the built-in Alpaca demo data with SmolLM2-135M; writes to OUT."""
    from siftlm.assets import demo_data
    from siftlm.recipes import run_davir

    cfg = _run_cfg(demo_data("alpaca_en_demo"), model, out, "davir", budget, None, epochs, lr, train_budget, 0,
                   out / "store", max_length, "auto", token_budget, limit, None, True)
    summary = run_davir(cfg)
    _print_summary(summary, out)


def _print_correlations(corr: dict) -> None:
    t = Table(title="length dependence (DavIR Tables 1-2): correlation with total tokens")
    for c in ("signal", "pearson", "spearman"):
        t.add_column(c, justify="right" if c != "signal" else "left")
    for k, v in corr.items():
        if k.endswith("~tokens_total"):
            t.add_row(k.split("~")[0], f"{v['pearson']:+.3f}", f"{v['spearman']:+.3f}")
    console.print(t)


def _print_summary(summary: dict, out: Path) -> None:
    c = summary["counts"]
    t = Table(title="siftlm summary")
    t.add_column("item")
    t.add_column("value", justify="right")
    for k in ("read", "rejected", "unused_by_limit", "kept", "selected"):
        t.add_row(k, str(c[k]))
    for k, v in summary["timings_s"].items():
        t.add_row(f"time: {k}", f"{v:.1f} s")
    for k, v in summary["score_means"].items():
        t.add_row(f"mean {k}", "nan" if v is None else f"{v:.4g}")
    console.print(t)
    _print_correlations(summary["length_correlations"])
    console.print(f"outputs in {out}/: " + ", ".join(Path(p).name for p in summary["outputs"].values()))


def run() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    run()
