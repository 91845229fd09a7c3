"""An experiment's pool: a held-out split set aside, the pool itself (optionally with labelled corruptions), every
score and feature the grid's methods need, computed once and cached in the store.

Files in ``OUT/pool/``:

- ``pool.jsonl``: what scoring and selection see: ``{"id": "pool-00001", "messages": [...]}`` in a seeded order;
  corrupted rows look like any other (neutral ids, no label);
- ``heldout.jsonl``: the held-out split (the eval set ``heldout``), disjoint from the pool;
- ``labels.parquet``: id, the source record's line and the corruption kind (``clean`` for untouched rows): read
  only by the noisy-pool analysis, never by a score or selector;
- ``pool.json``: how the pool was made, its counts and its fingerprint;
- ``scores/``: ``siftlm score``'s outputs for the pool (scores.parquet, summary.json, report.html) plus grad_norm
  and, with ``crossfit``, davir_xfit; ``features-<pass>.parquet`` for the feature-based methods.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.assets import demo_data, package_file
from siftlm.config import ExperimentConfig, RunConfig, TrainConfig, UsageError
from siftlm.data import read_dataset, write_jsonl
from siftlm.data.inject import inject
from siftlm.errors import DataError
from siftlm.files import atomic_write
from siftlm.models.load import load_model, load_sentence_model
from siftlm.progress import Timer, console
from siftlm.recipes import target
from siftlm.recipes.davir import score_dataset
from siftlm.scores import add_scores
from siftlm.signals import store
from siftlm.signals.passes import run_pass, stored
from siftlm.signals.prepare import Prepared, encoded_fingerprint, prepare, prepare_texts
from siftlm.signals.table import features_meta, write_frame
from siftlm.stats import length_correlations
from siftlm.train.reference import train_reference

POOL_VERSION = 1
SCORING_VERSION = 1     # of what a pool's scores are: bump when siftlm computes a score differently
SPLIT_SALT, HALVES_SALT = 0x9001, 0x4A1F   # own random streams: unrelated to random selections of the same seed
FEATURE_PASSES = ("grads", "lm-embed", "embed")
DEFAULT_FEATURES = {"dpp": "grads", "less": "grads", "cluster": "embed", "cluster-random": "embed", "dedup": "embed",
                    "repr": "lm-embed"}


@dataclass
class Pool:
    folder: Path
    data: Path                 # pool.jsonl
    heldout: Path | None       # heldout.jsonl
    fingerprint: str           # of the pool's and the held-out split's bytes
    manifest: dict

    @property
    def scores(self) -> Path:
        return self.folder / "scores" / "scores.parquet"

    def features(self, name: str) -> Path:
        return self.folder / f"features-{name}.parquet"

    def target_features(self, name: str) -> Path:
        """The query set's features of pass ``name`` (grads, lm-embed, embed), made as the pool's were."""
        return self.folder / f"target-features-{name}.parquet"

    def labels(self) -> pd.DataFrame:
        return pd.read_parquet(self.folder / "labels.parquet")

    def junk_ids(self) -> Path:
        """A text file of the labelled junk's ids (one per line), for the oracle arm; written from labels.parquet."""
        path = self.folder / "junk-ids.txt"
        labels = self.labels()
        text = "".join(f"{i}\n" for i in labels.loc[labels["kind"] != "clean", "id"])
        if not path.exists() or path.read_text() != text:
            with atomic_write(path) as tmp:
                tmp.write_text(text)
        return path

    def responses(self) -> set[str]:
        """Every assistant turn in the pool (what a model trained on it may have seen)."""
        return {str(m["content"]) for e in read_dataset(self.data).examples for m in e.messages
                if m["role"] == "assistant"}


def source_path(data: str) -> str:
    return str(demo_data(data.removeprefix("builtin:"))) if data.startswith("builtin:") else data


def _chars(ex) -> int:
    return sum(len(str(m["content"])) for m in ex.messages)


def _record(ex, new_id: str) -> dict:
    return {"id": new_id, "messages": ex.messages}


def foreign_answers() -> list[str]:
    """Answers in another language for the ``foreign`` corruption: LLaMA-Factory's alpaca_zh_demo outputs."""
    rows = json.loads(package_file("alpaca_zh_demo").read_text(encoding="utf-8"))
    return [r["output"] for r in rows if r.get("output", "").strip()]


def build_pool(cfg: ExperimentConfig, folder: str | Path) -> Pool:
    """The held-out split and the pool from ``cfg.data`` (seeded), corrupted as ``cfg.inject`` says; the same config
    always writes the same bytes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pcfg, icfg = cfg.pool, cfg.inject
    sources, held_target = None, []
    if pcfg.sources:
        if pcfg.heldout:
            raise UsageError("a pool mixed from sources has no held-out split: evaluate on its target set instead")
        usable, sources, held_target = target.mixed_examples(cfg, source_path, _chars)
        ds, held, rest, n = None, np.arange(0), np.arange(len(usable)), len(usable)
    else:
        ds = read_dataset(source_path(cfg.data))
        usable = [e for e in ds.examples if pcfg.max_chars is None or _chars(e) <= pcfg.max_chars]
        n = len(usable)
        if pcfg.heldout >= n:
            raise DataError(f"{cfg.data}: {n} usable examples, cannot hold out {pcfg.heldout}")
        order = np.random.default_rng([pcfg.seed, SPLIT_SALT]).permutation(n)
        held, rest = order[: pcfg.heldout], order[pcfg.heldout:]
        if pcfg.size is not None:
            if pcfg.size > len(rest):
                raise DataError(f"{cfg.data}: {len(rest)} examples left after the held-out split, the pool wants "
                                 f"{pcfg.size}")
            rest = rest[: pcfg.size]
    examples = [usable[i] for i in rest]
    kinds: list[str | None] = [None] * len(examples)
    if icfg.rate:
        examples, kinds = inject(examples, icfg.rate, kinds=icfg.kinds, seed=icfg.seed,
                                 foreign=foreign_answers() if "foreign" in icfg.kinds else ())
    ids = [f"pool-{k:05d}" for k in range(1, len(examples) + 1)]
    write_jsonl([_record(ex, i) for ex, i in zip(examples, ids, strict=True)], folder / "pool.jsonl")
    heldout = None
    if len(held):
        heldout = folder / "heldout.jsonl"
        write_jsonl([_record(usable[i], f"heldout-{k:05d}") for k, i in enumerate(held, start=1)], heldout)
    labels = pd.DataFrame({"id": ids, "source_line": [usable[i].line for i in rest],
                           "kind": [k or "clean" for k in kinds]})
    if sources is not None:
        labels["source"] = sources
    with atomic_write(folder / "labels.parquet") as tmp:
        labels.to_parquet(tmp, index=False)
    if cfg.target is not None:
        if cfg.target.data.startswith("source:"):
            target.source_target(cfg, folder, held_target)
        else:
            target.builtin_target(cfg, folder)
    h = hashlib.sha1()
    for p in (folder / "pool.jsonl", heldout):
        if p is not None:
            h.update(p.read_bytes())
    if ds is not None:
        read = {"data": cfg.data, "source": Path(ds.path).name, "read": ds.n_read, "valid": len(ds.examples),
                "rejected": len(ds.rejects), "too_long": len(ds.examples) - n}
    else:
        read = {"data": "mixed", "sources": labels["source"].value_counts().sort_index().to_dict()}
    manifest = {"version": POOL_VERSION, **read,
                "pool": len(ids), "heldout": int(len(held)), "unused": n - len(ids) - int(len(held)),
                "pool_config": asdict(pcfg), "inject": asdict(icfg),
                "kinds": labels["kind"].value_counts().sort_index().to_dict(), "fingerprint": h.hexdigest()[:16],
                **({"target": {**asdict(cfg.target), "fingerprint": target.fingerprint(folder)}} if cfg.target else {})}
    with atomic_write(folder / "pool.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    return Pool(folder, folder / "pool.jsonl", heldout, manifest["fingerprint"], manifest)


def reference_config(cfg: ExperimentConfig) -> TrainConfig:
    return cfg.reference or cfg.train


def halves(ids: list[str], seed: int = 0) -> np.ndarray:
    """0 / 1 for every example: a seeded split into two halves of equal size (the cross-fitting folds)."""
    side = np.zeros(len(ids), dtype=np.int64)
    side[np.random.default_rng([seed, HALVES_SALT]).permutation(len(ids))[len(ids) // 2:]] = 1
    return side


def subset(prep: Prepared, positions) -> Prepared:
    """The prepared examples at ``positions`` (in that order), with their own fingerprint."""
    pos = [int(p) for p in positions]
    enc = [prep.encoded[p] for p in pos]
    return replace(prep, examples=[prep.examples[p] for p in pos], encoded=enc, fingerprint=encoded_fingerprint(enc),
                   _uncond=None)


def crossfit_losses(model: str, prep: Prepared, folder: Path, tcfg: TrainConfig, dtype: str) -> np.ndarray:
    """Each example's loss under a reference that never trained on it: the pool split in two halves (seeded), a
    reference fine-tuned on each half (the same settings as the full reference), each scoring the other half."""
    side = halves(prep.ids, tcfg.seed)
    out = np.full(len(prep.ids), np.nan)
    for h in (0, 1):
        train_pos, score_pos = np.flatnonzero(side == h), np.flatnonzero(side != h)
        lm = load_model(model, dtype=dtype, master_fp32=tcfg.full, quiet=True)
        fps = train_reference(lm, subset(prep, train_pos), folder / f"half-{h}", tcfg).fingerprints
        # after training here lm.model holds the last epoch; after a reuse it is the base: load the trained one
        here = getattr(lm.model, "siftlm_trained_fingerprint", None) == fps[-1]
        trained = lm.model if here else _trained(model, folder / f"half-{h}", tcfg, dtype)
        frame = run_pass(subset(prep, score_pos), "loss", trained, fps[-1], label=f"cross-fit reference {h} loss")
        out[score_pos] = frame["loss"].to_numpy()
    return out


def _trained(model: str, folder: Path, tcfg: TrainConfig, dtype: str):
    last = folder / f"epoch-{tcfg.epochs}"
    return (load_model(str(last), dtype=dtype, master_fp32=True, quiet=True) if tcfg.full
            else load_model(model, adapter=str(last), dtype=dtype, quiet=True)).model


def scoring_key(cfg: ExperimentConfig, pool: Pool) -> str:
    """What the pool's scores depend on: the pool's bytes, the selector model, the scoring settings, the reference's
    training and cross-fitting. Bump SCORING_VERSION when a change to siftlm changes what a score computes."""
    parts = [SCORING_VERSION, pool.fingerprint, cfg.selector_model or cfg.model, cfg.crossfit,
             cfg.signals.identity(), reference_config(cfg).identity()]
    return store.fingerprint(parts if cfg.grad_norm else parts + [{"grad_norm": False}])


def scored(cfg: ExperimentConfig, pool: Pool) -> bool:
    """True when ``scores/`` holds this pool's scores under these settings (summary.json is written last and names
    the key), e.g. the committed results of a grid in a fresh clone: its scores are not computed again."""
    summary = pool.folder / "scores" / "summary.json"
    if not (pool.scores.exists() and summary.exists()):
        return False
    return json.loads(summary.read_text()).get("scoring_key") == scoring_key(cfg, pool)


def feature_passes(cfg: ExperimentConfig, pool: Pool, names, lm=None, ds=None, timer: Timer | None = None) -> None:
    """The feature files ``names`` (of FEATURE_PASSES) that are not written yet: grads and lm-embed on the base
    weights of the selector, embed with the sentence model; each timed as "<name> pass" in ``timer``."""
    selector = cfg.selector_model or cfg.model
    timer = timer or Timer()
    todo = [n for n in FEATURE_PASSES if n in set(names) and not pool.features(n).exists()]
    ds = ds if ds is not None or not todo else read_dataset(pool.data)
    model_passes = [n for n in todo if n != "embed"]
    if model_passes:
        lm = lm or load_model(selector, dtype=cfg.signals.dtype)
        prep = prepare(ds, lm.tokenizer, cfg.signals)
        for name in model_passes:      # on the base weights, before any reference trains them in place
            _model_pass(pool, name, prep, lm, selector, timer)
    if "embed" in todo:
        with timer("embed pass"):
            sentence = load_sentence_model()
            frame = run_pass(prepare_texts(ds, cfg.signals), "embed", sentence.model, sentence.fingerprint,
                             options={"part": "full"}, label="sentence embeddings (pool)")
            write_frame(frame, pool.features("embed"), {"pass": "embed", "model": "builtin:all-minilm-l6-v2"})
    target_passes(cfg, pool, names, lm, timer)


def target_passes(cfg: ExperimentConfig, pool: Pool, names, lm=None, timer: Timer | None = None) -> None:
    """The query set's feature files for ``names``, made as the pool's (same pass, model and settings); a file made
    from another query set (its metadata names the query files' fingerprint) is made again."""
    query_fp = target.fingerprint(pool.folder)
    if query_fp is None:
        return
    timer = timer or Timer()
    todo = [n for n in FEATURE_PASSES if n in set(names)
            and features_meta_or_none(pool.target_features(n)).get("query") != query_fp]
    if not todo:
        return
    ds = read_dataset(pool.folder / "target-query.jsonl")
    selector = cfg.selector_model or cfg.model
    for name in todo:
        with timer(f"target {name} pass"):
            if name == "embed":
                sentence = load_sentence_model()
                frame = run_pass(prepare_texts(ds, cfg.signals), "embed", sentence.model, sentence.fingerprint,
                                 options={"part": "full"}, label="sentence embeddings (query set)")
                model = "builtin:all-minilm-l6-v2"
            else:
                lm = lm or load_model(selector, dtype=cfg.signals.dtype)
                frame = run_pass(prepare(ds, lm.tokenizer, cfg.signals), name, lm.model, lm.fingerprint,
                                 label=f"{name} (query set)")
                model = selector
            write_frame(frame, pool.target_features(name), {"pass": name, "model": model, "query": query_fp})


def record_costs(pool: Pool, timer: Timer) -> dict:
    """Add the feature passes ``timer`` saw computed (not served by the store) to ``<pool>/feature-costs.json``: wall
    seconds, and the process's peak resident memory when the pass ended (an upper bound of the pass's own peak; the
    passes of one process share it). What a targeted method costs beside its selection. Returns the whole record."""
    import resource
    import sys

    path = pool.folder / "feature-costs.json"
    costs = json.loads(path.read_text()) if path.exists() else {}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 ** 3 if sys.platform == "darwin" else 1024 ** 2)
    new = {name: {"seconds": secs, "process_peak_rss_gb": round(peak, 2)}
           for name, secs in timer.times.items() if name.endswith("pass") and name not in timer.cached}
    if new:
        costs.update(new)
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(costs, indent=2, sort_keys=True))
    return costs


def features_meta_or_none(path: Path) -> dict:
    return features_meta(path) if path.exists() else {}


def _model_pass(pool: Pool, name: str, prep: Prepared, lm, selector: str, timer: Timer) -> pd.DataFrame:
    """One feature pass of the selector's base weights, timed as "<name> pass" (and listed as cached when the store
    serves it), written to the pool's feature file; returns its rows."""
    if stored(prep, name, lm.model, lm.fingerprint):
        timer.cached.append(f"{name} pass")
    with timer(f"{name} pass"):
        frame = run_pass(prep, name, lm.model, lm.fingerprint, label=f"{name} (pool)")
        write_frame(frame, pool.features(name), {"pass": name, "model": selector})
    return frame


def score_pool(cfg: ExperimentConfig, pool: Pool, features=FEATURE_PASSES) -> Path:
    """Every score, and the feature files ``features`` (cached passes skip): the grads pass (grad_norm) and feature
    passes on the base model first, then the DavIR scoring (base, response-only, reference
    fine-tune with its trajectory), grad_norm from the grads pass, and davir_xfit when ``cfg.crossfit``. Scores
    already in ``scores/`` under the same key (``scored``) are kept: only missing feature files are computed.
    summary.json records each step's wall time (``timings_s``, seconds) and the steps the store served (``cached``)."""
    if scored(cfg, pool):
        console.print(f"pool scores: {pool.scores} (same pool and scoring settings, kept)", highlight=False)
        feature_passes(cfg, pool, features)
        return pool.scores
    selector = cfg.selector_model or cfg.model
    tcfg = reference_config(cfg)
    timer = Timer()
    with timer("load model"):
        lm = load_model(selector, dtype=cfg.signals.dtype, master_fp32=tcfg.full)
    with timer("read + encode"):
        ds = read_dataset(pool.data)
        prep = prepare(ds, lm.tokenizer, cfg.signals)
    frame = _model_pass(pool, "grads", prep, lm, selector, timer) if cfg.grad_norm else None   # grad_norm, DPP's
    feature_passes(cfg, pool, features, lm=lm, ds=ds, timer=timer)
    run = RunConfig(data=str(pool.data), model=selector, out=str(pool.folder / "scores"), signals=cfg.signals,
                    train=tcfg, ifd=True)
    _, table, extra = score_dataset(run, timer, lm=lm, prep=prep)
    if frame is not None:
        table["grad_norm"] = frame.set_index("id").loc[table["id"], "grad_norm"].to_numpy()
    if cfg.crossfit:
        with timer("cross-fitted references"):
            table["ref_xfit_loss"] = crossfit_losses(selector, prep, pool.folder / "crossfit", tcfg, cfg.signals.dtype)
    table, guarded = add_scores(table)
    pool.scores.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(pool.scores) as tmp:
        table.to_parquet(tmp, index=False)
    info = {"scoring_key": scoring_key(cfg, pool), "model": selector, "counts": prep.counts(),
            "non_finite_scores": guarded, "train": asdict(tcfg), "length_correlations": length_correlations(table),
            "precision": extra["precision"], "model_fingerprints": extra["model_fingerprints"],
            "tokens": int(sum(len(e.input_ids) for e in prep.encoded)),
            "timings_s": {**timer.times, "total": round(sum(timer.times.values()), 2)}, "cached": timer.cached}
    with atomic_write(pool.folder / "scores" / "summary.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2, default=str))
    console.print(f"pool scored: {len(table)} examples in {info['timings_s']['total'] / 60:.1f} min "
                  f"({', '.join(f'{k} {v:.0f} s' for k, v in timer.times.items())}) -> {pool.scores}", highlight=False)
    return pool.scores
