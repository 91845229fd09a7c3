"""The DavIR / LP pipeline as library calls: prepare -> loss passes -> train (trajectory) -> scores -> select.

Each model pass goes through the signal store, so every step is cached and resumable; everything after
the passes is cheap numpy over the signals table.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from siftlm import scores as score_registry
from siftlm.data import Dataset, Example, Reject
from siftlm.models.template import Encoded, EncodeError, encode, encode_response_only
from siftlm.progress import bar
from siftlm.select.topk import rank, topk
from siftlm.signals import store
from siftlm.signals.losses import loss_pass
from siftlm.signals.trajectory import TrainConfig, train, trajectory_fingerprints

ENGINE_VERSION = 1


@dataclass
class SignalConfig:
    store: str = "siftlm-store"     # signal store folder
    max_length: int = 1024          # tokens; prompts are cut from the left first, else the example is rejected
    template: str = "auto"          # auto (chat template if the tokenizer has one) | chat | alpaca
    token_budget: int = 4096        # padded tokens per forward batch
    shard_size: int = 512           # examples per stored shard (the unit of resume)
    limit: int | None = None        # use only the first N valid examples
    progress: bool = True


def usage_counts(prep) -> dict:
    """read = kept + rejected + unused_by_limit for a prepared dataset (examples or pairs); checked."""
    c = {"read": prep.dataset.n_read, "kept": len(prep.examples), "rejected": len(prep.rejects),
         "unused_by_limit": prep.n_unused}
    assert c["read"] == c["kept"] + c["rejected"] + c["unused_by_limit"], c
    return c


@dataclass
class Prepared:
    dataset: Dataset
    examples: list[Example]          # the examples in use, aligned with ``encoded``
    encoded: list[Encoded]
    rejects: list[Reject]            # read rejects + encoding rejects
    n_unused: int                    # valid examples left out by ``limit``
    fingerprint: str
    tokenizer: object = None
    cfg: SignalConfig = field(default_factory=SignalConfig)
    _uncond: list[Encoded] | None = None

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    def counts(self) -> dict:
        return usage_counts(self)

    def uncond(self) -> list[Encoded]:
        """Responses without prompts (IFD's P(y)), encoded on first use."""
        if self._uncond is None:
            self._uncond = [encode_response_only(self.tokenizer, e.id, e.messages, template=self.cfg.template)
                            for e in self.examples]
        return self._uncond


def prepare(ds: Dataset, tokenizer, cfg: SignalConfig) -> Prepared:
    """Encode every valid example; those that cannot be encoded under the max_length policy become rejects."""
    sft = [e for e in ds.examples if e.kind == "sft"]
    if len(sft) != len(ds.examples):
        raise ValueError(f"{ds.path}: holds preference pairs; the SFT passes score prompt/response examples "
                         "(use `siftlm signals --pass pairs`, `siftlm dpo`, `siftlm analyze dpo-length`)")
    rejects = list(ds.rejects)
    examples, encoded = [], []
    n_unused = 0
    for ex in sft:
        if cfg.limit is not None and len(examples) >= cfg.limit:
            n_unused += 1
            continue
        try:
            encoded.append(encode(tokenizer, ex.id, ex.messages, max_length=cfg.max_length, template=cfg.template))
            examples.append(ex)
        except EncodeError as e:
            rejects.append(Reject(ex.source, ex.line, "messages", str(e), ex.id))
    if not examples:
        raise ValueError(f"{ds.path}: no valid examples ({len(rejects)} rejected); see the rejects file")
    fp = store.dataset_fingerprint([e.id for e in encoded], [e.input_ids + e.labels for e in encoded])
    return Prepared(ds, examples, encoded, rejects, n_unused, fp, tokenizer, cfg)


def pass_spec(prep: Prepared, name: str, model_fp: str, model) -> store.PassSpec:
    """Store key of a loss pass: data (as encoded), model weights, and settings that change the numbers."""
    cfg = prep.cfg
    dtype = str(next(model.parameters()).dtype)
    settings = {"template": cfg.template, "max_length": cfg.max_length, "dtype": dtype, "engine": ENGINE_VERSION}
    if name == "uncond":
        data_fp = store.dataset_fingerprint(prep.ids, [e.input_ids + e.labels for e in prep.uncond()])
    else:
        data_fp = prep.fingerprint
    return store.PassSpec(name, data_fp, model_fp, settings)


def loss_signals(model, model_fp: str, prep: Prepared, *, name: str = "loss", label: str | None = None) -> pd.DataFrame:
    """Per-example loss statistics of ``model`` (pass ``loss``, or ``uncond`` for responses alone), cached."""
    cfg = prep.cfg
    encoded = prep.encoded if name == "loss" else prep.uncond()
    spec = pass_spec(prep, name, model_fp, model)
    pad = prep.tokenizer.pad_token_id
    with bar(label or name, len(encoded), enabled=cfg.progress) as advance:
        def compute(start: int, stop: int) -> dict:
            return loss_pass(model, encoded[start:stop], pad_id=pad, token_budget=cfg.token_budget, on_batch=advance)
        return store.run_pass(cfg.store, spec, prep.ids, compute, shard_size=cfg.shard_size, on_skip=advance)


def embed_signals(model, model_fp: str, prep: Prepared) -> pd.DataFrame:
    """Mean last hidden state over response tokens for every example (pass ``lm-embed``: ``id``, ``vector``), cached."""
    from siftlm.signals.embed import lm_embed_pass

    cfg = prep.cfg
    spec = pass_spec(prep, "lm-embed", model_fp, model)
    with bar("lm embeddings", len(prep.encoded), enabled=cfg.progress) as advance:
        def compute(start: int, stop: int) -> dict:
            return lm_embed_pass(model, prep.encoded[start:stop], pad_id=prep.tokenizer.pad_token_id,
                                 token_budget=cfg.token_budget, on_batch=advance)
        return store.run_pass(cfg.store, spec, prep.ids, compute, shard_size=cfg.shard_size, on_skip=advance)


def grad_signals(model, model_fp: str, prep: Prepared, gcfg=None) -> pd.DataFrame:
    """Projected per-example LoRA gradients (``vector``), their norm before projection (``grad_norm``) and the
    mean response loss, cached as pass ``grads``; see ``siftlm.signals.grads``."""
    from siftlm.signals.grads import GradConfig, LoraGradProbe, grad_pass

    cfg = prep.cfg
    gcfg = gcfg or GradConfig()
    spec = pass_spec(prep, "grads", model_fp, model)
    device = next(model.parameters()).device
    spec.settings = {**spec.settings, **asdict(gcfg), "dim": gcfg.resolved_dim(device)}
    probe = None
    with bar("lora gradients", len(prep.encoded), enabled=cfg.progress) as advance:
        def compute(start: int, stop: int) -> dict:
            nonlocal probe
            probe = probe or LoraGradProbe(model, gcfg)
            return grad_pass(model, prep.encoded[start:stop], pad_id=prep.tokenizer.pad_token_id, cfg=gcfg,
                             token_budget=cfg.token_budget, probe=probe, on_batch=advance)
        return store.run_pass(cfg.store, spec, prep.ids, compute, shard_size=cfg.shard_size, on_skip=advance)


def sentence_signals(ds: Dataset, embedder: str = "builtin:all-minilm-l6-v2", cfg: SignalConfig | None = None, *,
                     part: str = "full", batch_size: int | None = None, device: str | None = None) -> pd.DataFrame:
    """Sentence embeddings of every valid example (``id``, ``vector``), cached as pass ``embed``.

    Needs no causal LM. ``cfg.limit`` keeps the first N valid records; the LM passes keep the first N that
    also fit ``max_length``, so with a limit join on ``id`` (Parquet output) rather than row order (.npy).
    """
    from siftlm.assets import embedder_path
    from siftlm.models.load import folder_fingerprint
    from siftlm.signals.sentence import example_text, load_embedder, sentence_embed

    cfg = cfg or SignalConfig()
    examples = ds.examples[:cfg.limit] if cfg.limit is not None else ds.examples
    if not examples:
        raise ValueError(f"{ds.path}: no valid examples; see the rejects")
    ids = [e.id for e in examples]
    texts = [example_text(e, part) for e in examples]
    path = embedder_path(embedder)
    model_fp = folder_fingerprint(path) if Path(path).is_dir() else store.fingerprint(path)
    spec = store.PassSpec("embed", store.fingerprint([ids, texts]), model_fp,
                          {"part": part, "normalize": True, "engine": ENGINE_VERSION})
    model = None
    with bar("sentence embeddings", len(ids), enabled=cfg.progress) as advance:
        def compute(start: int, stop: int) -> dict:
            nonlocal model
            model = model or load_embedder(path, device)
            x = sentence_embed(model, texts[start:stop], batch_size=batch_size, on_batch=advance)
            return {"vector": list(x)}
        return store.run_pass(cfg.store, spec, ids, compute, shard_size=cfg.shard_size, on_skip=advance)


def train_reference(lm, prep: Prepared, out: str | Path, tcfg: TrainConfig):
    """Fine-tune the base on all examples with the trajectory evaluated into the store.

    Returns (trajectory frames P_0..P_n, fingerprints). A finished folder for the same data, model and
    settings is reused as it is; one for other data is an error, never silently mixed.
    """
    out = Path(out)
    ident = {"dataset": prep.fingerprint, "base": lm.fingerprint, "config": asdict(tcfg)}
    ident_file = out / "siftlm-identity.json"
    if ident_file.exists() and json.loads(ident_file.read_text()) != ident:
        raise RuntimeError(f"{out}: holds a training run on other data, model or settings; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    ident_file.write_text(json.dumps(ident, indent=2))
    try:
        fps = trajectory_fingerprints(out, lm.fingerprint)
    except FileNotFoundError:
        n_steps = tcfg.epochs * len(prep.encoded)

        def evaluate(model, fp, epoch):
            loss_signals(model, fp, prep, label=f"eval P_{epoch}")

        with bar("train", n_steps, enabled=prep.cfg.progress) as advance:
            train(lm.model, lm.fingerprint, prep.encoded, out, tcfg, pad_id=prep.tokenizer.pad_token_id,
                  evaluate=evaluate, on_step=advance, tokenizer=prep.tokenizer)
        fps = trajectory_fingerprints(out, lm.fingerprint)
    frames = []
    for epoch, fp in enumerate(fps):  # cached when training ran here; recomputed from the saved weights if not
        cached = store.is_complete(prep.cfg.store, pass_spec(prep, "loss", fp, lm.model))
        model = lm.model if cached or epoch == 0 else _load_epoch(lm, out / f"epoch-{epoch}", tcfg, fp)
        frames.append(loss_signals(model, fp, prep, label=f"eval P_{epoch}"))
    return frames, fps


def _load_epoch(lm, folder: Path, tcfg: TrainConfig, fp: str):
    """The model saved after one epoch, loaded on its own (LoRA adapter over the base, or a full model)."""
    from siftlm.models.load import load_model

    device = str(next(lm.model.parameters()).device)
    dtype = next(lm.model.parameters()).dtype
    loaded = (load_model(str(folder), device=device, dtype=dtype) if tcfg.full
              else load_model(lm.path, adapter=str(folder), device=device, dtype=dtype))
    if loaded.fingerprint != fp:
        raise RuntimeError(f"{folder}: weights changed since training (fingerprint {loaded.fingerprint} != {fp})")
    return loaded.model


def signals_table(prep: Prepared, base: pd.DataFrame, ref: pd.DataFrame | None = None,
                  uncond: pd.DataFrame | None = None, trajectory: list[pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per example with every signal; trajectory columns ppl_0..ppl_n and acc_0..acc_n."""
    t = pd.DataFrame({"id": prep.ids,
                      "n_prompt": [e.n_prompt for e in prep.encoded],
                      "n_response": [e.n_response for e in prep.encoded],
                      "truncated": [e.truncated for e in prep.encoded]})
    for prefix, frame in (("base", base), ("ref", ref), ("uncond", uncond)):
        if frame is not None:
            for c in ("nll_sum", "loss", "entropy", "el2n", "acc"):
                t[f"{prefix}_{c}"] = frame[c].to_numpy()
    for i, frame in enumerate(trajectory or []):
        t[f"ppl_{i}"] = np.exp(frame["loss"].to_numpy())
        t[f"acc_{i}"] = frame["acc"].to_numpy()
    return t


def signal_arrays(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """The signals table as the arrays score functions take (trajectories stacked into matrices)."""
    arrays = {c: table[c].to_numpy() for c in table.columns if c != "id"}
    for kind in ("ppl", "acc"):
        cols = sorted((c for c in table.columns if c.startswith(f"{kind}_") and c[len(kind) + 1:].isdigit()),
                      key=lambda c: int(c.split("_")[1]))
        if cols:
            arrays[f"{kind}_trajectory"] = table[cols].to_numpy()
    return arrays


def add_scores(table: pd.DataFrame, names: list[str] | None = None, *, lp_epoch: int = 1) -> tuple[pd.DataFrame, dict]:
    """Add every computable score (or ``names``) as columns; returns the table and NaN counts per score."""
    arrays = signal_arrays(table)
    out = table.copy()
    guarded = {}
    for name in names or list(score_registry.SCORES):
        _, needs, _ = score_registry.SCORES[name]
        if not all(n in arrays for n in needs):
            if names:
                score_registry.compute(name, arrays)  # raises naming what is missing
            continue
        opts = {"epoch": lp_epoch} if name in ("lp", "lp_app") else {}
        values = score_registry.compute(name, arrays, **opts)
        out[name] = values
        guarded[name] = int((~np.isfinite(values)).sum())
    return out, guarded


def length_correlations(table: pd.DataFrame) -> dict:
    """DavIR Tables 1-2: Pearson and Spearman of loss, entropy, RHO-LM and DavIR against token counts."""
    res = {}
    for length_col in ("tokens_total", "n_response"):
        n = table["n_prompt"] + table["n_response"] if length_col == "tokens_total" else table["n_response"]
        for col in ("base_loss", "base_entropy", "rho", "davir"):
            if col not in table:
                continue
            v = table[col].to_numpy()
            ok = np.isfinite(v)
            if ok.sum() < 3 or np.std(v[ok]) == 0:
                continue
            res[f"{col}~{length_col}"] = {"pearson": float(stats.pearsonr(v[ok], n[ok]).statistic),
                                          "spearman": float(stats.spearmanr(v[ok], n[ok]).statistic)}
    return res


def select(table: pd.DataFrame, by: str, *, budget: float, direction: str | None = None) -> pd.DataFrame:
    """Add ``rank`` and ``selected`` columns for the top-``budget`` examples by score ``by``."""
    if by not in table:
        raise KeyError(f"no score column {by!r}; have {[c for c in table.columns if c in score_registry.SCORES]}")
    direction = direction or score_registry.SCORES.get(by, (None, None, "high"))[2]
    out = table.copy()
    out["rank"] = rank(out["id"].to_numpy(), out[by].to_numpy(), direction=direction)
    picked = topk(out["id"].to_numpy(), out[by].to_numpy(), budget=budget, direction=direction)
    out["selected"] = False
    out.loc[out.index[picked], "selected"] = True
    return out


class Timer:
    """Wall time per named step: ``with timer("base pass"): ...``; results in ``timer.times`` (seconds)."""

    def __init__(self):
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(time.perf_counter() - t, 2)
