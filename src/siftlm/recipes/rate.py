"""``siftlm rate``: an LLM judge rates every example (AlpaGasus' data rating), through the evaluation's judge client
(cached, retried within a time budget, failures counted and written to ``failures.jsonl`` beside the ratings)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from siftlm.config import DataConfig, JudgeConfig
from siftlm.data import open_dataset, write_rejects
from siftlm.evaluate.judge import Judge
from siftlm.files import atomic_write


def rate(data, judge_cfg: JudgeConfig, out: str | Path, *, src: DataConfig | None = None,
         limit: int | None = None, check: bool = True) -> tuple[pd.DataFrame, Judge]:
    """Rate each valid SFT example's last response given the conversation before it; writes ``out`` (id, rating; an
    item that failed has no rating) and ``failures.jsonl`` beside it (id and reason of every failed item), then raises
    when nothing was rated or more than ``judge_cfg.max_failures`` failed."""
    out = Path(out)
    judge = Judge(judge_cfg, out.parent / "judge-cache")      # checked before the data is read
    ds = open_dataset(data, src or DataConfig())
    examples = [e for e in ds.examples if e.kind == "sft"][:limit]
    items = []
    for e in examples:
        prompt = "\n\n".join(m["content"] for m in e.messages[:-1] if m["role"] != "system")
        items.append((e.id, prompt, e.messages[-1]["content"]))
    frame = pd.DataFrame(judge.rate(items))
    with atomic_write(out) as tmp:
        frame.to_parquet(tmp, index=False)
    write_rejects(ds.rejects, out.with_suffix(".rejects.jsonl"))
    judge.write_failures(out.parent / "failures.jsonl")
    if check:
        judge.check(len(frame), "examples")
    return frame, judge
