"""Selection recipes: one scored source by any method, or a mix of several sources, each under its own budget.

A method is ``topk`` | ``dpp`` | ``<score>+dpp`` (the score as DPP quality: learnability plus diversity for
``davir+dpp``) | ``cluster`` | ``cluster-random`` | ``random`` | ``dedup``. ``mix`` runs each source's
selection into ``OUT/sources/<name>/`` and writes one combined ``selected.jsonl`` and ``selection.parquet``
with the source of every row (the DavIR paper's Alpaca + GSM8K mix is two sources with their own budgets).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd

from siftlm.data import read_dataset, write_jsonl
from siftlm.data.io import atomic_write, content_id

METHODS = ("topk", "dpp", "<score>+dpp", "cluster", "cluster-random", "random", "dedup")
DEFAULT_QUALITY_LAMBDA = 0.5   # <score>+dpp without --lam: beta = 0.5, quality and diversity weighted alike


@dataclass
class SelectConfig:
    scores: str = ""                 # scores.parquet (``siftlm score``) or any parquet with an id column
    data: str = ""                   # the dataset those ids come from
    method: str = "topk"
    by: str = "davir"                # topk / cluster score; dpp quality when lam > 0
    budget: float = 0.1              # fraction (< 1) or count (>= 1) of this source
    direction: str | None = None     # high | low (default: the score's)
    features: str | None = None      # dpp / cluster / dedup: .npy in scores order, or .parquet id + vector
    gamma: float = 1.0               # dpp: RBF exp(-gamma ||x - y||^2)
    lam: float | None = None         # dpp quality weight in [0, 1); default 0 for dpp, 0.5 for <score>+dpp
    normalize: bool = True           # dpp: L2-normalise features
    clusters: int | None = None      # cluster: k (default N / 50)
    kmeans: str = "sklearn"          # cluster: sklearn | faiss
    threshold: float = 0.95          # dedup: cosine that counts as duplicate
    seed: int = 0
    format: str | None = None
    name: str = ""                   # mix: the source name written in every row


@dataclass
class Selected:
    table: pd.DataFrame              # scores table with rank / selected (and method columns)
    selection: pd.DataFrame          # the kept rows: id, rank, score, reason
    examples: list                   # the kept examples, in selection order
    format: str
    note: str = ""                   # e.g. why a DPP selection is short
    counts: dict = field(default_factory=dict)


def parse_method(method: str, by: str, lam: float | None) -> tuple[str, str | None, float]:
    """(base method, dpp quality score or None, lambda) from a method name such as ``davir+dpp``."""
    if method.endswith("+dpp"):
        quality = method[: -len("+dpp")]
        return "dpp", quality, DEFAULT_QUALITY_LAMBDA if lam is None else lam
    if method == "dpp":
        lam = lam or 0.0
        return "dpp", by if lam > 0 else None, lam
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    return method, None, 0.0


def run_selection(cfg: SelectConfig, out: str | Path) -> Selected:
    """Select from one source and write scores.parquet, selection.parquet and selected.jsonl into ``out``."""
    from siftlm.recipes import load_features, write_dpp_selection, write_selection, write_subset_selection

    out = Path(out)
    method, quality, lam = parse_method(cfg.method, cfg.by, cfg.lam)
    table = pd.read_parquet(cfg.scores).drop(columns=["rank", "selected"], errors="ignore")
    ds = read_dataset(cfg.data, format=cfg.format)
    by_id = {e.id: e for e in ds.examples}
    missing = [i for i in table["id"] if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} ids of {cfg.scores} are not in {cfg.data} (first: {missing[0]}); wrong dataset?")
    if quality is not None and quality not in table:
        raise ValueError(f"{cfg.scores}: no column {quality!r} for the DPP quality; have {list(table.columns)}")
    x = load_features(cfg.features, table["id"].tolist()) if cfg.features else None
    note = ""
    if method == "topk":
        table = write_selection(ds.examples, table, out, by=cfg.by, budget=cfg.budget, direction=cfg.direction)
    elif method == "dpp":
        if x is None:
            raise ValueError(f"--method {cfg.method} needs --features")
        table, res = write_dpp_selection(ds.examples, table, x, out, budget=cfg.budget, gamma=cfg.gamma,
                                         quality_by=quality, lam=lam, normalize=cfg.normalize,
                                         checkpoint=out / "dpp-checkpoint", direction=cfg.direction)
        note = res.stopped or ""
    else:
        table = write_subset_selection(ds.examples, table, x, out, method=method, budget=cfg.budget,
                                       by=cfg.by if method == "cluster" else None, direction=cfg.direction,
                                       seed=cfg.seed, n_clusters=cfg.clusters, threshold=cfg.threshold,
                                       kmeans_backend=cfg.kmeans)
    selection = pd.read_parquet(out / "selection.parquet")
    counts = {"read": ds.n_read, "rejected": len(ds.rejects), "scored": len(table),
              "not_scored": len(ds.examples) - len(table), "selected": len(selection)}
    return Selected(table, selection, [by_id[i] for i in selection["id"]], ds.format, note, counts)


def load_mix(path: str | Path) -> tuple[list[SelectConfig], dict]:
    """A mix file (YAML): ``{sources: [{name, scores, data, method, budget, ...}, ...], out: folder}``."""
    import yaml

    spec = yaml.safe_load(Path(path).read_text()) or {}
    sources = spec.get("sources")
    if not isinstance(sources, list) or not sources:
        raise ValueError(f"{path}: needs a non-empty 'sources' list")
    known = {f.name for f in fields(SelectConfig)}
    cfgs = []
    for i, s in enumerate(sources):
        unknown = set(s) - known
        if unknown:
            raise ValueError(f"{path}: sources[{i}] has unknown keys {sorted(unknown)}; known: {sorted(known)}")
        for key in ("scores", "data"):
            if key not in s:
                raise ValueError(f"{path}: sources[{i}] needs '{key}'")
        base = Path(path).parent
        s = {**s, **{k: str(base / s[k]) for k in ("scores", "data", "features") if s.get(k)}}
        cfgs.append(SelectConfig(**{"name": s.get("name") or Path(s["data"]).stem, **s}))
    names = [c.name for c in cfgs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: source names must be unique; got {names}")
    return cfgs, {k: v for k, v in spec.items() if k != "sources"}


def mix(sources: list[SelectConfig], out: str | Path) -> dict:
    """Run every source's selection and write the combined selection; returns the summary (also mix.json).

    An example selected by two sources (same messages and responses, whatever its ids) is kept once, under the
    first source, and counted.
    ``selected.jsonl`` holds the original records when every source has the same format, else each example
    in the messages format (``{"messages": [...]}``, plus chosen/rejected for pairs).
    """
    out = Path(out)
    parts, rows, seen, summary = [], [], set(), {"sources": {}, "duplicates_across_sources": 0}
    for cfg in sources:
        res = run_selection(cfg, out / "sources" / cfg.name)
        sel = res.selection.assign(source=cfg.name, method=cfg.method)
        content = [content_id(e.messages, e.chosen, e.rejected) for e in res.examples]   # own ids may repeat
        keep = pd.Series([c not in seen for c in content], index=sel.index)
        summary["duplicates_across_sources"] += int((~keep).sum())
        seen.update(content)
        parts.append(sel[keep])
        rows += [e for e, k in zip(res.examples, keep, strict=True) if k]
        summary["sources"][cfg.name] = {**res.counts, "method": cfg.method, "budget": cfg.budget,
                                        "kept_in_mix": int(keep.sum()), "format": res.format,
                                        **({"note": res.note} if res.note else {})}
    combined = pd.concat(parts, ignore_index=True)
    combined.insert(0, "mix_rank", range(1, len(combined) + 1))
    with atomic_write(out / "selection.parquet") as tmp:
        combined.to_parquet(tmp, index=False)
    formats = {s["format"] for s in summary["sources"].values()}
    if len(formats) == 1:
        write_jsonl((e.raw for e in rows), out / "selected.jsonl")
    else:
        write_jsonl(({"messages": e.messages, **({"chosen": e.chosen, "rejected": e.rejected} if e.chosen is not None
                                                 else {})} for e in rows), out / "selected.jsonl")
    summary["selected"] = len(combined)
    summary["config"] = [asdict(c) for c in sources]
    with atomic_write(out / "mix.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    return summary
