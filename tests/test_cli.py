import json
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from siftlm.cli import app
from siftlm.errors import SiftlmError
from siftlm.signals import passes

runner = CliRunner()


def test_inspect_reports_format_counts_and_rejects(tmp_path, alpaca_file):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{oops\n{"instruction": "c", "output": ""}\n')
    res = runner.invoke(app, ["inspect", str(bad), "--rejects", str(tmp_path / "rej.jsonl")])
    assert res.exit_code == 0, res.output
    assert "alpaca" in res.output and "malformed JSON" in res.output and "empty response" in res.output
    assert "[output] empty response" in res.output  # the [field] is not eaten as rich markup
    rows = [json.loads(x) for x in (tmp_path / "rej.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == [2, 3]


def test_inspect_exits_non_zero_when_nothing_is_valid(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": ""}\n')
    res = runner.invoke(app, ["inspect", str(bad)])
    assert res.exit_code == 1 and "nothing valid" in res.output


def _score_args(alpaca_file, model_dir, tmp_path):
    return ["score", str(alpaca_file), "--model", str(model_dir), "--out", str(tmp_path / "out"),
            "--store", str(tmp_path / "store"), "--epochs", "2", "--lr", "5e-3", "--train-budget", "512"]


def test_score_then_select_end_to_end(tmp_path, alpaca_file, model_dir, monkeypatch):
    res = runner.invoke(app, _score_args(alpaca_file, model_dir, tmp_path))
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    assert len(table) == 24
    for col in ("davir", "rho", "lp", "lp_app", "ifd", "el2n", "ppl", "forgetting", "tokens_out", "ppl_2"):
        assert col in table
    assert (table["davir"] - (table["base_loss"] - table["ref_loss"]) / table["base_loss"]).abs().max() < 1e-12
    # a second run reuses every pass and the trained reference: no model pass may run
    monkeypatch.setattr(passes, "loss_pass", lambda *a, **k: pytest.fail("recomputed a cached pass"))
    res = runner.invoke(app, _score_args(alpaca_file, model_dir, tmp_path))
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "scores.parquet"), table)

    res = runner.invoke(app, ["select", str(tmp_path / "out" / "scores.parquet"), "--data", str(alpaca_file),
                              "--by", "lp", "--budget", "5", "--out", str(tmp_path / "sel")])
    assert res.exit_code == 0, res.output
    sel = pd.read_parquet(tmp_path / "sel" / "selection.parquet")
    lowest = table.sort_values(["lp", "id"]).head(5)["id"].tolist()   # LP: keep lowest
    assert sel["id"].tolist() == lowest
    lines = (tmp_path / "sel" / "selected.jsonl").read_text().splitlines()
    src = {json.dumps(json.loads(x), sort_keys=True) for x in alpaca_file.read_text().splitlines()}
    assert len(lines) == 5 and all(json.dumps(json.loads(x), sort_keys=True) in src for x in lines)


def test_config_file_fills_options_and_rejects_unknown_keys(tmp_path, alpaca_file):
    _scored(tmp_path, alpaca_file)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"select:\n  budget: 3\n  by: lp\n  data: {alpaca_file}\n")
    res = runner.invoke(app, ["--config", str(cfg), "select", str(tmp_path / "scores.parquet"), "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    sel = pd.read_parquet(tmp_path / "s" / "selection.parquet")
    table = pd.read_parquet(tmp_path / "scores.parquet")
    assert sel["id"].tolist() == table.sort_values(["lp", "id"]).head(3)["id"].tolist()     # lp: lowest first
    res = runner.invoke(app, ["--config", str(cfg), "select", str(tmp_path / "scores.parquet"), "--budget", "5",
                              "--out", str(tmp_path / "s2")])                               # the command line wins
    assert res.exit_code == 0 and len(pd.read_parquet(tmp_path / "s2" / "selection.parquet")) == 5
    for text, message in [("select:\n  budgett: 3\n", "unknown option 'budgett' (did you mean 'budget'?)"),
                          ("selec:\n  budget: 3\n", "unknown command 'selec' (did you mean 'select'?)"),
                          ("analyze:\n  dpo-length:\n    bta: 1\n", "unknown option 'bta' (did you mean 'beta'?)")]:
        cfg.write_text(text)
        res = runner.invoke(app, ["--config", str(cfg), "inspect", str(alpaca_file)])
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output


def _scored(tmp_path, alpaca_file):
    import numpy as np

    from siftlm.data import read_dataset

    ids = [e.id for e in read_dataset(alpaca_file).examples]
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"id": ids, "davir": rng.random(len(ids)), "lp": rng.random(len(ids))})
    table.to_parquet(tmp_path / "scores.parquet", index=False)
    centers = np.eye(8)[:3] * 5
    x = centers[np.arange(len(ids)) % 3] + 0.01 * rng.standard_normal((len(ids), 8))   # 3 tight clusters
    np.save(tmp_path / "x.npy", x)
    return table, x


def test_select_dpp_picks_one_per_cluster(tmp_path, alpaca_file):
    table, x = _scored(tmp_path, alpaca_file)
    res = runner.invoke(app, ["select", str(tmp_path / "scores.parquet"), "--data", str(alpaca_file), "--method", "dpp",
                              "--features", str(tmp_path / "x.npy"), "--budget", "3", "--out", str(tmp_path / "sel")])
    assert res.exit_code == 0, res.output
    sel = pd.read_parquet(tmp_path / "sel" / "selection.parquet")
    pos = [table.index[table["id"] == i][0] for i in sel["id"]]
    assert sorted(p % 3 for p in pos) == [0, 1, 2]
    assert sel["reason"][0].startswith("dpp pick 1 of 3: log marginal gain")
    # exact duplicates of 3 points: asking for more than 3 stops early and says so
    import numpy as np

    np.save(tmp_path / "dup.npy", np.eye(8)[np.arange(len(table)) % 3])
    res = runner.invoke(app, ["select", str(tmp_path / "scores.parquet"), "--data", str(alpaca_file), "--method", "dpp",
                              "--features", str(tmp_path / "dup.npy"), "--budget", "20", "--out", str(tmp_path / "sel2")])
    assert res.exit_code == 0 and "singular after 3 of 20 picks" in res.output.replace("\n", " ")
    assert len(pd.read_parquet(tmp_path / "sel2" / "selection.parquet")) == 3


def test_select_dpp_with_quality_prefers_high_quality_within_clusters(tmp_path, alpaca_file):
    table, x = _scored(tmp_path, alpaca_file)
    res = runner.invoke(app, ["select", str(tmp_path / "scores.parquet"), "--data", str(alpaca_file), "--method", "dpp",
                              "--features", str(tmp_path / "x.npy"), "--budget", "3", "--by", "davir", "--lam", "0.9",
                              "--out", str(tmp_path / "sel")])
    assert res.exit_code == 0, res.output
    sel = pd.read_parquet(tmp_path / "sel" / "selection.parquet")
    best = table.assign(c=table.index % 3).sort_values("davir", ascending=False).groupby("c").head(1)["id"]
    assert set(sel["id"]) == set(best)


def test_diversity_ranks_clustered_data_below_random(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.save(tmp_path / "random.npy", rng.standard_normal((50, 16)))
    np.save(tmp_path / "clustered.npy", np.eye(16)[rng.integers(0, 2, 50)] + 0.05 * rng.standard_normal((50, 16)))
    res = runner.invoke(app, ["diversity", str(tmp_path / "random.npy"), str(tmp_path / "clustered.npy"),
                              "--steps", "20", "--plot", str(tmp_path / "ldd.png"), "--json", str(tmp_path / "ldd.json")])
    assert res.exit_code == 0, res.output
    vals = {Path(k).name: v["ldd"] for k, v in json.loads((tmp_path / "ldd.json").read_text()).items()}
    assert vals["clustered.npy"] > vals["random.npy"] + 0.5
    assert (tmp_path / "ldd.png").stat().st_size > 1000


@pytest.mark.parametrize("method", ["cluster", "cluster-random", "random"])
def test_select_cluster_and_random_methods_keep_exact_budgets(tmp_path, alpaca_file, method):
    table, x = _scored(tmp_path, alpaca_file)
    res = runner.invoke(app, ["select", str(tmp_path / "scores.parquet"), "--data", str(alpaca_file), "--method", method,
                              "--features", str(tmp_path / "x.npy"), "--clusters", "3", "--by", "lp", "--budget", "7",
                              "--out", str(tmp_path / "sel")])
    assert res.exit_code == 0, res.output
    out = pd.read_parquet(tmp_path / "sel" / "scores.parquet")
    assert out["selected"].sum() == 7 and len((tmp_path / "sel" / "selected.jsonl").read_text().splitlines()) == 7
    if method != "random":
        assert sorted(out.loc[out["selected"]].groupby("cluster").size().tolist()) == [2, 2, 3]
    if method == "cluster":  # inside each cluster, the lowest LP
        for _, g in out.groupby("cluster"):
            kept = g[g["selected"]]
            assert kept["lp"].max() <= g.loc[~g["selected"], "lp"].min()


def test_select_dedup_records_what_each_dropped_example_duplicates(tmp_path, alpaca_file):
    import numpy as np

    table, _ = _scored(tmp_path, alpaca_file)
    x = np.random.default_rng(1).standard_normal((len(table), 16))
    x[5] = x[2] * 3.0                                    # same direction as example 2
    np.save(tmp_path / "e.npy", x)
    res = runner.invoke(app, ["select", str(tmp_path / "scores.parquet"), "--data", str(alpaca_file), "--method", "dedup",
                              "--features", str(tmp_path / "e.npy"), "--out", str(tmp_path / "sel")])
    assert res.exit_code == 0, res.output
    out = pd.read_parquet(tmp_path / "sel" / "scores.parquet")
    assert out["selected"].sum() == len(table) - 1 and not out["selected"][5]
    assert out["duplicate_of"][5] == table["id"][2] and out["duplicate_of"].notna().sum() == 1


def test_lm_embed_pass_feeds_dpp_selection(tmp_path, alpaca_file, model_dir, monkeypatch):
    import numpy as np

    args = ["signals", str(alpaca_file), "--model", str(model_dir), "--pass", "lm-embed", "--store", str(tmp_path / "st"),
            "--out", str(tmp_path / "emb.npy")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    x = np.load(tmp_path / "emb.npy")
    assert x.shape == (24, 32) and np.isfinite(x).all()
    monkeypatch.setattr(passes, "lm_embed_pass", lambda *a, **k: pytest.fail("recomputed a cached pass"))
    (tmp_path / "emb.npy").unlink()
    res = runner.invoke(app, args)                        # cached: same vectors from the store, no model forward
    assert res.exit_code == 0 and np.array_equal(np.load(tmp_path / "emb.npy"), x), res.output
    _scored(tmp_path, alpaca_file)
    res = runner.invoke(app, ["select", str(tmp_path / "scores.parquet"), "--data", str(alpaca_file), "--method", "dpp",
                              "--features", str(tmp_path / "emb.npy"), "--budget", "5", "--out", str(tmp_path / "sel")])
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(tmp_path / "sel" / "selection.parquet")) == 5


def test_grads_pass_feeds_dpp_and_grad_norm_selection(tmp_path, alpaca_file, model_dir, monkeypatch):
    import numpy as np

    args = ["signals", str(alpaca_file), "--model", str(model_dir), "--pass", "grads", "--store", str(tmp_path / "st"),
            "--dim", "64", "--rank", "4", "--out", str(tmp_path / "grads.parquet")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    g = pd.read_parquet(tmp_path / "grads.parquet")
    x = np.stack(g["vector"].to_list())
    assert x.shape == (24, 64) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert (g["grad_norm"] > 0).all()
    monkeypatch.setattr(passes, "grad_pass", lambda *a, **k: pytest.fail("recomputed a cached pass"))
    monkeypatch.setattr(passes, "LoraGradProbe", lambda *a, **k: pytest.fail("set up a probe for a cached pass"))
    res = runner.invoke(app, args)                        # cached: same vectors from the store, no model forward
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.stack(pd.read_parquet(tmp_path / "grads.parquet")["vector"]), x)
    _scored(tmp_path, alpaca_file)
    res = runner.invoke(app, ["select", str(tmp_path / "scores.parquet"), "--data", str(alpaca_file), "--method", "dpp",
                              "--features", str(tmp_path / "grads.parquet"), "--budget", "6", "--out", str(tmp_path / "sel")])
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(tmp_path / "sel" / "selection.parquet")) == 6
    res = runner.invoke(app, ["select", str(tmp_path / "grads.parquet"), "--data", str(alpaca_file), "--by", "grad_norm",
                              "--budget", "4", "--out", str(tmp_path / "gn")])
    assert res.exit_code == 0, res.output
    sel = pd.read_parquet(tmp_path / "gn" / "selection.parquet")
    assert set(sel["id"]) == set(g.nlargest(4, "grad_norm")["id"])


def test_options_come_from_the_config_help_and_feed_the_config(monkeypatch, tmp_path, alpaca_file):
    from siftlm.config import SelectConfig

    res = runner.invoke(app, ["select", "--help"], env={"COLUMNS": "200"})
    help_threshold = next(f.metadata["help"] for f in fields(SelectConfig) if f.name == "threshold")
    assert res.exit_code == 0 and help_threshold in " ".join(res.output.split())
    seen = {}
    import siftlm.recipes.select as run_module

    def record(cfg, out, *, executor=None):
        seen["cfg"], seen["executor"] = cfg, executor
        raise SiftlmError("stop here")

    monkeypatch.setattr(run_module, "run_selection", record)
    res = runner.invoke(app, ["select", "s.parquet", "--data", "d.jsonl", "--method", "dedup", "--threshold", "0.8",
                              "--no-normalize", "--budget", "7"])
    assert res.exit_code == 1 and "stop here" in res.output
    cfg = seen["cfg"]
    assert (cfg.scores, cfg.data, cfg.method, cfg.threshold, cfg.normalize, cfg.budget) == \
        ("s.parquet", "d.jsonl", "dedup", 0.8, False, 7.0)
    assert not seen["executor"].remote            # built at the boundary from --backend (default: this process)


def test_known_errors_are_one_line_without_a_traceback(tmp_path, alpaca_file):
    res = runner.invoke(app, ["select", str(tmp_path / "missing.parquet"), "--data", str(alpaca_file)])
    assert res.exit_code == 1 and "missing.parquet: no such scores file" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["reproduce", "lp-tabel3", "--out", str(tmp_path / "rep")])    # a wrong argument: usage
    assert res.exit_code == 2 and "unknown table 'lp-tabel3'; known: davir-table1" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_diversity_of_data_with_duplicates_prints_an_infinite_distance(tmp_path):
    import numpy as np

    from siftlm.diversity import unit_sphere

    x = unit_sphere(40, 8, seed=0)
    np.save(tmp_path / "dup.npy", np.vstack([x, x[:5]]))
    res = runner.invoke(app, ["diversity", str(tmp_path / "dup.npy"), "--plot", str(tmp_path / "p.png"),
                              "--json", str(tmp_path / "l.json")], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "inf (kernel singular after 40 of 45 steps)" in res.output, res.output


def test_a_preset_sets_what_the_user_did_not(monkeypatch, tmp_path, alpaca_file):
    import siftlm.recipes.davir as davir

    seen = {}

    def record(cfg, select=True):
        seen["cfg"] = cfg
        raise SiftlmError("stop here")

    monkeypatch.setattr(davir, "run_davir", record)
    res = runner.invoke(app, ["score", str(alpaca_file), "--preset", "lp-paper", "--epochs", "4"])
    assert res.exit_code == 1 and "stop here" in res.output
    t = seen["cfg"].train
    assert (t.full, t.epochs, t.lr) == (True, 4, 2e-5)           # --epochs given: kept; the rest from the paper
    res = runner.invoke(app, ["score", str(alpaca_file), "--preset", "lp-papr"])
    assert res.exit_code == 2 and "unknown preset 'lp-papr' (did you mean 'lp-paper'?)" in res.output


def test_a_full_disk_during_training_is_one_line_and_leaves_no_temporaries(tmp_path, alpaca_file, model_dir, monkeypatch):
    from collections import namedtuple

    import siftlm.train.loop as trajectory

    def failing_save(obj, path, *a, **k):
        open(path, "wb").write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/0: "
                           "file write failed")

    import siftlm.files as files

    monkeypatch.setattr(trajectory.torch, "save", failing_save)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: namedtuple("U", "total used free")(1, 1, 0))
    res = runner.invoke(app, ["train", str(alpaca_file), "--model", str(model_dir), "--out", str(tmp_path / "ref"),
                              "--store", str(tmp_path / "st"), "--epochs", "1", "--train-budget", "512"])
    assert res.exit_code == 1 and "no space left on device writing" in res.output and "Traceback" not in res.output
    assert not list((tmp_path / "ref").glob("*.tmp")) and not (tmp_path / "ref" / "epoch-1").exists()


def test_a_read_only_output_is_one_line(tmp_path, alpaca_file, model_dir, monkeypatch):
    import errno

    import siftlm.train.loop as trajectory

    def read_only(model, folder, tokenizer=None):
        raise OSError(errno.EROFS, "Read-only file system", str(folder))

    monkeypatch.setattr(trajectory, "save_folder", read_only)
    res = runner.invoke(app, ["train", str(alpaca_file), "--model", str(model_dir), "--out", str(tmp_path / "ref"),
                              "--store", str(tmp_path / "st"), "--epochs", "1", "--train-budget", "512"])
    assert res.exit_code == 1 and "read-only: cannot write" in res.output and "Traceback" not in res.output


def test_signals_and_score_write_rejects_and_counts_and_fail_in_one_line(tmp_path, model_dir):
    bad = tmp_path / "broken.json"
    bad.write_text('[{"instruction": "q", "output": "a"}, {"instruction": ')
    notjson = tmp_path / "n.jsonl"
    notjson.write_text("hello\nworld\n")
    for path in (bad, notjson):
        for verb in ("signals", "score"):
            res = runner.invoke(app, [verb, str(path), "--model", str(model_dir), "--store", str(tmp_path / "st"),
                                      "--out", str(tmp_path / f"o-{verb}.parquet" if verb == "signals" else tmp_path / "o")])
            assert res.exit_code == 1 and path.name in res.output and "Traceback" not in res.output, res.output
    data = tmp_path / "d.jsonl"
    rows = [{"instruction": f"q{i}", "output": f"a{i} " * 3} for i in range(6)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n{oops\n" + json.dumps(
        {"instruction": "long", "output": "z " * 300}) + "\n")
    res = runner.invoke(app, ["signals", str(data), "--model", str(model_dir), "--store", str(tmp_path / "st"),
                              "--max-length", "128", "--out", str(tmp_path / "s.parquet")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    rejects = [json.loads(x) for x in (tmp_path / "s.parquet.rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [8, 9] and "does not fit in max_length=128" in rejects[1]["reason"]
    assert "skipped" in res.output and "rejected: malformed JSON" in res.output
    res = runner.invoke(app, ["score", str(data), "--model", str(model_dir), "--store", str(tmp_path / "st"),
                              "--max-length", "128", "--out", str(tmp_path / "run"), "--epochs", "2", "--train-budget",
                              "512"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["counts"] == {"read": 9, "kept": 6, "rejected": 2, "skipped": 1, "unused_by_limit": 0}
    assert summary["rejects_by_reason"] == {"malformed JSON": 1, "response does not fit in max_length": 1}
    assert "rejected: response does not fit in max_length" in res.output
    assert (tmp_path / "run" / "report.html").exists() and len((tmp_path / "run" / "rejects.jsonl").read_text().splitlines()) == 2


def test_score_finds_the_reference_train_made_and_refuses_a_folder_of_other_data_before_any_pass(
        tmp_path, alpaca_file, model_dir, monkeypatch):
    import siftlm.train.reference as trajectory

    common = ["--model", str(model_dir), "--store", str(tmp_path / "st"), "--epochs", "2", "--train-budget", "512"]
    res = runner.invoke(app, ["train", str(alpaca_file), "--out", str(tmp_path / "ref"), *common])
    assert res.exit_code == 0, res.output
    monkeypatch.setattr(trajectory, "train", lambda *a, **k: pytest.fail("trained the reference again"))
    res = runner.invoke(app, ["score", str(alpaca_file), "--out", str(tmp_path / "run"), *common])
    assert res.exit_code == 0 and "reference: reusing" in res.output, res.output
    assert not (tmp_path / "run" / "reference").exists()
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"instruction": f"x{i}", "output": f"y{i}"}) + "\n" for i in range(5)))
    monkeypatch.setattr(passes, "loss_pass", lambda *a, **k: pytest.fail("a pass ran before the check"))
    res = runner.invoke(app, ["score", str(other), "--out", str(tmp_path / "run"), "--reference", str(tmp_path / "ref"),
                              *common], env={"COLUMNS": "300"})
    assert res.exit_code == 1 and "holds a reference training with other data" in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) <= 2


def test_the_spellings_of_transformers_and_trl_are_accepted(monkeypatch, tmp_path):
    import siftlm.recipes.dpo as dpo_recipe

    seen = {}

    def record(data, model, out, sig, dcfg, **k):
        seen.update(out=out, dcfg=dcfg)
        raise SiftlmError("stop here")

    monkeypatch.setattr(dpo_recipe, "run_dpo", record)
    res = runner.invoke(app, ["dpo", "p.jsonl", "--learning-rate", "1e-5", "--num-train-epochs", "3",
                              "--per-device-train-batch-size", "8", "--gradient-accumulation-steps", "2",
                              "--gradient-checkpointing", "--output-dir", str(tmp_path / "o")])
    assert res.exit_code == 1 and "stop here" in res.output, res.output
    d = seen["dcfg"]
    assert (d.lr, d.epochs, d.batch_size, d.grad_accum, d.activation_checkpointing) == (1e-5, 3.0, 8, 2, True)
    assert seen["out"] == tmp_path / "o"


def test_demo_help_says_why_its_defaults_differ():
    res = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "300"})
    text = " ".join(res.output.split())
    assert "here 0.001: a 2-epoch LoRA reference on 128 examples needs a larger step" in text
    assert "0.1: a DavIR pick at about the size the paper keeps" in text


def test_every_common_mistake_is_one_line_on_stderr_with_the_right_exit_code(tmp_path, alpaca_file, monkeypatch):
    import numpy as np
    from huggingface_hub import constants

    table, _ = _scored(tmp_path, alpaca_file)
    scores = str(tmp_path / "scores.parquet")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cases = [
        (["signals", str(alpaca_file), "--model", "builtin:smollm3"], 2, "builtin:smollm3"),
        (["signals", str(alpaca_file), "--model", str(tmp_path / "no-such-model")], 1, "no-such-model"),
        (["signals", str(alpaca_file), "--model", "someorg/somemodel"], 1, "offline: someorg/somemodel"),
        (["signals", str(tmp_path / "missing.jsonl")], 1, "missing.jsonl"),
        (["select", str(tmp_path / "missing.parquet"), "--data", str(alpaca_file)], 1, "missing.parquet"),
        (["select", scores, "--data", str(tmp_path / "nodata.jsonl")], 1, "nodata.jsonl"),
        (["select", scores, "--data", str(alpaca_file), "--method", "dpp", "--features", str(tmp_path / "nofeat.npy")],
         1, "nofeat.npy"),
        (["select", scores, "--data", str(alpaca_file), "--method", "dppp"], 2, "unknown method 'dppp'"),
        (["select", scores, "--data", str(alpaca_file), "--by", "davri"], 2, "no score column 'davri' (did you mean"),
        (["select", scores, "--data", str(alpaca_file), "--budget", "ten"], 2, "not a number"),
        (["mix", str(tmp_path / "nomix.yaml")], 1, "nomix.yaml"),
        (["diversity", str(tmp_path / "nofeatures.parquet")], 1, "nofeatures.parquet"),
        (["signals", str(alpaca_file), "--pass", "los"], 2, "unknown pass 'los'"),
    ]
    for args, code, text in cases:
        res = runner.invoke(app, args, env={"COLUMNS": "300"})
        err = res.stderr.strip().splitlines()
        assert res.exit_code == code and len(err) == 1 and text in err[0], (args, res.exit_code, res.stderr)
        assert "Traceback" not in res.output
    x = np.random.default_rng(0).standard_normal((len(table), 8))
    pd.DataFrame({"id": table["id"], "vector": list(x)}).to_parquet(tmp_path / "f.parquet")
    pd.DataFrame({"id": table["id"][:10]}).to_parquet(tmp_path / "sel.parquet")
    res = runner.invoke(app, ["diversity", str(tmp_path / "f.parquet"), "--selection", str(tmp_path / "sel.parquet"),
                              "--json", str(tmp_path / "l.json"), "--plot", str(tmp_path / "l.png")])
    assert res.exit_code == 0 and json.loads((tmp_path / "l.json").read_text())[str(tmp_path / "f.parquet")]["n"] == 10


def test_select_prints_counts_threshold_and_score_summary(tmp_path, alpaca_file):
    table, _ = _scored(tmp_path, alpaca_file)
    res = runner.invoke(app, ["select", str(tmp_path / "scores.parquet"), "--data", str(alpaca_file), "--by", "davir",
                              "--budget", "5", "--out", str(tmp_path / "s")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    threshold = table["davir"].sort_values(ascending=False).iloc[4]
    assert f"{threshold:.4g}" in res.output and "threshold (last selected)" in res.output and "scored" in res.output


def test_hub_datasets_by_name_and_a_clear_error_offline(monkeypatch):
    import datasets
    from huggingface_hub import constants

    asked = {}

    def fake_load(name, subset, split=None):
        asked.update(name=name, subset=subset, split=split)
        return datasets.Dataset.from_list([{"question": f"q{i}", "answer": f"a{i}"} for i in range(4)])

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    res = runner.invoke(app, ["inspect", "--dataset-name", "org/qa", "--subset", "en", "--split", "train"])
    assert res.exit_code == 0 and "prompt_completion" in res.output, res.output
    assert asked == {"name": "org/qa", "subset": "en", "split": "train"}
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    res = runner.invoke(app, ["inspect", "--dataset-name", "org/qa"])
    assert res.exit_code == 1 and "offline: org/qa is a hub dataset" in res.stderr


@pytest.mark.parametrize("verb", ["signals", "run", "train"])
def test_a_file_with_nothing_valid_fails_before_any_model_loads_and_writes_its_rejects(tmp_path, model_dir, verb,
                                                                                          monkeypatch):
    data = tmp_path / "empty.jsonl"
    data.write_text("\n" + json.dumps({"instruction": "q"}) + "\n")           # a blank line and a record with no output
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        classmethod(lambda *a, **k: pytest.fail("the model was loaded")))
    out = tmp_path / ("s.parquet" if verb == "signals" else "out")
    res = runner.invoke(app, [verb, str(data), "--model", str(model_dir), "--store", str(tmp_path / "st"),
                              "--out", str(out)])
    rejects = Path(f"{out}.rejects.jsonl") if verb == "signals" else out / "rejects.jsonl"
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    text = " ".join(res.output.split())
    assert "no valid examples (2 read, 1 rejected, 1 blank; first: line 2: missing required field" in text
    assert str(rejects) in text and len(rejects.read_text().splitlines()) == 1


def test_a_resumed_signals_file_is_byte_identical_to_a_clean_one(tmp_path, model_dir, alpaca_file):
    import shutil

    args = ["signals", str(alpaca_file), "--model", str(model_dir), "--shard-size", "5"]
    assert runner.invoke(app, [*args, "--store", str(tmp_path / "a"), "--out", str(tmp_path / "clean.parquet")]).exit_code == 0
    assert runner.invoke(app, [*args, "--store", str(tmp_path / "b"), "--out", str(tmp_path / "x.parquet")]).exit_code == 0
    (folder,) = (tmp_path / "b").glob("loss-*")
    for s in (1, 3):                                                          # as if killed before these shards
        (folder / f"shard-{s:05d}.done").unlink()
    shutil.rmtree(tmp_path / "a")                                             # the clean run's store is gone too
    assert runner.invoke(app, [*args, "--store", str(tmp_path / "b"), "--out", str(tmp_path / "resumed.parquet")]).exit_code == 0
    assert (tmp_path / "resumed.parquet").read_bytes() == (tmp_path / "clean.parquet").read_bytes()


def test_a_bug_keeps_its_traceback_while_the_users_mistakes_are_one_line(monkeypatch):
    """Only siftlm's own errors and the known library mistakes (a missing file, a full disk) are said in one line;
    any other exception is a bug in siftlm and reaches the user with its traceback."""
    import errno

    import siftlm.recipes.select as run_module

    def raising(error):
        def run(cfg, out, *, executor=None):
            raise error
        return run

    for error in (ValueError("a bug"), KeyError("column"), RuntimeError("a bug"), OSError(errno.EIO, "I/O error")):
        monkeypatch.setattr(run_module, "run_selection", raising(error))
        res = runner.invoke(app, ["select", "s.parquet", "--data", "d.jsonl"])
        assert res.exit_code == 1 and res.exception is error and "error:" not in res.output, (error, res.output)
    for error, code, line in [(SiftlmError("bad input"), 1, "error: bad input"),
                              (FileNotFoundError(errno.ENOENT, "No such file or directory", "x.json"), 1,
                               "error: x.json: No such file or directory"),
                              (OSError(errno.ENOSPC, "No space left on device", "out/x"), 1,
                               "error: no space left on device writing out/x")]:
        monkeypatch.setattr(run_module, "run_selection", raising(error))
        res = runner.invoke(app, ["select", "s.parquet", "--data", "d.jsonl"])
        assert res.exit_code == code and res.stderr.strip().splitlines()[0].startswith(line), (error, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_a_full_disk_while_a_selection_is_written_names_the_file(tmp_path, alpaca_file, monkeypatch):
    import errno

    _scored(tmp_path, alpaca_file)

    def full(self, path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")        # pyarrow's way: no file name

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    res = runner.invoke(app, ["select", str(tmp_path / "scores.parquet"), "--data", str(alpaca_file), "--by", "lp",
                              "--budget", "5", "--out", str(tmp_path / "sel")], env={"COLUMNS": "300"})
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert f"no space left on device writing {tmp_path / 'sel' / 'scores.parquet'}" in res.stderr, res.stderr
