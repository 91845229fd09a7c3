import json

import pandas as pd

from siftlm.config import RunConfig, SignalConfig, TrainConfig
from siftlm.recipes.davir import run_davir


def test_run_davir_writes_every_artifact_and_counts_add_up(tmp_path, model_dir):
    data = tmp_path / "d.jsonl"
    rows = [{"instruction": f"q{i} " * (1 + i % 5), "output": f"answer {i} " * (1 + i % 7)} for i in range(30)]
    rows.append({"instruction": "x", "output": ""})            # rejected: empty response
    rows.append(dict(rows[0]))                                   # rejected: duplicate
    rows.insert(0, {"instruction": "long", "output": "z" * 400})  # rejected at encoding: max_length
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n{bad json\n")
    cfg = RunConfig(data=str(data), model=str(model_dir), out=str(tmp_path / "out"), budget=0.1, by="davir",
                    signals=SignalConfig(store=str(tmp_path / "store"), max_length=200, limit=25, progress=False),
                    train=TrainConfig(epochs=2, lr=5e-3, token_budget=512))
    s = run_davir(cfg)
    c = s["counts"]
    assert c == {"read": 34, "kept": 25, "rejected": 4, "skipped": 0, "unused_by_limit": 5, "selected": 3}
    out = tmp_path / "out"
    table = pd.read_parquet(out / "scores.parquet")
    assert table["selected"].sum() == 3 and set(table.loc[table["selected"], "rank"]) == {1, 2, 3}
    top = table.sort_values(["davir", "id"], ascending=[False, True]).head(3)["id"].tolist()
    sel = pd.read_parquet(out / "selection.parquet")
    assert sel["id"].tolist() == top
    first = table.set_index("id").loc[top[0]]
    assert sel["reason"][0].startswith(f"davir={first['davir']:.4g} (base_loss={first['base_loss']:.4g}, ref_loss=")
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert {r["line"] for r in rejects} == {1, 32, 33, 34}
    assert any("does not fit in max_length=200" in r["reason"] for r in rejects)
    assert set(s["length_correlations"]) >= {"davir~tokens_total", "rho~tokens_total", "base_loss~tokens_total"}
    assert json.loads((out / "summary.json").read_text())["counts"] == c
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 4 and "<td>unused by limit</td><td class='n'>5</td>" in report
    assert f"<td>{top[0]}</td>" in report and "<td>rejected: malformed JSON</td><td class='n'>1</td>" in report
    assert "Top selected examples" in report and "Bottom of the ranking" in report
    worst = table.sort_values(["davir", "id"], ascending=[True, True]).iloc[0]
    assert f"<td>{worst['id']}</td>" in report.split("Bottom of the ranking")[1]      # the lowest DavIR, shown
    assert "answer " in report.split("Top selected examples")[1]                     # with its text
    s2 = run_davir(cfg)                                                              # everything from the store now
    assert set(s2["cached"]) == {"base loss pass", "unconditional pass (IFD)", "reference fine-tune + trajectory"}
    assert "<td>base loss pass</td><td>cached</td>" in (out / "report.html").read_text()


def test_run_with_a_target_selects_the_examples_nearest_to_it(tmp_path, model_dir):
    """`siftlm run --target`: one features pass on the data and the target, the round-robin nearest pick (recomputed
    here from the written features), the usual files and the report."""
    import json

    import numpy as np
    import pandas as pd
    from typer.testing import CliRunner

    from siftlm.cli import app
    from siftlm.signals.table import load_features
    from siftlm.stats import l2_normalize
    from tests.conftest import alpaca_rows

    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(20)))
    (tmp_path / "target.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(3, seed=5)))
    res = CliRunner().invoke(app, ["run", str(tmp_path / "data.jsonl"), "--model", str(model_dir), "--target",
                                   str(tmp_path / "target.jsonl"), "--target-method", "repr", "--budget", "4", "--out",
                                   str(tmp_path / "out"), "--store", str(tmp_path / "st")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    sel = pd.read_parquet(out / "selection.parquet")
    ids = pd.read_parquet(out / "scores.parquet")["id"].tolist()
    x = l2_normalize(load_features(out / "features.parquet", ids))
    t = l2_normalize(load_features(out / "target-features.parquet"))
    sims = x @ t.T
    first = [int(np.argmax(sims[:, k])) for k in range(3)]      # round 1: each target takes its nearest (if free)
    assert sel["id"].iloc[0] == ids[first[0]] and len(sel) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selection"]["method"] == "repr -> target" and summary["counts"]["selected"] == 4
    assert (out / "report.html").exists() and "targeted selection" in (out / "report.html").read_text()


def test_run_with_a_target_defaults_to_nearest_sentence_embeddings(tmp_path, model_dir):
    """`siftlm run --target` without --target-method: nearest sentence embeddings (the measured default), the pool
    rows with the highest max-cosine to the targets (recomputed here from the written features)."""
    import json

    import numpy as np
    import pandas as pd
    from typer.testing import CliRunner

    from siftlm.cli import app
    from siftlm.signals.table import load_features
    from siftlm.stats import l2_normalize
    from tests.conftest import alpaca_rows

    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(20)))
    (tmp_path / "target.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(3, seed=5)))
    res = CliRunner().invoke(app, ["run", str(tmp_path / "data.jsonl"), "--model", str(model_dir), "--target",
                                   str(tmp_path / "target.jsonl"), "--budget", "4", "--out", str(tmp_path / "out"),
                                   "--store", str(tmp_path / "st")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selection"]["method"] == "nearest -> target" and summary["selection"]["features"] == "embed"
    ids = pd.read_parquet(out / "scores.parquet")["id"].tolist()
    x = l2_normalize(load_features(out / "features.parquet", ids))
    t = l2_normalize(load_features(out / "target-features.parquet"))
    best = {ids[i] for i in np.argsort(-(x @ t.T).max(1))[:4]}
    assert set(pd.read_parquet(out / "selection.parquet")["id"]) == best
