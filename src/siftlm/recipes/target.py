"""Targeted experiments: a query set a selection is steered toward and a disjoint evaluation set from the same
distribution, and pools mixed from several datasets.

- ``target: {data: builtin:alpaca-eval, query: 50, eval: 150}``: the query and evaluation sets are drawn from an
  evaluation set (stratified over its sources, seeded); no evaluation item shares its instruction with a query item.
- ``target: {data: "source:<name>", query: 20, eval: 80}`` with ``pool: {sources: [...]}``: both come from one of the
  pool's sources, held out of the pool before it is drawn (the "minority source" case).

Files in ``OUT/pool/``: ``target-query.jsonl`` and ``target-eval.jsonl`` (records with their reference answers; the
eval set is the grid's ``target`` evaluation set) and ``target-features-<pass>.parquet`` (the query set's features,
made as the pool's were; their metadata names the query file's fingerprint, so a changed query set is recomputed).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from siftlm.config import ExperimentConfig, UsageError
from siftlm.data import Example, read_dataset, write_jsonl
from siftlm.evaluate.sets import EvalItem, load_eval_set, stratified_sample

SOURCE_SALT = 0x7A26     # its own random stream: unrelated to the held-out split or any selection


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def as_sft(ex: Example) -> Example:
    """A preference example as SFT: the prompt and the chosen answer (``dpo_en_demo``'s chosen answers)."""
    if ex.chosen is None:
        return ex
    return Example(ex.id, list(ex.messages) + [{"role": "assistant", "content": ex.chosen}], source=ex.source,
                   line=ex.line, raw=ex.raw)


def _record(items: list[EvalItem]) -> list[dict]:
    return [{"id": i.id, "messages": i.messages()} for i in items]


def _item(ex: Example) -> EvalItem:
    turns = [m["content"] for m in ex.messages if m["role"] == "user"]
    answers = [m["content"] for m in ex.messages if m["role"] == "assistant"]
    system = next((m["content"] for m in ex.messages if m["role"] == "system"), None)
    return EvalItem(ex.id, turns, answers if len(answers) == len(turns) else None, system=system)


def split_items(items: list[EvalItem], query: int, evaluation: int, seed: int) -> tuple[list, list]:
    """A query set and a disjoint evaluation set: stratified seeded samples; an evaluation item whose first
    instruction equals a query item's (after normalising case and spacing) is left out."""
    items = [i for i in items if i.references]
    q = stratified_sample(items, query, seed=seed)
    asked = {_norm(i.turns[0]) for i in q}
    taken = {i.id for i in q}
    rest = [i for i in items if i.id not in taken and _norm(i.turns[0]) not in asked]
    if len(rest) < evaluation:
        raise UsageError(f"target: {len(rest)} items left for the evaluation set after the query set, {evaluation} asked")
    return q, stratified_sample(rest, evaluation, seed=seed + 1)


def write_target(folder: Path, query: list[EvalItem], evaluation: list[EvalItem]) -> None:
    write_jsonl(_record(query), folder / "target-query.jsonl")
    write_jsonl(_record(evaluation), folder / "target-eval.jsonl")


def builtin_target(cfg: ExperimentConfig, folder: Path) -> None:
    """Query and evaluation sets drawn from an evaluation set (e.g. builtin:alpaca-eval)."""
    t = cfg.target
    q, e = split_items(load_eval_set(t.data), t.query, t.eval, t.seed)
    write_target(folder, q, e)


def mixed_examples(cfg: ExperimentConfig, source_path, chars) -> tuple[list[Example], list[str], list[Example]]:
    """The pool's examples drawn from ``cfg.pool.sources`` ({data, size, name}), each source seeded on its own, in one
    seeded order, with each example's source name; and the target source's held-out examples (before any is drawn
    for the pool) when ``cfg.target.data`` is ``source:<name>``."""
    pcfg = cfg.pool
    want = cfg.target.data.removeprefix("source:") if cfg.target and cfg.target.data.startswith("source:") else None
    names = [s.get("name") or Path(str(s["data"])).stem.removeprefix("builtin:") for s in pcfg.sources]
    if want is not None and want not in names:
        raise UsageError(f"target source {want!r} is not one of the pool's sources ({', '.join(names)})")
    examples, labels, held = [], [], []
    for k, (spec, name) in enumerate(zip(pcfg.sources, names, strict=True)):
        unknown = set(spec) - {"data", "size", "name"}
        if unknown:
            raise UsageError(f"pool source {name}: unknown keys {sorted(unknown)} (known: data, size, name)")
        ds = read_dataset(source_path(str(spec["data"])))
        usable = [as_sft(e) for e in ds.examples if pcfg.max_chars is None or chars(as_sft(e)) <= pcfg.max_chars]
        order = np.random.default_rng([pcfg.seed, SOURCE_SALT, k]).permutation(len(usable))
        if name == want:
            n_held = cfg.target.query + cfg.target.eval
            held, order = [usable[i] for i in order[:n_held]], order[n_held:]
        size = int(spec.get("size") or len(order))
        if size > len(order):
            raise UsageError(f"pool source {name}: {len(order)} usable examples, {size} asked")
        examples += [usable[i] for i in order[:size]]
        labels += [name] * size
    mix = np.random.default_rng([pcfg.seed, SOURCE_SALT]).permutation(len(examples))
    return [examples[i] for i in mix], [labels[i] for i in mix], held


def source_target(cfg: ExperimentConfig, folder: Path, held: list[Example]) -> None:
    """Query and evaluation sets from the target source's held-out examples."""
    items = [_item(e) for e in held]
    for k, item in enumerate(items, start=1):
        item.id = f"target-{k:05d}"
    q, e = split_items(items, cfg.target.query, cfg.target.eval, cfg.target.seed)
    write_target(folder, q, e)


def fingerprint(folder: Path) -> str | None:
    """Of the query and evaluation files (None without a target)."""
    paths = [folder / "target-query.jsonl", folder / "target-eval.jsonl"]
    if not all(p.exists() for p in paths):
        return None
    h = hashlib.sha1()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]
