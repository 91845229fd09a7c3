"""Every model pass by name, and the one function that runs a pass through the signal store.

``PASSES`` maps a pass name to how it computes one shard of a prepared dataset; ``run_pass`` adds the rest:
the store key (data as encoded, the weights named by the model handle it is given, settings that change the
numbers), progress, sharding and resume. The shards not yet stored are computed by the runtime's executor
(``siftlm.backends.Runtime``, built by the CLI or a recipe: in this process, or a pool of Ray actors each holding the
model) and written through the same store function, so every executor's shards are interchangeable.

=========  ======  ==================================================================================
pass       input   columns
=========  ======  ==================================================================================
loss       sft     nll_sum, n_tokens, loss, entropy, el2n, acc (``siftlm.signals.losses``)
uncond     sft     the same for each response without its prompt (IFD's denominator)
lm-embed   sft     vector: mean last hidden state over response tokens
grads      sft     vector (sparse-JL-projected LoRA gradient), grad_norm, loss (``siftlm.signals.grads``)
pairs      pairs   chosen_logp, rejected_logp, chosen_tokens, rejected_tokens
embed      text    vector: sentence embedding (sentence-transformers)
=========  ======  ==================================================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from siftlm.backends import Runtime, fetch
from siftlm.config import GradConfig, UsageError, closest
from siftlm.errors import DataError, KeyMismatch
from siftlm.models import compiled, precision
from siftlm.models.compiled import compiling
from siftlm.models.load import LoadedModel, default_device, load_model
from siftlm.models.merge import merged
from siftlm.progress import bar, console
from siftlm.signals import PASS_HELP, store
from siftlm.signals.embed import lm_embed_pass
from siftlm.signals.grads import LoraGradProbe, grad_pass, grads_and
from siftlm.signals.losses import loss_pass
from siftlm.signals.pairs import pair_logps
from siftlm.signals.prepare import Prepared, encoded_fingerprint
from siftlm.signals.sentence import sentence_embed

ENGINE_VERSION = 1

# bind(model, prep, options) -> compute(start, stop, on_batch) -> columns for examples [start, stop)
Bind = Callable[[object, Prepared, dict], Callable[[int, int, Callable[[int], None]], dict]]


class Pass(NamedTuple):
    bind: Bind
    kind: str           # the Prepared kind it takes: sft | pairs | text
    units: int = 1      # progress units per example (a pair is two sequences)


def _pad(prep: Prepared) -> int:
    return prep.tokenizer.pad_token_id


def _loss(model, prep, options):
    return lambda a, b, on_batch: loss_pass(model, prep.encoded[a:b], pad_id=_pad(prep),
                                            token_budget=prep.cfg.token_budget, on_batch=on_batch)


def _uncond(model, prep, options):
    return lambda a, b, on_batch: loss_pass(model, prep.uncond()[a:b], pad_id=_pad(prep),
                                            token_budget=prep.cfg.token_budget, on_batch=on_batch)


def _lm_embed(model, prep, options):
    return lambda a, b, on_batch: lm_embed_pass(model, prep.encoded[a:b], pad_id=_pad(prep),
                                                token_budget=prep.cfg.token_budget, on_batch=on_batch)


def _grads(model, prep, options):
    gcfg = options.get("grad") or GradConfig()
    probe = LoraGradProbe(model, gcfg)
    return lambda a, b, on_batch: grad_pass(model, prep.encoded[a:b], pad_id=_pad(prep), cfg=gcfg,
                                            token_budget=prep.cfg.token_budget, probe=probe, on_batch=on_batch)


def _pairs(model, prep, options):
    return lambda a, b, on_batch: pair_logps(model, prep.encoded[a:b], pad_id=_pad(prep),
                                             token_budget=prep.cfg.token_budget, on_batch=on_batch)


def _embed(model, prep, options):
    def compute(a, b, on_batch):
        return {"vector": list(sentence_embed(model, prep.encoded[a:b], batch_size=options.get("batch_size"),
                                              on_batch=on_batch))}
    return compute


PASSES: dict[str, Pass] = {      # what each computes: siftlm.signals.PASS_HELP
    "loss": Pass(_loss, "sft"),
    "uncond": Pass(_uncond, "sft"),
    "lm-embed": Pass(_lm_embed, "sft"),
    "grads": Pass(_grads, "sft"),
    "pairs": Pass(_pairs, "pairs", units=2),
    "embed": Pass(_embed, "text"),
}
assert set(PASSES) == set(PASS_HELP)


def pass_spec(prep: Prepared, name: str, lm: LoadedModel, options: dict | None = None) -> store.PassSpec:
    """The store key of a pass: the data as encoded, the weights of the model handle ``lm``, and every setting that
    changes the numbers (template, max_length, dtype; the pass's own options)."""
    options = options or {}
    if name == "embed":
        return store.PassSpec(name, prep.fingerprint, lm.fingerprint,
                              {"part": options.get("part", "full"), "normalize": True, "engine": ENGINE_VERSION})
    cfg = prep.cfg
    settings = {"template": prep.template, "max_length": cfg.max_length, "dtype": precision.tag(lm.model, lm.compute),
                "engine": ENGINE_VERSION}
    data_fp = prep.fingerprint
    if name == "uncond":
        data_fp = encoded_fingerprint(prep.uncond(), prep.ids)
    if name == "grads":
        gcfg = options.get("grad") or GradConfig()
        settings = {**settings, **asdict(gcfg), "dim": gcfg.resolved_dim(next(lm.model.parameters()).device)}
    return store.PassSpec(name, data_fp, lm.fingerprint, settings)


def _weights(prep: Prepared) -> list[int]:
    """Work per example in tokens: a sequence's length, both sequences of a pair, ~4 characters per text token."""
    if prep.kind == "pairs":
        return [2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in prep.encoded]
    if prep.kind == "text":
        return [max(1, len(t) // 4) for t in prep.encoded]
    return [len(e.input_ids) for e in prep.encoded]


@dataclass
class ShardJob:
    """What computes shards of one pass, wherever the executor runs it (``siftlm.backends.ShardWork``): built on the
    driver, ``worker`` is called once per process. ``model`` is the model or an executor's reference to it; a remote
    worker loads ``source`` (``load_model``'s arguments) instead when the driver's model is exactly what they load.
    Matrix products run in ``compute`` (the handle's precision)."""
    name: str
    prep: object
    model: object
    source: dict | None
    model_fp: str
    dtype_tag: str
    compute: object
    options: dict
    root: str
    spec: store.PassSpec
    bounds: list
    also: tuple = ()    # (name, spec) of passes computed from the same forward and stored under their own keys

    def units(self, s: int) -> int:
        return PASSES[self.name].units * (self.bounds[s][1] - self.bounds[s][0])

    def _model(self):
        if self.source is None:
            model = fetch(self.model)
            return model.to(default_device()) if self.model is not model and hasattr(model, "to") else model
        lm = load_model(**self.source, quiet=True)
        tag = precision.tag(lm.model, lm.compute)
        if lm.fingerprint != self.model_fp or tag != self.dtype_tag:
            raise KeyMismatch(f"a worker loaded {self.source['spec']} as {lm.fingerprint} ({tag}), "
                               f"the driver has {self.model_fp} ({self.dtype_tag}): every node must see the same model "
                               "files")
        return lm.model

    def worker(self, progress: Callable[[int], None] | None) -> Callable[[int], str]:
        prep, model = fetch(self.prep), self._model()
        keyed = store.open_pass(self.root, self.spec, len(prep.ids), self.bounds)
        tick = progress or (lambda n: None)
        compile_on = self.name in COMPILED and _compile_decision(prep, model)
        others = [(name, store.open_pass(self.root, spec, len(prep.ids), self.bounds)) for name, spec in self.also]
        # fused: one forward gives every pass's columns, {pass name: columns}
        bind = FUSED[(self.name, frozenset(name for name, _ in others))] if others else PASSES[self.name].bind
        compute = bind(model, prep, self.options)

        def run(s: int) -> str:
            spare: dict = {}

            def shard(a: int, b: int) -> dict:
                # a LoRA model runs with its adapters merged into the base weights (its speed), restored after
                with (merged(model) if self.name != "embed" else contextlib.nullcontext(), compiling(compile_on),
                      precision.computing(self.compute)):
                    cols = compute(a, b, tick)
                if not others:
                    return cols
                spare.update({name: cols[name] for name, _ in others})   # stored under their own keys below
                return cols[self.name]

            state = store.compute_shard(keyed, s, self.bounds, prep.ids, shard)
            for name, other in others:
                if name in spare:
                    store.compute_shard(other, s, self.bounds, prep.ids, lambda a, b, cols=spare[name]: cols)
            return state

        return run


def _loss_and_lm_embed(model, prep, options):
    def compute(a, b, on_batch):
        cols = loss_pass(model, prep.encoded[a:b], pad_id=_pad(prep), token_budget=prep.cfg.token_budget,
                         on_batch=on_batch, embed=True)
        return {"lm-embed": {"vector": cols.pop("vector")}, "loss": cols}
    return compute


def _grads_and(*also: str) -> Bind:
    def bind(model, prep, options):
        gcfg = options.get("grad") or GradConfig()
        probe = LoraGradProbe(model, gcfg)
        return lambda a, b, on_batch: grads_and(model, prep.encoded[a:b], pad_id=_pad(prep), also=also, cfg=gcfg,
                                                token_budget=prep.cfg.token_budget, probe=probe, on_batch=on_batch)
    return bind


# passes one forward can serve together (``run_pass(name, also=...)``), by (pass, its companions): the bind gives
# {pass name: columns}, each stored under its own key exactly as its separate pass would store it
FUSED: dict[tuple[str, frozenset], Bind] = {
    ("loss", frozenset({"lm-embed"})): _loss_and_lm_embed,
    ("grads", frozenset({"loss"})): _grads_and("loss"),
    ("grads", frozenset({"lm-embed"})): _grads_and("lm-embed"),
    ("grads", frozenset({"loss", "lm-embed"})): _grads_and("loss", "lm-embed"),
}

COMPILED = ("loss", "uncond", "lm-embed", "pairs")   # the passes whose forward --compile compiles (no gradients)


def _compile_decision(prep: Prepared, model) -> bool:
    """Whether this pass runs the decoder compiled (``--compile``, ``siftlm.models.compiled.decide``), said in one line."""
    mode = getattr(prep.cfg, "compile", "off")
    first = next(model.parameters())
    on, why = compiled.decide(mode, first.device, sum(_weights(prep)), first.dtype)
    compiled.say(f"compile: {'on' if on else 'off'} ({why})", key=("decision", mode, on))
    return on


def stored(prep: Prepared, name: str, lm: LoadedModel, options: dict | None = None, *,
           runtime: Runtime | None = None) -> bool:
    """Whether ``run_pass`` would serve this pass from the store without computing anything."""
    root = (runtime or Runtime.of(prep.cfg)).store
    spec = pass_spec(prep, name, lm, options)
    if store.is_complete(root, spec):
        return True
    return lm.dtype_auto and any(
        store.is_complete(root, store.PassSpec(spec.name, spec.dataset, spec.model, {**spec.settings, "dtype": t}))
        for t in precision.other_tags(lm.model, lm.compute))


def _other_precision(root: str, prep: Prepared, spec: store.PassSpec, lm: LoadedModel) -> pd.DataFrame | None:
    """Under ``--dtype auto``, a finished pass of the same data and weights stored in the other precision (computed
    before this machine's decision was kept, or on a machine that decided otherwise), said out loud; else None."""
    if not lm.dtype_auto or spec.name == "embed" or store.is_complete(root, spec):
        return None
    for tag in precision.other_tags(lm.model, lm.compute):
        other = store.PassSpec(spec.name, spec.dataset, spec.model, {**spec.settings, "dtype": tag})
        if store.is_complete(root, other):
            frame = store.load_pass(root, other)
            if list(frame["id"]) == list(prep.ids):
                console.print(f"{spec.name}: reusing the pass stored in {tag} ({store.pass_dir(root, other)}) instead "
                              f"of computing it again in {precision.tag(lm.model, lm.compute)} (--dtype auto)",
                              highlight=False)
                return frame
    return None


def run_pass(prep: Prepared, name: str, lm: LoadedModel, *, runtime: Runtime | None = None, label: str | None = None,
             options: dict | None = None, also: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows of pass ``name`` for every prepared example (``id`` + the pass's columns) of the model handle ``lm``
    (keyed by its fingerprint), computing only the shards the store does not hold yet, by the executor of ``runtime``
    (default: this process, the store and shard sizing of ``prep.cfg``). ``options``: ``grad`` (a GradConfig) for
    grads; ``part`` and ``batch_size`` for embed. ``also``: passes to compute from the same forward where that pass
    is not stored yet (``FUSED``: the loss pass with ``lm-embed``; the grads pass with the loss pass and/or
    ``lm-embed``), each stored under its own key, as if run alone; a later ``run_pass`` of it is served from the
    store."""
    if name not in PASSES:
        raise UsageError(f"unknown pass {name!r}{closest(name, PASSES)}; known: {', '.join(PASSES)}")
    p = PASSES[name]
    if prep.kind != p.kind:
        raise DataError(f"pass {name} takes {p.kind} data, got {prep.kind}")
    rt = runtime or Runtime.of(prep.cfg)
    options = options or {}
    spec = pass_spec(prep, name, lm, options)
    stored_frame = _other_precision(rt.store, prep, spec, lm)
    if stored_frame is not None:
        return stored_frame
    if lm.trained_into not in (None, lm.fingerprint) and not store.is_complete(rt.store, spec):
        raise KeyMismatch(f"pass {name}: the model was trained in place since it was loaded (its weights are now "
                          f"{lm.trained_into}), so its results cannot be stored as model {lm.fingerprint}; use the "
                          "trained model's handle, or load the model again")
    ex = rt.executor
    bounds = store.shard_bounds(_weights(prep), target=rt.shard_tokens, size=rt.shard_size)
    source = lm.source if ex.remote and name != "embed" else None
    tag = precision.tag(lm.model, lm.compute) if name != "embed" else ""
    if also and (name, frozenset(also)) not in FUSED:
        raise UsageError(f"pass {name} cannot compute {', '.join(also)} in the same forward; fused: "
                         "; ".join(f"{n} with {'+'.join(sorted(c))}" for n, c in FUSED))
    # a companion already stored is served by the store; the rest come from this pass's forward
    companions = tuple((other, spec_o) for other in dict.fromkeys(also)
                       if not store.is_complete(rt.store, spec_o := pass_spec(prep, other, lm)))
    job = ShardJob(name, ex.share(prep), None if source else ex.share(lm.model), source, lm.fingerprint, tag,
                   lm.compute, options, str(Path(rt.store).resolve()), spec, bounds, companions)
    with bar(label or name, p.units * len(prep.examples), enabled=rt.progress) as advance:
        return store.compute_pass(rt.store, spec, prep.ids, job, ex, bounds=bounds, progress=advance,
                                  units=p.units, lock_timeout=rt.lock_timeout)
