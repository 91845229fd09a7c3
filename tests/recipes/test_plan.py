"""siftlm plan: token counts equal the passes' own encoding, FLOPs follow the documented rule, time comes from a
measured throughput when one exists, passes split over GPUs, training splits at its (measured or assumed) scaling
efficiency."""

import json

import pytest

from siftlm.config import PlanConfig, SignalConfig
from siftlm.data import read_dataset
from siftlm.models.load import load_model
from siftlm.recipes.plan import count_params, plan
from siftlm.signals.prepare import prepare


def test_counts_params_and_flops_follow_the_rule(model_dir, alpaca_file, tokenizer):
    lm = load_model(str(model_dir), quiet=True)
    assert count_params(str(model_dir)) == sum(p.numel() for p in lm.model.parameters())
    cfg = PlanConfig(gpus=4, device="cuda", peak_tflops=100.0, mfu=0.5, epochs=3, bench="")
    est = plan(str(alpaca_file), str(model_dir), cfg, signals=SignalConfig(progress=False))
    prep = prepare(read_dataset(alpaca_file), tokenizer, SignalConfig(progress=False))
    tokens = sum(len(e.input_ids) for e in prep.encoded)
    assert est["counts"]["tokens_per_example"] == pytest.approx(tokens / len(prep.encoded))
    p = est["params"]
    steps = {s.name.split(" (")[0] + (" ref" if "reference)" in s.name else ""): s for s in est["steps"]}
    loss, train = steps["loss"], steps["reference fine-tune"]
    assert loss.tokens == pytest.approx(tokens) and loss.flops == pytest.approx(2 * p * tokens)
    assert train.flops == pytest.approx(4 * p * tokens * 3)                     # LoRA: 4P per token, 3 epochs
    assert loss.device_hours == pytest.approx(loss.flops / (100e12 * 0.5) / 3600)
    assert loss.hours == pytest.approx(loss.device_hours / 4)                   # passes split over the GPUs
    compute = 4 * p * tokens * 3 / (100e12 * 0.5) / 3600
    assert train.device_hours == pytest.approx(compute / 0.9)                  # data-parallel at the assumed 0.9
    assert train.hours == pytest.approx(train.device_hours / 4) and "assumed 0.90 efficiency" in train.source
    epochs = steps["loss after each epoch"]                 # P_1..P_3, the last being the reference's
    assert epochs.tokens == pytest.approx(3 * tokens) and epochs.flops == pytest.approx(2 * p * tokens * 3)
    names = [s.name for s in est["steps"]]
    davir = [steps[k] for k in ("loss", "uncond", "reference fine-tune", "loss after each epoch")]
    assert est["flows"]["DavIR (siftlm run --by davir)"][0] == pytest.approx(sum(s.hours for s in davir))
    assert est["flows"]["every score and feature (an experiment's pool)"][0] == pytest.approx(
        sum(s.hours for s in est["steps"])) and len(set(names)) == len(names)
    full = plan(str(alpaca_file), str(model_dir), PlanConfig(full=True, device="cuda", peak_tflops=100.0, bench=""),
                signals=SignalConfig(progress=False))
    assert [s.flops for s in full["steps"] if "fine-tune" in s.name][0] == pytest.approx(6 * p * tokens * 2)


def test_a_measured_throughput_is_used_first_and_scaling_multiplies_tokens(model_dir, alpaca_file, tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    slug = str(model_dir).replace("/", "_")
    (bench / f"loss_pass-{slug}-cpu.json").write_text(json.dumps({"engine_float32_tok_s": 500.0,
                                                                  "engine_bfloat16_tok_s": 250.0}))
    est = plan(str(alpaca_file), str(model_dir), PlanConfig(bench=str(bench), device="cpu", scale_to=2400),
               signals=SignalConfig(progress=False))
    loss = est["steps"][0]
    assert est["examples"] == pytest.approx(2400)
    assert loss.tokens == pytest.approx(2400 * est["counts"]["tokens_per_example"])
    assert loss.device_hours == pytest.approx(loss.tokens / 500.0 / 3600) and loss.source == "measured 500 tok/s"
    grads = [s for s in est["steps"] if s.name.startswith("grads")][0]
    assert grads.device_hours == pytest.approx(2 * loss.device_hours)           # 4P vs 2P per token
    (bench / f"grads-{slug}-cpu.json").write_text(json.dumps({"real_tokens": 1000, "a_s": 10.0}))   # 100 tok/s
    est = plan(str(alpaca_file), str(model_dir), PlanConfig(bench=str(bench), device="cpu", scale_to=2400),
               signals=SignalConfig(progress=False))
    grads = [s for s in est["steps"] if s.name.startswith("grads")][0]
    assert grads.device_hours == pytest.approx(grads.tokens / 100.0 / 3600) and grads.source == "measured 100 tok/s"


def test_a_measured_scaling_efficiency_is_used_for_training(model_dir, alpaca_file, tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    slug = str(model_dir).replace("/", "_")
    rows = [{"world": 1, "efficiency": 1.0, "device": "cuda:0"}, {"world": 8, "efficiency": 0.8, "device": "cuda:0"}]
    (bench / f"train_parallel-{slug}.json").write_text(json.dumps({"rows": rows}))
    cfg = PlanConfig(gpus=8, device="cuda", peak_tflops=100.0, mfu=0.5, bench=str(bench))
    train = [s for s in plan(str(alpaca_file), str(model_dir), cfg, signals=SignalConfig(progress=False))["steps"]
             if "fine-tune" in s.name][0]
    assert train.hours == pytest.approx(train.flops / (100e12 * 0.5) / 3600 / 0.8 / 8)
    assert "0.80 efficiency measured at 8" in train.source


def test_plan_through_the_cli_writes_json(model_dir, alpaca_file, tmp_path):
    from typer.testing import CliRunner

    from siftlm.cli import app

    out = tmp_path / "plan.json"
    r = CliRunner().invoke(app, ["plan", str(alpaca_file), "--model", str(model_dir), "--gpus", "2", "--bench", "",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    got = json.loads(out.read_text())
    assert got["devices"] == 2 and got["device"] == "cuda" and len(got["steps"]) == 7 and "DavIR" in r.output
