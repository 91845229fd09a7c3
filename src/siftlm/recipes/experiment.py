"""``siftlm experiment GRID.yaml``: does a selection train a better model than random? Methods x budgets x seeds over
one pool; each cell selects, fine-tunes the model on the selection and measures the held-out loss of every evaluation
set's reference answers, item by item.

The pool is either built by the experiment (``pool:``: a seeded held-out split, optionally labelled corruptions,
``inject:``) and scored by it (every score and feature the methods need, cached in the store), or given as a scored
file (``scores:``). Random is a distribution: ``random_subsets`` subsets per budget, each with its own fine-tune;
every other method runs once per seed. Budgets count examples (``budgets``) or tokens (``budget_tokens``).

Every cell is keyed by its design (the pool's fingerprint, the method as written, budget, unit, seed, model,
training and scoring settings, ``CELL_VERSION``); its per-item losses go into ``results.parquet`` and its row into
``cells.parquet`` as soon as it finishes. A rerun skips every cell those files hold (a fresh clone with the committed
files recomputes the tables without training). Each cell's folder is keyed by its design (``siftlm.keyed``); the
unit ``eval-<sets>`` (the cell evaluated on these evaluation sets) is marked done once its row and per-item results
are in the folder, before they go into the tables, so a killed run redoes at most the cell it was in (whose fine-tune
resumes after its last finished epoch) and never a cell it finished. The tables (``results.md``, ``results.json``,
``report.html``) are computed from those two files alone (``siftlm experiment GRID --tables-only``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.backends import Runtime
from siftlm.config import DataConfig, EvaluateConfig, ExperimentConfig, UsageError
from siftlm.data import detect, open_dataset
from siftlm.errors import MissingInput
from siftlm.evaluate import behaviour
from siftlm.evaluate.run import heldout_loss
from siftlm.evaluate.sets import EvalItem, load_eval_set, stratified_sample
from siftlm.files import atomic_write, load_yaml, relative
from siftlm.keyed import open_keyed, stale
from siftlm.models.batching import plan_batches
from siftlm.models.load import load_model
from siftlm.progress import Timer, bar, console, peak_rss_gb
from siftlm.recipes import noisy, target
from siftlm.recipes import pool as pools
from siftlm.recipes.grid import BASELINE, Cell, cells, features_needed, method_config
from siftlm.recipes.pool import DEFAULT_FEATURES, Pool, build_pool, reference_config, score_pool, source_path
from siftlm.recipes.runtime import executor_for, runtime_for
from siftlm.report import experiment as page
from siftlm.select.run import run_selection
from siftlm.signals import store
from siftlm.signals.prepare import prepare
from siftlm.train.loop import STEPS_FILE
from siftlm.train.sft import finetune, restrict

CELL_VERSION = 3     # 3: keyed by design, per-item results in results.parquet (2: evaluated with OUT/final; 1: base)


def load_grid(path: str | Path) -> ExperimentConfig:
    """A grid YAML as an ExperimentConfig (``siftlm.config.load_yaml``): paths in it (data, scores, features, eval
    files, out, the store, a model folder) are relative to the file, unknown keys are errors."""
    cfg = load_yaml(ExperimentConfig, path, paths=("data", "scores", "out", "signals.store"), what="grid file")
    rel = {k: relative(path, v) for k in ("model", "selector_model")
           if (v := getattr(cfg, k)) and (Path(path).parent / v).exists()}
    if cfg.features and cfg.features not in DEFAULT_FEATURES.values():
        rel["features"] = relative(path, cfg.features)
    if cfg.pool.sources:
        rel["pool"] = replace(cfg.pool, sources=[
            {**src, "data": src["data"] if str(src.get("data", "")).startswith("builtin:") else relative(path, src["data"])}
            for src in cfg.pool.sources])
    if any(isinstance(m, dict) and m.get("scores") for m in cfg.methods):     # a method's own scores file
        rel["methods"] = [{**m, "scores": relative(path, m["scores"])} if isinstance(m, dict) and m.get("scores") else m
                          for m in cfg.methods]
    if cfg.target and not cfg.target.data.startswith(("builtin:", "source:")):
        rel["target"] = replace(cfg.target, data=relative(path, cfg.target.data))
    rel["eval"] = ",".join(v if v in ("heldout", "target") else relative(path, v.strip())
                           for v in cfg.eval.split(",") if v.strip())
    cfg = replace(cfg, **rel)
    cells(cfg)                     # the grid's design is checked before any work (cells listed twice, seeds_for)
    return cfg


def _digest(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]


def cell_design(cfg: ExperimentConfig, cell: Cell, source: str) -> dict:
    """What a cell is: the pool (or scored file), the method as written, budget, unit, seed, the trained model and its
    training, the scoring settings that make the pool's scores; not the evaluation sets (``set_key``)."""
    return {"version": CELL_VERSION, "source": source, "method": cell.name, "spec": cell.method, "budget": cell.budget,
            "unit": cell.unit, "seed": cell.seed, "features": cfg.features, "model": cfg.model,
            "selector_model": cfg.selector_model, "train": replace(cfg.train, seed=cell.seed).identity(),
            "reference": reference_config(cfg).identity(),
            "signals": cfg.signals.identity(),
            **({"target": target.fingerprint(Path(cfg.out) / "pool")} if cfg.target else {})}


def cell_key(cfg: ExperimentConfig, cell: Cell, source: str) -> str:
    d = cell_design(cfg, cell, source)
    parts = [d["version"], d["source"], d["method"], d["spec"], d["budget"], d["unit"], d["seed"], d["features"],
             d["model"], d["selector_model"], d["train"], d["reference"], d["signals"]]
    if "filter" in str(d["spec"]):          # the detectors decide the selection: their version is part of it
        parts.append({"detectors": detect.VERSION})
    if d.get("target"):                     # the query set steers targeted selections
        parts.append({"target": d["target"]})
    own = cell.method.get("scores") if isinstance(cell.method, dict) else None
    if own:                                 # a method with scores of its own (e.g. another model's): their bytes
        parts.append({"scores": _digest(own) if Path(own).exists() else own})
    return store.fingerprint(parts)


def set_key(spec: str, items: list[EvalItem], max_length: int, behaviour: dict | None = None) -> str:
    """What a set's per-item rows depend on: the items, their references, the max length and, when the set's
    behaviour is measured, its settings (generation length, language, detectors, continuations)."""
    parts = [spec, [i.id for i in items], [i.references for i in items], max_length]
    return store.fingerprint(parts + [behaviour] if behaviour else parts)


def behaviour_identity(cfg: ExperimentConfig, name: str, continuations: dict) -> dict | None:
    """The behaviour settings of set ``name``, or None when its behaviour is not measured."""
    b = cfg.behaviour
    if b is None or (b.sets and name not in b.sets):
        return None
    return {"max_new_tokens": b.max_new_tokens, "language": b.language, "detectors": detect.VERSION,
            "continuations": continuations if b.propensity else {}}


def eval_sets(cfg: ExperimentConfig, pool: Pool | None) -> dict[str, tuple[str, list[EvalItem]]]:
    """{set name: (key, items)}: ``heldout`` is the pool's held-out split; a limit takes a seeded sample stratified
    over each set's sources."""
    sets = {}
    conts = continuations(pool)
    for spec in [s.strip() for s in cfg.eval.split(",") if s.strip()]:
        if spec == "heldout":
            if pool is None or pool.heldout is None:
                raise UsageError("eval set 'heldout' needs a pool with a held-out split (pool: {heldout: N})")
            items, name = load_eval_set(str(pool.heldout)), "heldout"
        elif spec == "target":
            if pool is None or target.fingerprint(pool.folder) is None:
                raise UsageError("eval set 'target' needs a grid target (target: {data, query, eval})")
            items, name = load_eval_set(str(pool.folder / "target-eval.jsonl")), "target"
        else:
            items, name = load_eval_set(spec), spec.removeprefix("builtin:") if spec.startswith("builtin:") else Path(spec).stem
        items = [i for i in items if i.references]
        if cfg.eval_limit:
            items = stratified_sample(items, cfg.eval_limit, seed=cfg.eval_seed)
        sets[name] = (set_key(spec, items, cfg.eval_max_length, behaviour_identity(cfg, name, conts)), items)
    return sets


def continuations(pool: Pool | None) -> dict:
    """The propensity continuations, none of them an answer the pool holds."""
    return behaviour.continuations(pool.responses() if pool is not None else frozenset())


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path.exists() else None


def _save(out: Path, rows: pd.DataFrame, items: pd.DataFrame) -> None:
    with atomic_write(out / "cells.parquet") as tmp:
        rows.to_parquet(tmp, index=False)
    with atomic_write(out / "results.parquet") as tmp:
        items.to_parquet(tmp, index=False, compression="zstd")


def _evaluate(lm, sets: dict, cfg: ExperimentConfig, key: str, pool: Pool | None = None,
              runtime: Runtime | None = None) -> pd.DataFrame:
    """Every set's per-item rows: the held-out loss of the references (per-item mean NLL, its token count) and, where
    the grid measures behaviour, the greedy answer, each detector's value and the propensities."""
    frames = []
    signals = replace(cfg.signals, max_length=cfg.eval_max_length)
    conts = continuations(pool) if cfg.behaviour is not None else {}
    for name, (skey, items) in sets.items():
        f = heldout_loss(lm, items, EvaluateConfig(signals=signals), name, runtime)
        frame = pd.DataFrame({"key": key, "set": name, "set_key": skey, "id": f["id"].astype(str),
                              "loss": f["loss"].astype(float), "n_tokens": f["n_tokens"].astype(int)})
        if behaviour_identity(cfg, name, conts) is not None:
            b = cfg.behaviour
            with bar(f"{name} behaviour", len(items), enabled=cfg.signals.progress) as advance:
                acts = behaviour.behaviour(lm, items, max_new_tokens=b.max_new_tokens, language=b.language,
                                           continuations=conts if b.propensity else {}, signals=signals, name=name,
                                           on_batch=advance, runtime=runtime)
            frame = frame.merge(acts, on="id", how="left")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _trained_counts(prep, folder: Path) -> dict:
    """Prompt and response (supervised) tokens of what a cell trained on, and its optimizer steps (every epoch)."""
    response = sum(e.n_response for e in prep.encoded)
    steps = 0
    for f in sorted(folder.glob(f"epoch-*/{STEPS_FILE}")):
        steps += len(json.loads(f.read_text()).get("losses", []))
    return {"prompt_tokens": int(sum(len(e.input_ids) for e in prep.encoded) - response),
            "response_tokens": int(response), "steps": int(steps)}


def run_cell(cfg: ExperimentConfig, cell: Cell, key: str, folder: Path, scores: str, data: str, pool: Pool | None,
             sets: dict, runtime: Runtime | None = None) -> tuple[dict, pd.DataFrame]:
    """Select -> fine-tune -> held-out loss on every set for one cell: its row and its per-item losses."""
    times, cpu = {}, time.process_time()
    t = time.perf_counter()
    scfg = method_config(cfg, cell, scores, data, pool)
    if scfg is None:
        ids = pd.read_parquet(scores, columns=["id"])["id"].tolist()
    else:
        ids = run_selection(scfg, folder / "selection", executor=executor_for(scfg)).selection["id"].tolist()
    times["select_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with atomic_write(folder / "ids.parquet") as tmp:
        pd.DataFrame({"id": ids}).to_parquet(tmp, index=False)
    tcfg = replace(cfg.train, seed=cell.seed)
    lm = load_model(cfg.model, dtype=cfg.signals.dtype, master_fp32=tcfg.full, quiet=True)   # fresh: LoRA goes in place
    ds = restrict(open_dataset(data, DataConfig()), folder / "ids.parquet")
    prep = prepare(ds, lm.tokenizer, cfg.signals)
    info = finetune(lm, prep, folder / "model", tcfg, runtime=runtime).info
    counts = _trained_counts(prep, folder / "model")
    times["finetune_s"] = time.perf_counter() - t
    t = time.perf_counter()
    del lm
    trained = load_model(info["final"], dtype=cfg.signals.dtype, quiet=True)   # its own fingerprint: its own passes
    items = _evaluate(trained, sets, cfg, key, pool, runtime)
    times["evaluate_s"] = time.perf_counter() - t
    row = {"key": key, "method": cell.name, "budget": None if cell.budget is None else float(cell.budget),
           "unit": cell.unit, "seed": cell.seed, "selected": len(ids), "train_tokens": info["tokens"], **counts,
           "model_fingerprint": info["fingerprint"], **times, "cell_s": sum(times.values()),
           "cpu_s": time.process_time() - cpu, "ids": list(map(str, ids))}
    return row, items


def _complete(key: str, rows: pd.DataFrame | None, items: pd.DataFrame | None, sets: dict) -> bool:
    if rows is None or items is None or key not in set(rows["key"]):
        return False
    have = set(items.loc[items["key"] == key, "set_key"])
    return all(skey in have for skey, _ in sets.values())


def run_experiment(cfg: ExperimentConfig, *, tables_only: bool = False) -> pd.DataFrame:
    """Every cell not yet in ``cells.parquet`` / ``results.parquet``, then the tables; returns the cells table."""
    wall = time.perf_counter()
    rt = runtime_for(cfg.signals)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    pool = None
    if cfg.scores:
        if not Path(cfg.scores).exists():
            raise MissingInput(f"{cfg.scores}: no such scores file (run siftlm score first)")
        data, scores, source = source_path(cfg.data), cfg.scores, f"scores:{_digest(cfg.scores)}"
    else:
        pool = build_pool(cfg, out / "pool")
        data, scores, source = str(pool.data), str(pool.scores), f"pool:{pool.fingerprint}"
    sets = eval_sets(cfg, pool)
    scored = pool is not None and pools.scored(cfg, pool)        # scores of another pool or settings are refused here
    unkeyed = pool is not None and not scored and pools.unkeyed_scores(pool)   # scored before siftlm keyed them
    rows, items = _read(out / "cells.parquet"), _read(out / "results.parquet")
    grid = cells(cfg)
    keys = {c: cell_key(cfg, c, source) for c in grid}
    base_key = store.fingerprint([CELL_VERSION, "base", cfg.model, cfg.signals.identity()])
    todo = [c for c in grid if not _complete(keys[c], rows, items, sets)] if cfg.finetune else []
    if tables_only:
        todo = []
    elif pool is not None and (todo or not (scored or unkeyed) or not cfg.finetune):
        # the noisy-pool analysis orders the pool by every feature-based method; cells make theirs when they run
        score_pool(cfg, pool, features_needed(cfg, also=noisy.ORDER_METHODS) if cfg.inject.rate and not cfg.finetune
                   else (), runtime=rt)
        scored, unkeyed = True, False
    trained = bool(todo) or (cfg.finetune and not tables_only and not _complete(base_key, rows, items, sets))
    if trained:
        if not _complete(base_key, rows, items, sets):
            base = _evaluate(load_model(cfg.model, dtype=cfg.signals.dtype, quiet=True), sets, cfg, base_key, pool, rt)
            rows, items = _merge(rows, items, {"key": base_key, "method": "base model", "unit": "none", "seed": 0,
                                               "selected": 0, "train_tokens": 0, "ids": []}, base)
            _save(out, rows, items)
        for k, cell in enumerate(todo, start=1):
            console.print(f"cell {k}/{len(todo)}: {cell.name}, {cell.unit} budget "
                          f"{'all' if cell.budget is None else cell.budget}, seed {cell.seed}", highlight=False)
            keyed = open_keyed(out / "cells" / cell.folder, cell_design(cfg, cell, source), what="an experiment cell",
                               labels={"source": "another pool"})
            unit = f"eval-{store.fingerprint(sorted(skey for skey, _ in sets.values()))}"
            if not keyed.done(unit):      # done: finished and kept in its folder, killed before the tables had it
                if pool is not None:
                    timer = Timer()
                    pools.feature_passes(cfg, pool, features_needed(replace(cfg, methods=[cell.method])), timer=timer,
                                         runtime=rt)
                    record_costs(pool, timer)
                row, cell_items = run_cell(cfg, cell, keys[cell], keyed.folder, scores, data, pool, sets, rt)
                keyed.write(f"{unit}.json", json.dumps(row, default=str))
                with keyed.writing(f"{unit}.parquet") as tmp:
                    cell_items.to_parquet(tmp, index=False)
                keyed.mark(unit)
            row = json.loads(keyed.path(f"{unit}.json").read_text())
            rows, items = _merge(rows, items, row, pd.read_parquet(keyed.path(f"{unit}.parquet")))
            _save(out, rows, items)
    if rows is None:
        rows = pd.DataFrame(columns=["key", "method", "budget", "unit", "seed", "selected", "train_tokens", "ids"])
        items = pd.DataFrame(columns=["key", "set", "set_key", "id", "loss", "n_tokens"])
    current = rows[rows["key"].isin(set(keys.values()) | {base_key})]
    set_keys = {skey for skey, _ in sets.values()}
    current_items = items[items["key"].isin(set(current["key"])) & items["set_key"].isin(set_keys)]
    _say_left_out(rows, current, items, current_items)
    current = fill_counts(current, scores, cfg)
    primary = {**asdict(cfg.primary), "declared": bool(cfg.primary.metric)}
    summary = page.summarize(current, current_items, n_boot=cfg.n_boot, baseline=BASELINE, primary=primary)
    if pool is not None and cfg.inject.rate and (scored or unkeyed):
        summary["noise"] = _noise(cfg, pool, current, out / "noise.json", tables_only)
    if pool is not None and "source" in (labels := pool.labels()):
        summary["source_shares"] = page.source_shares(current, labels)
    summary["pool"] = pool.manifest if pool is not None else {"scores": cfg.scores}
    if scored or unkeyed:
        summary["pool_scoring"] = json.loads((pool.folder / "scores" / "summary.json").read_text())   # counts, the reference
    summary["wall_s"] = _wall(out / "runs.jsonl", time.perf_counter() - wall, trained)
    with atomic_write(out / "results.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(cfg), **summary}, indent=2, default=str))
    with atomic_write(out / "results.md") as tmp:
        tmp.write_text(page.markdown(summary, cfg))
    page.write(summary, cfg, out / "report.html")
    return current


def fill_counts(rows: pd.DataFrame, scores: str, cfg: ExperimentConfig) -> pd.DataFrame:
    """Prompt tokens, response tokens and optimizer steps for cells that ran before siftlm recorded them, from the
    scores table's token counts of each cell's ids (the steps: the epochs times the token-budget batches those
    lengths make, which depend on the lengths alone)."""
    need = [c for c in ("prompt_tokens", "response_tokens", "steps") if c not in rows]
    rows = rows.assign(**{c: np.nan for c in need}).copy()
    todo = rows["method"].ne(page.BASE) & rows[["prompt_tokens", "response_tokens", "steps"]].isna().any(axis=1)
    if not todo.any() or not Path(scores).exists():
        return rows
    table = pd.read_parquet(scores, columns=["id", "n_prompt", "n_response"]).set_index("id")
    for k in np.flatnonzero(todo.to_numpy()):
        ids = [i for i in rows["ids"].iloc[k] if i in table.index]
        if len(ids) != len(rows["ids"].iloc[k]):
            continue
        t = table.loc[ids]
        lengths = (t["n_prompt"] + t["n_response"]).tolist()
        steps = cfg.train.epochs * len(plan_batches(lengths, cfg.train.token_budget)) if lengths else 0
        rows.iloc[k, rows.columns.get_loc("prompt_tokens")] = float(t["n_prompt"].sum())
        rows.iloc[k, rows.columns.get_loc("response_tokens")] = float(t["n_response"].sum())
        rows.iloc[k, rows.columns.get_loc("steps")] = float(steps)
    return rows


def record_costs(pool: Pool, timer: Timer) -> dict:
    """Add the feature passes ``timer`` saw computed (not served by the store) to ``<pool>/feature-costs.json``: wall
    seconds, and the process's peak resident memory when the pass ended (an upper bound of the pass's own peak; the
    passes of one process share it). What a targeted method costs beside its selection. Returns the whole record."""
    path = pool.folder / "feature-costs.json"
    costs = json.loads(path.read_text()) if path.exists() else {}
    peak = peak_rss_gb()
    new = {name: {"seconds": secs, "process_peak_rss_gb": round(peak, 2)}
           for name, secs in timer.times.items() if name.endswith("pass") and name not in timer.cached}
    if new:
        costs.update(new)
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(costs, indent=2, sort_keys=True))
    return costs


def _say_left_out(rows: pd.DataFrame, current: pd.DataFrame, items: pd.DataFrame, current_items: pd.DataFrame) -> None:
    """One line when the tables leave out rows the files hold: cells of another design of this grid (another pool,
    method list or training) or per-item rows of evaluation sets that have changed since. They stay in the files."""
    cells, sets = len(rows) - len(current), len(items[items["key"].isin(set(current["key"]))]) - len(current_items)
    if cells or sets:
        console.print(f"tables: {cells} cell(s) of another design and {sets} per-item row(s) of changed evaluation "
                      "sets left out (kept in cells.parquet / results.parquet)", highlight=False)


def noise_identity(pool, cells: pd.DataFrame) -> dict:
    """What the noise analysis is made from: the pool's scores file and the cells it reads."""
    return {"scores": _digest(pool.scores), "cells": sorted(cells["key"])}


def _noise(cfg: ExperimentConfig, pool, cells: pd.DataFrame, saved: Path, tables_only: bool) -> dict:
    """The noise analysis (``noisy.analyse``), saved beside the tables with what it was made from. ``--tables-only``
    keeps the saved one when it was made from these scores and cells (the analysis reads the feature files, which a
    fresh clone lacks); anything else is analysed again."""
    ident = noise_identity(pool, cells)
    have = json.loads(saved.read_text()) if tables_only and saved.exists() else {}
    if have and (why := stale(have.pop("identity", None), ident)) is None:
        return have
    if have:
        console.print(f"{saved}: {why}; analysed again", highlight=False)
    noise = noisy.analyse(cfg, pool, cells)
    with atomic_write(saved) as tmp:
        tmp.write_text(json.dumps({**noise, "identity": ident}, indent=1, default=str))
    return noise


def _wall(ledger: Path, seconds: float, trained: bool) -> float:
    """The grid's wall time: the seconds of every run that trained or evaluated something, one line per run in
    ``runs.jsonl`` (this run's appended when it did); a run that only recomputed the tables (``--tables-only``, or
    every cell cached) adds nothing."""
    runs = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()] if ledger.exists() else []
    if trained:
        runs.append({"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "wall_s": round(seconds, 1)})
        with atomic_write(ledger) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in runs))
    return float(sum(r["wall_s"] for r in runs)) if runs else seconds


def _merge(rows: pd.DataFrame | None, items: pd.DataFrame | None, row: dict,
           cell_items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables with one cell's row and per-item losses replacing any it had before."""
    row_frame = pd.DataFrame([row])
    if rows is not None:
        rows = pd.concat([rows[rows["key"] != row["key"]], row_frame], ignore_index=True)
    else:
        rows = row_frame
    if items is not None:
        items = pd.concat([items[items["key"] != row["key"]], cell_items], ignore_index=True)
    else:
        items = cell_items
    return rows, items
