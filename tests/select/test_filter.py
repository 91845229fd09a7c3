"""The detector filter (select --method filter), leaving ids out (--exclude, the oracle arm), budgets on response
tokens, and what the detectors report about a selection's kept and dropped rows."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from siftlm.cli import app
from siftlm.config import SelectConfig
from siftlm.data import read_dataset
from siftlm.select.run import run_selection, token_counts

runner = CliRunner()
REFUSAL = "I'm sorry, but I can't help with that request."
CHINESE = "巴黎是法国的首都，也是法国最大的城市。"
LOOP = " ".join(["the cat sat on the mat"] * 6)


@pytest.fixture
def junky(tmp_path):
    """20 Alpaca rows, rows 2, 5 and 11 junk of three kinds; scores with token counts."""
    rows = [{"instruction": f"Question {i}: say something about topic {i}.", "input": "",
             "output": f"Here is a clear answer about topic {i}, in plain English, with a few details."}
            for i in range(20)]
    rows[2]["output"], rows[5]["output"], rows[11]["output"] = REFUSAL, CHINESE, LOOP
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    ids = [e.id for e in read_dataset(path).examples]
    pd.DataFrame({"id": ids, "n_prompt": np.full(20, 10), "n_response": np.arange(20) + 1,
                  "lp_app": np.linspace(0, 1, 20)}).to_parquet(tmp_path / "scores.parquet")
    return path, tmp_path / "scores.parquet", ids


def test_filter_drops_what_the_detectors_flag_with_reasons_and_fills_the_budget_at_random(junky, tmp_path):
    data, scores, ids = junky
    res = run_selection(SelectConfig(scores=str(scores), data=str(data), method="filter", budget=0.5, seed=3),
                        tmp_path / "sel")
    kept = set(res.selection["id"])
    junk = {ids[2], ids[5], ids[11]}
    assert len(kept) == 10 and not kept & junk                       # half of all 20 rows, none of the junk
    dropped = [json.loads(line) for line in (tmp_path / "sel" / "filtered.jsonl").read_text().splitlines()]
    assert {d["id"] for d in dropped} == junk
    why = {d["id"]: d["reason"] for d in dropped}
    assert why[ids[2]].startswith("refusal") and why[ids[5]].startswith("wrong language: zh")
    assert why[ids[11]].startswith("repetition") and all(d["line"] in (3, 6, 12) for d in dropped)
    assert res.counts["filtered"] == 3 and res.counts["selected"] == 10
    assert res.detectors["refusal"] == {"kept": 0, "dropped": 1}
    assert all(r.startswith("passed every detector") for r in res.selection["reason"])
    # seeded: the same seed picks the same rows, another seed other rows
    again = run_selection(SelectConfig(scores=str(scores), data=str(data), method="filter", budget=0.5, seed=3),
                          tmp_path / "sel2")
    assert list(again.selection["id"]) == list(res.selection["id"])
    # no budget: every row the detectors pass; and a data file alone is enough (no scores)
    res = runner.invoke(app, ["select", str(data), "--method", "filter", "--out", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(tmp_path / "plain" / "selection.parquet")) == 17
    assert "kept 0 of 1 refusal-like answers" in res.output


def test_exclude_leaves_ids_out_and_a_fraction_stays_a_fraction_of_every_row(junky, tmp_path):
    data, scores, ids = junky
    (tmp_path / "junk.txt").write_text(f"{ids[2]}\n{ids[5]}\n")
    res = run_selection(SelectConfig(scores=str(scores), data=str(data), method="topk", by="lp_app", direction="low",
                                     budget=0.25, exclude=str(tmp_path / "junk.txt")), tmp_path / "sel")
    # 25 % of 20 = 5 rows: the 5 lowest lp_app once rows 2 and 5 are gone (rows 0, 1, 3, 4, 6)
    assert list(res.selection["id"]) == [ids[k] for k in (0, 1, 3, 4, 6)]
    assert res.counts["excluded"] == 2
    table = pd.read_parquet(tmp_path / "sel" / "scores.parquet")
    assert not table.loc[table["id"].isin([ids[2], ids[5]]), "selected"].any()


def test_a_budget_of_response_tokens(junky, tmp_path):
    data, scores, ids = junky
    table = pd.read_parquet(scores)
    assert list(token_counts(table, "response")) == list(range(1, 21))
    assert list(token_counts(table)) == [10 + k for k in range(1, 21)]
    res = run_selection(SelectConfig(scores=str(scores), data=str(data), method="topk", by="lp_app", direction="low",
                                     budget_tokens=10, budget_on="response"), tmp_path / "sel")
    # lowest lp_app first: response tokens 1 + 2 + 3 + 4 = 10 fit, a fifth (5) would not
    assert list(res.selection["id"]) == ids[:4]
    res = run_selection(SelectConfig(scores=str(scores), data=str(data), method="topk", by="lp_app", direction="low",
                                     budget_tokens=0.1, budget_on="response"), tmp_path / "sel2")
    assert table.set_index("id").loc[res.selection["id"], "n_response"].sum() <= int(0.1 * 210)
