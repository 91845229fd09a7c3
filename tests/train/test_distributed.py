"""Data-parallel training on CPU (gloo): 2 processes under torchrun, accelerate launch and Ray Train against one
process on the same data, seed and global batches; a rank killed mid-epoch; the balanced split of a global batch; and,
where 2 GPUs exist, the torchrun comparison under NCCL (the last test; bench/gpu.sh runs it).

Tolerance: the step losses and the final adapter agree to 1e-5 (absolute). The two runs compute the same global
batches from the same initial weights; they differ only in the order of floating-point sums (each rank sums its half
of the batch, then the all-reduce adds the halves), which measured 9e-7 on the losses and 5e-7 on the weights after
2 epochs of the tiny model; 1e-5 leaves an order of magnitude for other CPUs and thread counts.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from siftlm.train.dist import imbalance, split_batch
from tests.conftest import alpaca_rows

TOL = 1e-5
ARGS = ["--epochs", "2", "--train-budget", "512", "--lr", "0.005"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    (d / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(40)))
    return d / "data.jsonl"


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _bin(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def _train(cmd, out, store, data, model_dir, *extra):
    res = subprocess.run([*cmd, "train", str(data), "--model", str(model_dir), "--out", str(out), "--store", str(store),
                          *ARGS, *extra], env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _steps(out):
    return [json.loads((out / f"epoch-{e}" / "siftlm-steps.json").read_text()) for e in (1, 2)]


def _same_training(a, b, store_a, store_b):
    for sa, sb in zip(_steps(a), _steps(b), strict=True):
        np.testing.assert_allclose(sb["losses"], sa["losses"], atol=TOL, rtol=0)
    wa, wb = (load_file(d / "epoch-2" / "adapter_model.safetensors") for d in (a, b))
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < TOL
    # the trajectory: P_0..P_2 of every example, the same ids in the same order, the same losses
    for epoch in (0, 1, 2):
        fa, fb = _trajectory(store_a, a, epoch), _trajectory(store_b, b, epoch)
        assert fa["id"].tolist() == fb["id"].tolist()
        np.testing.assert_allclose(fb["loss"], fa["loss"], atol=TOL, rtol=0)


def _trajectory(store, ref, epoch):
    """The loss pass of P_epoch, found in the store by the model fingerprint the training folder gives that epoch."""
    from siftlm.train.loop import trajectory_fingerprints

    base = json.loads((ref / "siftlm-identity.json").read_text())["base"]
    fp = trajectory_fingerprints(ref, base)[epoch]
    for folder in store.glob("loss-*"):
        ident = json.loads((folder / "siftlm-identity.json").read_text())
        if ident["model"] == fp:
            return pd.concat([pd.read_parquet(folder / f"shard-{s:05d}.parquet") for s in range(ident["n_shards"])],
                             ignore_index=True)
    raise AssertionError(f"no stored pass of P_{epoch} ({fp})")


@pytest.fixture(scope="module")
def single(tmp_path_factory, data, model_dir):
    d = tmp_path_factory.mktemp("single")
    _train([sys.executable, "-m", "siftlm"], d / "ref", d / "st", data, model_dir)
    return d


def test_two_processes_under_torchrun_train_what_one_does(single, tmp_path, data, model_dir):
    _train([_bin("torchrun"), "--nproc_per_node", "2", "-m", "siftlm"], tmp_path / "ref", tmp_path / "st", data,
           model_dir)
    assert {s["world_size"] for s in _steps(tmp_path / "ref")} == {2}
    _same_training(single / "ref", tmp_path / "ref", single / "st", tmp_path / "st")


def test_accelerate_launch_and_ray_train_run_the_same_loop(single, tmp_path, data, model_dir):
    _train([_bin("accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "-m", "siftlm"], tmp_path / "acc",
           tmp_path / "st-acc", data, model_dir)
    _same_training(single / "ref", tmp_path / "acc", single / "st", tmp_path / "st-acc")
    _train([sys.executable, "-m", "siftlm"], tmp_path / "ray", tmp_path / "st-ray", data, model_dir, "--backend", "ray",
           "--workers", "2")
    assert {s["world_size"] for s in _steps(tmp_path / "ray")} == {2}
    _same_training(single / "ref", tmp_path / "ray", single / "st", tmp_path / "st-ray")


KILL_ONE_RANK = """
import os, signal, sys
import torch.distributed as dist
from siftlm.config import DataConfig, SignalConfig, TrainConfig
from siftlm.recipes.davir import train_on_data
from siftlm.train import loop
data, model, out, store = sys.argv[1:5]
real, n = loop._step, [0]
def dying(*a, **k):
    n[0] += 1
    if n[0] == 30 and dist.get_rank() == 1:      # epoch 1 has 25 steps: rank 1 dies in the middle of epoch 2
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
loop._step = dying
train_on_data(data, model, out, SignalConfig(store=store, progress=False),
              TrainConfig(epochs=2, token_budget=512, lr=0.005), DataConfig())
"""


def test_kill_9_of_one_rank_resumes_from_the_last_epoch_at_another_world_size(single, tmp_path, data, model_dir):
    script = tmp_path / "kill.py"
    script.write_text(KILL_ONE_RANK)
    res = subprocess.run([_bin("torchrun"), "--nproc_per_node", "2", str(script), str(data), str(model_dir),
                          str(tmp_path / "ref"), str(tmp_path / "st")], env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode != 0
    ref = tmp_path / "ref"
    assert (ref / "epoch-1.done").exists() and not (ref / "epoch-2").exists()
    saved = (ref / "epoch-1" / "adapter_model.safetensors").stat().st_mtime_ns
    _train([sys.executable, "-m", "siftlm"], ref, tmp_path / "st", data, model_dir)       # resumed in one process
    assert (ref / "epoch-1" / "adapter_model.safetensors").stat().st_mtime_ns == saved    # epoch 1 was kept
    assert [s["world_size"] for s in _steps(ref)] == [2, 1]
    _same_training(single / "ref", ref, single / "st", tmp_path / "st")


def test_a_global_batch_is_split_by_tokens_the_same_way_on_every_rank():
    tokens = [50, 10, 40, 30, 30, 5, 80, 20]
    batch = [0, 1, 2, 3, 4, 5, 6, 7]
    parts = split_batch(batch, tokens, 2)
    assert sorted(i for p in parts for i in p) == batch                          # every example once
    loads = [sum(tokens[i] for i in p) for p in parts]
    assert max(loads) - min(loads) <= max(tokens)                               # balanced within one example
    assert loads == [135, 130] and parts == split_batch(list(reversed(batch)), tokens, 2)   # order does not matter
    assert split_batch([3], tokens, 2) == [[3], []]                             # fewer examples than ranks
    assert imbalance(batch, tokens, 1) == 1.0 and 1.0 <= imbalance(batch, tokens, 2) < 1.3


def test_accelerates_mixed_precision_is_refused():
    from siftlm.config import UsageError
    from siftlm.train.dist import check_launch

    check_launch({"ACCELERATE_MIXED_PRECISION": "no"})
    with pytest.raises(UsageError, match="asks for mixed_precision fp16: siftlm sets precision itself"):
        check_launch({"ACCELERATE_MIXED_PRECISION": "fp16"})


def test_full_fine_tuning_under_ddp_trains_what_one_process_does(tmp_path, data, model_dir):
    full = ["--full", "--lr", "0.0005"]
    _train([sys.executable, "-m", "siftlm"], tmp_path / "one", tmp_path / "st1", data, model_dir, *full)
    _train([_bin("torchrun"), "--nproc_per_node", "2", "-m", "siftlm"], tmp_path / "two", tmp_path / "st2", data,
           model_dir, *full)
    for sa, sb in zip(_steps(tmp_path / "one"), _steps(tmp_path / "two"), strict=True):
        np.testing.assert_allclose(sb["losses"], sa["losses"], atol=TOL, rtol=0)
    wa, wb = (load_file(d / "epoch-2" / "model.safetensors") for d in (tmp_path / "one", tmp_path / "two"))
    assert wa.keys() == wb.keys() and max(float((wa[k] - wb[k]).abs().max()) for k in wa) < TOL


def test_launch_mistakes_are_one_line(tmp_path, data, model_dir):
    res = subprocess.run([sys.executable, "-m", "siftlm", "train", str(data), "--model", str(model_dir), "--out",
                          str(tmp_path / "r"), "--store", str(tmp_path / "st"), "--workers", "2"], env=_env(),
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--workers 2 needs --backend ray, or a launcher" in " ".join(res.stderr.split())
    small = tmp_path / "two.jsonl"
    small.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(2)))
    res = subprocess.run([_bin("torchrun"), "--nproc_per_node", "3", "-m", "siftlm", "train", str(small), "--model",
                          str(model_dir), "--out", str(tmp_path / "r3"), "--store", str(tmp_path / "st3")], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "3 processes for 2 examples: launch at most 2" in " ".join(res.stderr.split())


def test_dpo_under_torchrun_is_trls_data_parallel_with_the_same_global_batch(tmp_path, model_dir):
    from tests.conftest import pair_rows

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(16)))
    common = ["dpo", str(pairs), "--model", str(model_dir), "--loss", "davir", "--max-steps", "4", "--lr", "1e-2"]
    for cmd, batch, out in (([sys.executable, "-m", "siftlm"], "4", "one"),
                            ([_bin("torchrun"), "--nproc_per_node", "2", "-m", "siftlm"], "2", "two")):
        res = subprocess.run([*cmd, *common, "--batch-size", batch, "--out", str(tmp_path / out), "--store",
                              str(tmp_path / f"st-{out}")], env=_env(), capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "siftlm-dpo.json").read_text()) for d in ("one", "two"))
    assert two["world_size"] == 2
    np.testing.assert_allclose([h["loss"] for h in two["log_history"] if "loss" in h],
                               [h["loss"] for h in one["log_history"] if "loss" in h], atol=TOL, rtol=0)


GPU_TOL = 1e-4


@pytest.mark.skipif(not (torch.cuda.is_available() and torch.cuda.device_count() >= 2),
                    reason="needs 2 CUDA GPUs (bench/gpu.sh runs it where they exist)")
def test_two_processes_under_nccl_train_what_one_does(tmp_path, data, model_dir):
    """The torchrun test above on GPUs: one process on cuda:0 against two on cuda:0 and cuda:1, whose process group is
    NCCL (NCCL_DEBUG=INFO makes NCCL say so). fp32, so the comparison is of summation order only; the tolerance is
    1e-4 rather than 1e-5 because CUDA's atomic adds (the per-example sums of the loss) are not deterministic even
    within one process. The largest differences are printed, to be read next to the tolerance."""
    args = ["--dtype", "float32"]
    env = {**_env(), "NCCL_DEBUG": "INFO"}

    def run(cmd, out, store):
        res = subprocess.run([*cmd, "train", str(data), "--model", str(model_dir), "--out", str(out), "--store",
                              str(store), *ARGS, *args], env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return res

    run([sys.executable, "-m", "siftlm"], tmp_path / "one", tmp_path / "st1")
    two = run([_bin("torchrun"), "--nproc_per_node", "2", "-m", "siftlm"], tmp_path / "two", tmp_path / "st2")
    assert "NCCL INFO" in two.stdout + two.stderr                     # the process group is NCCL's, on the GPUs
    assert {s["world_size"] for s in _steps(tmp_path / "two")} == {2}
    loss_diff = max(float(np.abs(np.array(a["losses"]) - np.array(b["losses"])).max())
                    for a, b in zip(_steps(tmp_path / "one"), _steps(tmp_path / "two"), strict=True))
    wa, wb = (load_file(d / "epoch-2" / "adapter_model.safetensors") for d in (tmp_path / "one", tmp_path / "two"))
    assert wa.keys() == wb.keys()
    weight_diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    print(f"NCCL vs one process: step losses max |diff| {loss_diff:.2e}, adapter weights max |diff| {weight_diff:.2e}")
    assert loss_diff < GPU_TOL and weight_diff < GPU_TOL
