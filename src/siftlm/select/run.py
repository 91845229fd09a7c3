"""Selection from one scored source: scores + data + features -> a method -> the selection files.

A method is ``topk`` | ``dpp`` | ``<score>+dpp`` (the score as DPP quality, e.g. ``davir+dpp``: learnability
plus diversity) | ``cluster`` | ``cluster-random`` | ``random`` | ``dedup``. Every method returns a ``Picked``
and ``write_selection`` is the one writer of its files:

- ``scores.parquet``: the input table plus ``rank`` (selection order 1..k; empty for rows not selected),
  ``selected`` and the method's own columns (``cluster``, ``duplicate_of``, ``dpp_gain``);
- ``selection.parquet``: the selected rows in order: ``id``, ``rank``, ``score``, ``reason``;
- ``selected.jsonl``: the selected examples exactly as they were in the input file.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.backends import Executor
from siftlm.config import DEFAULT_BUDGET, DEFAULT_BY, SelectConfig, UsageError, closest
from siftlm.data import Example, detect, read_dataset, write_selected
from siftlm.errors import DataError, MissingInput
from siftlm.files import atomic_write
from siftlm.select import cluster, dedup, dpp, s2l, sample, targeted, topk
from siftlm.select.picked import CannotSelect, Method, Picked
from siftlm.select.topk import budget_count
from siftlm.signals.table import load_features

METHODS = {
    "topk": Method(topk.pick, ranks_by=lambda cfg: True),
    "dpp": Method(dpp.pick, settle=dpp.settle, ranks_by=lambda cfg: bool(cfg.lam)),
    "cluster": Method(cluster.pick_cluster, ranks_by=lambda cfg: True),
    "cluster-random": Method(cluster.pick_cluster_random),
    "random": Method(sample.pick),
    "dedup": Method(dedup.pick),
    "s2l": Method(s2l.pick),
    "less": Method(targeted.pick_less),
    "repr": Method(targeted.pick_repr),
    "datainf": Method(targeted.pick_datainf),
    "filter": Method(sample.pick),      # run_selection drops what the detectors flag first; random fills the budget
}
DEFAULT_QUALITY_LAMBDA = 0.5   # <score>+dpp without --lam: beta = 0.5, quality and diversity weighted alike
SELECTION_COLUMNS = ("rank", "selected", "cluster", "duplicate_of", "dpp_gain", "less_score", "repr_score",
                     "datainf_score")


@dataclass
class Selected:
    table: pd.DataFrame              # the scores table with rank / selected (and the method's columns)
    selection: pd.DataFrame          # the kept rows: id, rank, score, reason
    examples: list                   # the kept examples, in selection order
    format: str
    note: str = ""                   # e.g. why a DPP selection is short
    counts: dict = field(default_factory=dict)
    by: str | None = None            # the score the selection ranked by, if any
    detectors: dict = field(default_factory=dict)   # {detector: {"kept": n, "dropped": n}}


def resolve(cfg: SelectConfig) -> SelectConfig:
    """The config a method runs with: ``<score>+dpp`` becomes dpp with that quality (lambda 0.5 unless given);
    ``by`` and ``budget`` get their defaults where the method has one."""
    method, by, lam, budget = cfg.method, cfg.by, cfg.lam, cfg.budget
    if method.endswith("+dpp"):
        method, by, lam = "dpp", method[: -len("+dpp")], DEFAULT_QUALITY_LAMBDA if lam is None else lam
    if method not in METHODS:
        raise UsageError(f"unknown method {cfg.method!r}{closest(cfg.method, METHODS)}; known: {', '.join(METHODS)}, "
                         "<score>+dpp")
    if method not in ("dedup", "filter"):
        by = by or DEFAULT_BY
        budget = DEFAULT_BUDGET if budget is None else budget
    if method == "filter" and budget is None and cfg.budget_tokens is None:
        budget = 1.0                    # every row the detectors pass
    return replace(cfg, method=method, by=by, lam=lam, budget=budget)


def write_selection(examples: list[Example], table: pd.DataFrame, picked: Picked, out: str | Path, *,
                    language: str = "en") -> Selected:
    """Write scores.parquet, selection.parquet and selected.jsonl for ``picked`` rows of ``table``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = table.drop(columns=[c for c in SELECTION_COLUMNS if c in table]).reset_index(drop=True)
    for name, values in picked.columns.items():
        table[name] = values
    rank = pd.array([pd.NA] * len(table), dtype="Int64")
    rank[picked.positions] = np.arange(1, len(picked.positions) + 1)
    table["rank"] = rank
    table["selected"] = table["rank"].notna().to_numpy()
    selection = pd.DataFrame({"id": table["id"].to_numpy()[picked.positions],
                              "rank": np.arange(1, len(picked.positions) + 1, dtype=np.int64),
                              "score": np.asarray(picked.score, dtype=np.float64), "reason": picked.reasons})
    by_id = {e.id: e for e in examples}
    if "detected" not in table:                     # what the behaviour detectors find in each row, for the report
        table["detected"] = detected(table["id"], by_id, language)
    with atomic_write(out / "scores.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_write(out / "selection.parquet") as tmp:
        selection.to_parquet(tmp, index=False)
    kept = [by_id[i] for i in selection["id"]]
    write_selected(kept, out / "selected.jsonl")
    return Selected(table, selection, kept, "", picked.note, detectors=detector_counts(table))


def token_counts(table: pd.DataFrame, on: str = "all") -> np.ndarray:
    """Tokens of every scored example: prompt + response (``on="all"``, what a fine-tune reads) or response only
    (``on="response"``, the supervised tokens it learns from)."""
    if on not in ("all", "response"):
        raise UsageError(f"--budget-on must be all or response, got {on!r}")
    if "n_prompt" not in table or "n_response" not in table:
        raise UsageError("--budget-tokens needs the n_prompt and n_response columns (a scores.parquet of siftlm score)")
    n = table["n_response"] if on == "response" else table["n_prompt"] + table["n_response"]
    return n.to_numpy(dtype=np.int64)


def token_limit(table: pd.DataFrame, cfg: SelectConfig) -> int:
    """The token budget as a count: an integer as given, a fraction of every scored example's tokens."""
    budget = cfg.budget_tokens
    if isinstance(budget, bool) or budget <= 0:
        raise UsageError(f"--budget-tokens must be a positive count or a fraction in (0, 1], got {budget}")
    total = token_counts(table, cfg.budget_on).sum()
    return int(np.floor(budget * total)) if isinstance(budget, float) and budget <= 1 else int(budget)


def by_tokens(table: pd.DataFrame, features, cfg: SelectConfig, limit: int | None = None, *,
              executor: Executor | None = None) -> Picked:
    """The method's selection under a token budget: the largest count whose selection fits in the budget, found by
    bisection over counts. Exact for methods whose selections are nested (a larger count keeps every pick of a
    smaller one: topk, random, dpp, repr); for per-cluster quotas, a count at which one more would not fit."""
    tokens = token_counts(table, cfg.budget_on)
    budget = cfg.budget_tokens
    limit = token_limit(table, cfg) if limit is None else limit
    method = METHODS[cfg.method]
    cfg = method.settle(table, features, cfg)     # e.g. one DPP precision for every count tried

    def at(k: int) -> tuple[Picked, int] | None:
        try:
            picked = method.pick(table, features, replace(cfg, budget=k), executor=executor)
        except CannotSelect:            # e.g. more picks than finite scores: this count cannot be selected
            return None
        return picked, int(tokens[picked.positions].sum())

    lo, hi = 0, len(table)              # invariant: count lo fits (0 always does), hi + 1 does not or is past the end
    best = None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        got = at(mid)
        if got is not None and got[1] <= limit:
            lo, best = mid, got[0]
        else:
            hi = mid - 1
    if best is None:
        raise DataError(f"--budget-tokens {budget}: no example fits in {limit} tokens (the shortest has "
                         f"{int(tokens.min())})")
    used = int(tokens[best.positions].sum())
    what = "response tokens" if cfg.budget_on == "response" else "tokens"
    note = f"token budget {limit} {what}: {len(best.positions)} examples, {used} {what}"
    return replace(best, note=f"{best.note}; {note}" if best.note else note)


def run_selection(cfg: SelectConfig, out: str | Path, *, executor: Executor | None = None) -> Selected:
    """Select from one source with ``cfg.method`` and write the selection files into ``out``; independent pieces
    (GreeDi's parts, k-means assignment) run on ``executor`` (built by the caller; default this process)."""
    out = Path(out)
    cfg = resolve(cfg)
    if not Path(cfg.scores).exists():
        raise MissingInput(f"{cfg.scores}: no such scores file")
    data_only = cfg.method == "filter" and not cfg.data       # `siftlm select data.jsonl --method filter`: no scores
    if not cfg.data and not data_only:
        raise UsageError("--data is needed: the dataset the scores belong to (for selected.jsonl)")
    ds = read_dataset(cfg.scores if data_only else cfg.data, format=cfg.format)
    table = pd.DataFrame({"id": [e.id for e in ds.examples]}) if data_only else pd.read_parquet(cfg.scores)
    by_id = {e.id for e in ds.examples}
    missing = [i for i in table["id"] if i not in by_id]
    if missing:
        raise DataError(f"{len(missing)} ids of {cfg.scores} are not in {cfg.data} (first: {missing[0]}); wrong dataset?")
    x = load_features(cfg.features, table["id"].tolist()) if cfg.features and cfg.method != "datainf" else None
    own_checkpoint = cfg.method == "dpp" and cfg.checkpoint is None
    if own_checkpoint:
        cfg = replace(cfg, checkpoint=str(out / "dpp-checkpoint"))
    examples = {e.id: e for e in ds.examples}
    table["detected"] = detected(table["id"], examples, cfg.language)
    drop = np.zeros(len(table), dtype=bool)
    excluded = table["id"].isin(read_ids(cfg.exclude)).to_numpy() if cfg.exclude else drop
    filtered = (table["detected"] != "").to_numpy() if cfg.method == "filter" else drop
    picked = _pick_without(table, x, replace(cfg, method="random") if cfg.method == "filter" else cfg,
                           excluded | filtered, executor)
    if own_checkpoint and not cfg.keep_checkpoint:      # done: its rows take 8 x N x M bytes (GBs at scale)
        shutil.rmtree(cfg.checkpoint, ignore_errors=True)
    if cfg.method == "filter":
        picked = replace(picked, reasons=[f"passed every detector; {r}" for r in picked.reasons])
        _write_filtered(table, filtered, examples, out / "filtered.jsonl")
    res = write_selection(ds.examples, table, picked, out)
    res.by = cfg.by if METHODS[cfg.method].ranks_by(cfg) else None
    res.format = ds.format
    res.counts = {"read": ds.n_read, "rejected": len(ds.rejects), "scored": len(table),
                  "not_scored": len(ds.examples) - len(table), "selected": len(res.selection),
                  **({"excluded": int(excluded.sum())} if cfg.exclude else {}),
                  **({"filtered": int(filtered.sum())} if cfg.method == "filter" else {})}
    return res


def detected(ids, examples: dict, language: str = "en") -> list[str]:
    """What the behaviour detectors find in each example's last answer ("; "-joined reasons, "" when nothing)."""
    out = []
    for i in ids:
        msgs = examples[i].messages
        answer = next((m["content"] for m in reversed(msgs) if m["role"] == "assistant"), "")
        prompt = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")
        out.append("; ".join(detect.findings(str(answer), str(prompt), language).reasons()))
    return out


def detector_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{detector: {"kept": n, "dropped": n}}: how many rows each detector flags among the kept and the dropped rows
    (what a selection filtered, without any label)."""
    if "detected" not in table:
        return {}
    kept = table["selected"].to_numpy(dtype=bool)
    out = {}
    for flag in detect.FLAGS:
        label = flag.replace("_", " ") if flag != "echo" else "echoes the prompt"
        label = "empty answer" if flag == "empty" else label
        hit = table["detected"].str.contains(label, regex=False).to_numpy()
        out[flag] = {"kept": int((hit & kept).sum()), "dropped": int((hit & ~kept).sum())}
    return out


def read_ids(path: str | Path) -> set[str]:
    """Ids from a .parquet (id column), .jsonl (an id field per line) or a text file (one id per line)."""
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{path}: no such ids file (--exclude)")
    if path.suffix == ".parquet":
        return set(pd.read_parquet(path, columns=["id"])["id"].astype(str))
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if path.suffix == ".jsonl":
        return {str(json.loads(ln)["id"]) for ln in lines}
    return set(lines)


def _pick_without(table: pd.DataFrame, x, cfg: SelectConfig, drop: np.ndarray, executor: Executor | None = None) -> Picked:
    """The method run on the rows not dropped, its picks mapped back to ``table``'s positions. A fractional budget
    (of examples or tokens) stays a fraction of every row of ``table``, so leaving rows out does not shrink it; when
    fewer rows are left than the budget asks for, all of them are kept (said in the note)."""
    if cfg.budget_tokens is not None:
        limit = token_limit(table, cfg)
    if not drop.any():
        if cfg.budget_tokens is not None:
            return by_tokens(table, x, cfg, limit, executor=executor)
        return METHODS[cfg.method].pick(table, x, cfg, executor=executor)
    keep = np.flatnonzero(~drop)
    sub = table.iloc[keep].reset_index(drop=True)
    xs = None if x is None else np.asarray(x)[keep]
    note = ""
    if cfg.budget_tokens is not None:
        picked = by_tokens(sub, xs, cfg, limit, executor=executor)
    else:
        k = budget_count(cfg.budget, len(table))
        if k > len(sub):
            note = f"kept all {len(sub)} rows left after leaving {int(drop.sum())} out (the budget allowed {k})"
            k = len(sub)
        picked = METHODS[cfg.method].pick(sub, xs, replace(cfg, budget=int(k)), executor=executor)
    columns = {}
    for name, values in picked.columns.items():
        full = np.full(len(table), np.nan, dtype=object)
        full[keep] = np.asarray(values, dtype=object)
        columns[name] = full
    return replace(picked, positions=keep[picked.positions], columns=columns,
                   note="; ".join(n for n in (picked.note, note) if n))


def _write_filtered(table: pd.DataFrame, filtered: np.ndarray, examples: dict, path: Path) -> None:
    """Every row the filter dropped, with its file, line and the detectors' reasons (like rejects.jsonl)."""
    rows = [{"id": i, "file": str(examples[i].source), "line": examples[i].line, "reason": why}
            for i, why in zip(table["id"][filtered], table["detected"][filtered], strict=True)]
    with atomic_write(path) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
