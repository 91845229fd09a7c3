"""An experiment's pool: a held-out split set aside, the pool itself (optionally with labelled corruptions), every
score and feature the grid's methods need, computed once and cached in the store.

Files in ``OUT/pool/``:

- ``pool.jsonl``: what scoring and selection see, ``{"id": "pool-00001", "messages": [...]}`` in a seeded order
  (corrupted rows look like any other); ``heldout.jsonl``: the held-out split (eval set ``heldout``), disjoint;
- ``labels.parquet``: id, the source record's line and the corruption kind (``clean`` for untouched rows): read
  only by the noisy-pool analysis, never by a score or selector;
- ``pool.json``: how the pool was made, its counts and its fingerprint;
- ``scores/``: ``siftlm score``'s outputs plus grad_norm and (``crossfit``) davir_xfit, a keyed folder whose
  identity is what they were made from (pool, selector, scoring and reference settings); another pool is refused;
- ``features-<pass>.parquet`` (and the query set's ``target-features-<pass>.parquet``): views of store passes whose
  metadata names what they were made from; a file made from anything else is made again, never used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.assets import demo_data, package_file
from siftlm.backends import Runtime
from siftlm.config import ExperimentConfig, RunConfig, TrainConfig, UsageError
from siftlm.data import read_dataset, write_jsonl
from siftlm.data.inject import inject
from siftlm.errors import DataError, KeyMismatch
from siftlm.files import atomic_write
from siftlm.keyed import Keyed, check_keyed, open_keyed, stale, stored_identity
from siftlm.models.load import load_model, load_sentence_model
from siftlm.progress import Timer, console
from siftlm.recipes import target
from siftlm.recipes.davir import score_dataset
from siftlm.recipes.runtime import runtime_for
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


def crossfit_losses(model: str, prep: Prepared, folder: Path, tcfg: TrainConfig, dtype: str,
                    runtime: Runtime | None = None) -> np.ndarray:
    """Each example's loss under a reference that never trained on it: the pool split in two halves (seeded), a
    reference fine-tuned on each half (the same settings as the full reference), each scoring the other half."""
    side = halves(prep.ids, tcfg.seed)
    out = np.full(len(prep.ids), np.nan)
    for h in (0, 1):
        train_pos, score_pos = np.flatnonzero(side == h), np.flatnonzero(side != h)
        lm = load_model(model, dtype=dtype, master_fp32=tcfg.full, quiet=True)
        ref = train_reference(lm, subset(prep, train_pos), folder / f"half-{h}", tcfg, runtime=runtime)
        # trained here: the reference's handle; reused (or trained elsewhere): its last epoch loaded from the folder
        trained = ref.model or _trained(model, folder / f"half-{h}", tcfg, dtype)
        frame = run_pass(subset(prep, score_pos), "loss", trained, runtime=runtime, label=f"cross-fit reference {h}")
        out[score_pos] = frame["loss"].to_numpy()
    return out


def _trained(model: str, folder: Path, tcfg: TrainConfig, dtype: str):
    last = folder / f"epoch-{tcfg.epochs}"
    return (load_model(str(last), dtype=dtype, master_fp32=True, quiet=True) if tcfg.full
            else load_model(model, adapter=str(last), dtype=dtype, quiet=True))


def scoring_identity(cfg: ExperimentConfig, pool: Pool) -> dict:
    """What the pool's scores depend on: the pool's bytes, the selector model, the scoring settings, the reference's
    training and cross-fitting. Bump SCORING_VERSION when a change to siftlm changes what a score computes."""
    ident = {"version": SCORING_VERSION, "pool": pool.fingerprint, "selector": cfg.selector_model or cfg.model,
             "crossfit": cfg.crossfit, "signals": cfg.signals.identity(), "reference": reference_config(cfg).identity()}
    return ident if cfg.grad_norm else {**ident, "grad_norm": False}


def scoring_key(cfg: ExperimentConfig, pool: Pool) -> str:
    """``scoring_identity`` as one short hash (what summary.json records)."""
    i = scoring_identity(cfg, pool)
    parts = [i["version"], i["pool"], i["selector"], i["crossfit"], i["signals"], i["reference"]]
    return store.fingerprint(parts if cfg.grad_norm else parts + [{"grad_norm": False}])


SCORES_UNIT = "scores"
SCORES_LABELS = {"pool": "another pool", "selector": "another selector model"}


def _legacy_key(folder: Path) -> str | None:
    """The scoring_key of a scores folder written before siftlm keyed it (its summary.json, written last, names it)."""
    done = (summary := folder / "summary.json").exists() and (folder / "scores.parquet").exists()
    return json.loads(summary.read_text()).get("scoring_key") if done else None


def scores_folder(cfg: ExperimentConfig, pool: Pool, *, create: bool = True) -> Keyed | None:
    """The pool's keyed scores folder (``siftlm.keyed``): created, or checked against what its scores were made from;
    another pool or other scoring settings are refused before any work (``KeyMismatch`` naming what differs). A folder
    scored before siftlm keyed it (e.g. the committed results of a grid) is taken as it is when its summary names this
    scoring_key, and refused otherwise. ``create=False``: only check, writing nothing (None when it is not keyed)."""
    folder, ident = pool.folder / "scores", scoring_identity(cfg, pool)
    legacy = _legacy_key(folder) if stored_identity(folder) is None else None
    if legacy is not None and legacy != scoring_key(cfg, pool):
        raise KeyMismatch(f"{folder}: holds pool scores of another pool or other scoring settings (scoring key {legacy}, "
                          f"now {scoring_key(cfg, pool)}); use another out, or remove it to start over")
    if not create:
        known = check_keyed(folder, ident, what="pool scores", labels=SCORES_LABELS)
        return Keyed(folder, ident, "pool scores") if known else None
    keyed = open_keyed(folder, ident, what="pool scores", labels=SCORES_LABELS)
    if legacy is not None and not keyed.done(SCORES_UNIT):
        keyed.mark(SCORES_UNIT)                          # scored, and summary.json says with this key
    return keyed


def unkeyed_scores(pool: Pool) -> bool:
    """Whether ``scores/`` holds scores written before siftlm recorded any key for them (no identity, no scoring_key):
    kept for the tables of the cells they served, scored again (keyed) when a cell needs them."""
    f = pool.folder / "scores"
    return pool.scores.exists() and (f / "summary.json").exists() and stored_identity(f) is None and not _legacy_key(f)


def scored(cfg: ExperimentConfig, pool: Pool) -> bool:
    """True when ``scores/`` holds this pool's scores under these settings, e.g. the committed results of a grid in a
    fresh clone: its scores are not computed again. Scores of another pool or settings are refused (``KeyMismatch``)."""
    keyed = scores_folder(cfg, pool, create=False)
    if keyed is not None:
        return keyed.done(SCORES_UNIT)
    return _legacy_key(pool.folder / "scores") is not None        # of this key: another was refused


# ---- feature files: views of store passes, keyed by what they were made from ----

SENTENCE = "builtin:all-minilm-l6-v2"


def feature_identity(cfg: ExperimentConfig, pool: Pool, name: str, query: str | None = None) -> dict:
    """What a pool's (or its query set's) feature file of pass ``name`` is made from: the pool's bytes, the pass, its
    model and the settings that change its numbers (and the query files' fingerprint)."""
    ident = {"pass": name, "pool": pool.fingerprint, "model": SENTENCE if name == "embed" else cfg.selector_model or cfg.model}
    if name != "embed":
        ident["signals"] = cfg.signals.identity()
    return ident if query is None else {**ident, "query": query}


def _current(path: Path, ident: dict) -> bool:
    """Whether the feature file ``path`` holds features of identity ``ident`` (its metadata names it). Any other file
    is made again from the store (its passes are keyed there: nothing computed twice), said in one line."""
    why = stale((features_meta(path) if path.exists() else {}).get("identity"), ident)
    if why is None:
        return True
    if path.exists():
        console.print(f"{path}: {why}; made again", highlight=False)
    return False


def feature_passes(cfg: ExperimentConfig, pool: Pool, names, lm=None, ds=None, timer: Timer | None = None,
                   runtime: Runtime | None = None) -> None:
    """The feature files ``names`` (of FEATURE_PASSES) that do not hold this pool's features yet (``_current``):
    grads and lm-embed on the base weights of the selector (one forward when both are missing), embed with the
    sentence model; each timed as "<name> pass" in ``timer``."""
    timer = timer or Timer()
    rt = runtime or runtime_for(cfg.signals)
    todo = [n for n in FEATURE_PASSES if n in set(names) and not _current(pool.features(n), feature_identity(cfg, pool, n))]
    ds = ds if ds is not None or not todo else read_dataset(pool.data)
    model_passes = [n for n in todo if n != "embed"]
    if model_passes:
        lm = lm or load_model(cfg.selector_model or cfg.model, dtype=cfg.signals.dtype)
        prep = prepare(ds, lm.tokenizer, cfg.signals)
        fused = ("lm-embed",) if "lm-embed" in model_passes else ()     # from the grads pass's forward
        for name in model_passes:      # on the base weights, before any reference trains them in place
            _model_pass(cfg, pool, name, prep, lm, timer, rt, also=fused if name == "grads" else ())
    if "embed" in todo:
        with timer("embed pass"):
            frame = run_pass(prepare_texts(ds, cfg.signals), "embed", load_sentence_model(), runtime=rt,
                             options={"part": "full"}, label="sentence embeddings (pool)")
            write_frame(frame, pool.features("embed"), {"pass": "embed", "model": SENTENCE,
                                                        "identity": feature_identity(cfg, pool, "embed")})
    target_passes(cfg, pool, names, lm, timer, rt)


def target_passes(cfg: ExperimentConfig, pool: Pool, names, lm=None, timer: Timer | None = None,
                  runtime: Runtime | None = None) -> None:
    """The query set's feature files for ``names``, made as the pool's (same pass, model and settings); a file made
    from another query set, pool or settings (its metadata names them) is made again."""
    query_fp = target.fingerprint(pool.folder)
    if query_fp is None:
        return
    timer = timer or Timer()
    rt = runtime or runtime_for(cfg.signals)
    idents = {n: feature_identity(cfg, pool, n, query_fp) for n in FEATURE_PASSES if n in set(names)}
    todo = [n for n, ident in idents.items() if not _current(pool.target_features(n), ident)]
    if not todo:
        return
    ds = read_dataset(pool.folder / "target-query.jsonl")
    for name in todo:
        with timer(f"target {name} pass"):
            if name == "embed":
                frame = run_pass(prepare_texts(ds, cfg.signals), "embed", load_sentence_model(), runtime=rt,
                                 options={"part": "full"}, label="sentence embeddings (query set)")
            else:
                lm = lm or load_model(cfg.selector_model or cfg.model, dtype=cfg.signals.dtype)
                frame = run_pass(prepare(ds, lm.tokenizer, cfg.signals), name, lm, runtime=rt,
                                 label=f"{name} (query set)")
            write_frame(frame, pool.target_features(name), {"pass": name, "model": idents[name]["model"],
                                                            "query": query_fp, "identity": idents[name]})


def _model_pass(cfg: ExperimentConfig, pool: Pool, name: str, prep: Prepared, lm, timer: Timer,
                runtime: Runtime, also: tuple[str, ...] = ()) -> pd.DataFrame:
    """One feature pass of the selector's base weights (and ``also``, from its forward), timed as "<name> pass" ("grads
    + base loss pass"...; cached when the store serves it), written to the pool's feature file; returns its rows."""
    step = " + ".join([name, *({"loss": "base loss"}.get(a, a) for a in also)]) + " pass"
    if stored(prep, name, lm, runtime=runtime):
        timer.cached.append(step)
    with timer(step):
        frame = run_pass(prep, name, lm, runtime=runtime, label=f"{name} (pool)", also=also)
        ident = feature_identity(cfg, pool, name)
        write_frame(frame, pool.features(name), {"pass": name, "model": ident["model"], "identity": ident})
    return frame


def score_pool(cfg: ExperimentConfig, pool: Pool, features=FEATURE_PASSES, runtime: Runtime | None = None) -> Path:
    """Every score, and the feature files ``features`` (cached passes skip): the grads pass (grad_norm; its forward
    gives the base loss and lm-embed) and feature passes on the base model first, then the DavIR scoring (base,
    response-only, reference fine-tune with its trajectory), and davir_xfit when ``cfg.crossfit``. ``scores/``
    is a keyed folder (``scores_folder``): scores of this pool under these settings are kept (only missing feature
    files are made); another pool's or settings' are refused before any work. summary.json records each step's wall
    time (``timings_s``), the steps the store served (``cached``) and each step's peak-RSS rise (``memory``)."""
    rt = runtime or runtime_for(cfg.signals)
    keyed = scores_folder(cfg, pool)
    if keyed.done(SCORES_UNIT):
        console.print(f"pool scores: {pool.scores} (same pool and scoring settings, kept)", highlight=False)
        feature_passes(cfg, pool, features, runtime=rt)
        return pool.scores
    selector = cfg.selector_model or cfg.model
    tcfg = reference_config(cfg)
    timer = Timer()
    with timer("load model"):
        lm = load_model(selector, dtype=cfg.signals.dtype, master_fp32=tcfg.full)
    with timer("read + encode"):
        ds = read_dataset(pool.data)
        prep = prepare(ds, lm.tokenizer, cfg.signals)
    both = ("loss", "lm-embed") if "lm-embed" in features else ("loss",)     # from the grads pass's forward
    frame = _model_pass(cfg, pool, "grads", prep, lm, timer, rt, also=both) if cfg.grad_norm else None  # grad_norm
    if "lm-embed" in features and not stored(prep, "loss", lm, runtime=rt):   # the base loss pass's forward gives both
        with timer("base loss + lm-embed pass"):
            run_pass(prep, "loss", lm, runtime=rt, label="base loss + lm-embed", also=("lm-embed",))
    feature_passes(cfg, pool, features, lm=lm, ds=ds, timer=timer, runtime=rt)
    run = RunConfig(data=str(pool.data), model=selector, out=str(keyed.folder), signals=cfg.signals, train=tcfg,
                    ifd=True)
    _, table, extra = score_dataset(run, timer, lm=lm, prep=prep, runtime=rt)
    if frame is not None:
        table["grad_norm"] = frame.set_index("id").loc[table["id"], "grad_norm"].to_numpy()
    if cfg.crossfit:
        with timer("cross-fitted references"):
            table["ref_xfit_loss"] = crossfit_losses(selector, prep, pool.folder / "crossfit", tcfg, cfg.signals.dtype,
                                                     rt)
    table, guarded = add_scores(table)
    with keyed.writing(pool.scores.name) as tmp:
        table.to_parquet(tmp, index=False)
    info = {"scoring_key": scoring_key(cfg, pool), "model": selector, "counts": prep.counts(),
            "non_finite_scores": guarded, "train": asdict(tcfg), "length_correlations": length_correlations(table),
            "precision": extra["precision"], "model_fingerprints": extra["model_fingerprints"],
            "tokens": int(sum(len(e.input_ids) for e in prep.encoded)),
            "timings_s": {**timer.times, "total": round(sum(timer.times.values()), 2)}, "cached": timer.cached,
            "memory": timer.memory()}
    keyed.write("summary.json", json.dumps(info, indent=2, default=str))
    keyed.mark(SCORES_UNIT)
    console.print(f"pool scored: {len(table)} examples in {info['timings_s']['total'] / 60:.1f} min "
                  f"({', '.join(f'{k} {v:.0f} s' for k, v in timer.times.items())}) -> {pool.scores}", highlight=False)
    return pool.scores
