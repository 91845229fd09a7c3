"""bench/gpu.sh: the dry run says what it would run and exits 0 without a GPU; every phase's code runs on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("loss", "lora-eval", "train", "grads", "generate", "ddp")


def _run(*args, timeout=120):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_dry_run_says_what_it_would_run_and_exits_0():
    res = _run("--dry-run")
    assert res.returncode == 0, res.stderr[-2000:]
    if not torch.cuda.is_available():
        assert res.stdout.startswith("bench/gpu.sh: no CUDA GPU here") and "nothing would be measured" in res.stdout
    for k, phase in enumerate(PHASES, 1):
        assert f"  {k}. {phase} " in res.stdout
    assert "Traceback" not in res.stdout + res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: run bench/gpu.sh itself")
def test_without_a_gpu_a_real_run_is_one_line_and_exit_2():
    res = _run()
    assert res.returncode == 2 and "no CUDA GPU here" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_every_phase_runs_on_the_cpu(tmp_path, model_dir):
    res = _run("--cpu-smoke", "--model", str(model_dir), "--n-loss", "6", "--n-train", "6", "--n-grads", "4",
               "--n-generate", "2", "--max-new-tokens", "4", "--no-compile", "--out", str(tmp_path), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(next(tmp_path.glob("gpu-*.json")).read_text())
    assert {r["phase"] for r in out["rows"]} == set(PHASES) - {"ddp"} and "FAILED" not in res.stdout
    assert out["notes"]["lora_merged_max_abs_diff"] < 1e-5
