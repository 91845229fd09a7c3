"""The Ray backend on a local 2-CPU cluster: passes equal the local backend's, the two resume each other, the
actor-pool spelling follows the Ray release, GreeDi and k-means assignment run as tasks."""

import json
import os

import numpy as np
import pytest

from siftlm.backends import executor
from siftlm.backends import ray as ray_backend
from siftlm.config import GradConfig, SelectConfig, SignalConfig, UsageError
from siftlm.data import read_dataset
from siftlm.models.load import in_memory, load_model
from siftlm.recipes.runtime import executor_for, runtime_for
from siftlm.select import cluster, dpp
from siftlm.signals import store
from siftlm.signals.passes import pass_spec, run_pass
from siftlm.signals.prepare import prepare

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def cluster_of_two():
    ray_backend.init(num_cpus=2)
    yield
    ray.shutdown()


def _prep(tmp_path, tokenizer, alpaca_file, backend):
    cfg = SignalConfig(store=str(tmp_path / "st"), shard_size=6, progress=False, backend=backend)
    return prepare(read_dataset(alpaca_file), tokenizer, cfg)


@pytest.mark.parametrize(("version", "expected"), [("2.9.3", "concurrency"), ("2.50.1", "concurrency"),
                                                   ("2.51.0", "compute"), ("2.60.0", "compute")])
def test_the_actor_pool_is_spelled_as_the_ray_release_wants(version, expected):
    kw = ray_backend.actor_pool(3, version)
    assert list(kw) == [expected]
    if expected == "compute":
        assert isinstance(kw["compute"], ray.data.ActorPoolStrategy) and kw["compute"].min_size == 3 == kw["compute"].max_size
    else:
        assert kw["concurrency"] == 3
    with pytest.raises(UsageError, match="too old"):
        ray_backend.actor_pool(3, "2.8.0")


def _driver_computes_nothing(run):
    """``run()`` with every in-process pass computation failing: each shard must come from the Ray actors (separate
    processes, which import siftlm afresh) through the store."""
    import siftlm.signals.passes as passes

    real = dict(passes.PASSES)

    def refuse(*a, **k):
        raise AssertionError("the driver computed a shard itself")
    passes.PASSES.update({k: v._replace(bind=refuse) for k, v in real.items()})
    try:
        return run()
    finally:
        passes.PASSES.update(real)


def test_loss_and_grads_on_ray_equal_the_local_backend(tmp_path, tokenizer, model, alpaca_file):
    local = _prep(tmp_path / "a", tokenizer, alpaca_file, "local")
    on_ray = _prep(tmp_path / "b", tokenizer, alpaca_file, "ray")
    for name, options in [("loss", {}), ("grads", {"grad": GradConfig(dim=64)})]:
        a = run_pass(local, name, in_memory(model, "m0"), runtime=runtime_for(local.cfg), options=options)
        b = _driver_computes_nothing(lambda n=name, o=options: run_pass(on_ray, n, in_memory(model, "m0"),
                                                                        runtime=runtime_for(on_ray.cfg), options=o))
        assert a["id"].tolist() == b["id"].tolist()
        for col in a.columns.drop("id"):
            np.testing.assert_allclose(np.stack(b[col]), np.stack(a[col]), atol=1e-6, err_msg=f"{name}.{col}")


def test_a_ray_run_resumes_a_local_one_and_the_reverse(tmp_path, tokenizer, model_dir, alpaca_file):
    lm = load_model(str(model_dir), quiet=True)            # actors load the same folder themselves
    prep = _prep(tmp_path, tokenizer, alpaca_file, "local")
    first = run_pass(prep, "loss", lm)
    folder = store.pass_dir(prep.cfg.store, pass_spec(prep, "loss", lm))
    n = json.loads((folder / "siftlm-identity.json").read_text())["n_shards"]
    assert n == 4
    before = {s: (folder / f"shard-{s:05d}.parquet").stat().st_mtime_ns for s in range(n)}
    for s in (1, 3):                                       # as if the local run had been killed
        (folder / f"shard-{s:05d}.done").unlink()
    prep.cfg.backend = "ray"
    resumed = run_pass(prep, "loss", lm, runtime=runtime_for(prep.cfg))
    after = {s: (folder / f"shard-{s:05d}.parquet").stat().st_mtime_ns for s in range(n)}
    assert [after[s] == before[s] for s in range(n)] == [True, False, True, False]
    np.testing.assert_allclose(resumed["loss"], first["loss"], atol=1e-6)
    (folder / "shard-00002.done").unlink()                 # now a killed Ray run, resumed locally
    prep.cfg.backend = "local"
    again = run_pass(prep, "loss", lm, runtime=runtime_for(prep.cfg))
    final = {s: (folder / f"shard-{s:05d}.parquet").stat().st_mtime_ns for s in range(n)}
    assert [final[s] == after[s] for s in range(n)] == [True, True, False, True]
    np.testing.assert_allclose(again["loss"], first["loss"], atol=1e-6)


def test_a_local_cluster_runs_its_workers_at_the_drivers_priority():
    """Ray starts workers at niceness 15 unless told otherwise: beside any other load they then get a few per cent of
    a core (a 2-worker training went from 44 s to 568 s beside two busy loops)."""
    assert ray_backend.map_tasks(_niceness, [()] * 2) == [_niceness()] * 2


def _niceness():
    return os.getpriority(os.PRIO_PROCESS, 0)


def test_greedi_as_ray_tasks_equals_greedi_in_process_and_reports_its_log_det():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = rng.normal(size=240)
    local = dpp.greedi(x, 20, parts=4, gamma=2.0, quality=q, lam=0.3, seed=1)
    remote = dpp.greedi(x, 20, parts=4, gamma=2.0, quality=q, lam=0.3, seed=1, executor=executor("ray"))
    assert local.order.tolist() == remote.order.tolist() and len(local.order) == 20
    logw = dpp.quality_log_weights(q, 0.3)
    assert local.gains.sum() == pytest.approx(dpp.logdet_of(x, logw, local.order, 2.0), rel=1e-9)
    central = dpp.greedy_map(x, 20, gamma=2.0, quality=q, lam=0.3)
    assert local.gains.sum() <= central.gains.sum() + 5.0     # close to, not always below, centralised greedy


def test_faiss_kmeans_assignment_in_ray_tasks_equals_local(monkeypatch):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.1, size=(300, 4)) for c in (0, 3, 6)])
    monkeypatch.setattr(cluster, "ASSIGN_ROWS", 128)       # several tasks
    a = cluster.kmeans(x, 3, seed=0, backend="faiss", sample=200)
    b = cluster.kmeans(x, 3, seed=0, backend="faiss", sample=200, executor=executor("ray"))
    assert a.tolist() == b.tolist() and len(set(a[:300])) == len(set(a[300:600])) == len(set(a[600:])) == 1


def test_dpp_parts_through_the_selector_name_greedi(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"id": [f"e{i}" for i in range(120)], "davir": rng.normal(size=120)})
    feats = rng.normal(size=(120, 6))
    cfg = SelectConfig(method="dpp", budget=10, dpp_parts=3, backend="ray")
    picked = dpp.pick(table, feats, cfg, executor=executor_for(cfg))
    assert len(picked.positions) == 10 and "GreeDi over 3 parts" in picked.reasons[0]


@pytest.mark.slow
def test_smollm2_loss_pass_on_ray_equals_local(tmp_path):
    from siftlm.assets import demo_data

    lm = load_model("builtin:smollm2", dtype="float32", quiet=True)
    ds = read_dataset(demo_data("alpaca_en_demo"))
    cfgs = [SignalConfig(store=str(tmp_path / b), limit=16, max_length=256, shard_size=4, progress=False, backend=b)
            for b in ("local", "ray")]
    a = run_pass(prepare(ds, lm.tokenizer, cfgs[0]), "loss", lm, runtime=runtime_for(cfgs[0]))
    b = _driver_computes_nothing(lambda: run_pass(prepare(ds, lm.tokenizer, cfgs[1]), "loss", lm,
                                                  runtime=runtime_for(cfgs[1])))
    assert len(a) == 16
    np.testing.assert_allclose(b["loss"], a["loss"], atol=1e-5)


def test_policy_and_reference_pair_passes_on_ray_equal_local(tmp_path, tokenizer, model_dir, pair_file):
    """The reference pass runs with the adapter disabled in the driver: the actors must load the base alone."""
    import torch
    from peft import LoraConfig, get_peft_model

    from siftlm.recipes.dpo import policy_reference_table
    from siftlm.signals.prepare import prepare_pairs

    base = load_model(str(model_dir), quiet=True).model
    peft = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)                           # an adapter that changes the log-probs
    peft.save_pretrained(tmp_path / "adapter")
    lm = load_model(str(model_dir), adapter=str(tmp_path / "adapter"), quiet=True)
    tables = []
    for backend in ("local", "ray"):
        cfg = SignalConfig(store=str(tmp_path / backend), shard_size=8, progress=False, backend=backend)
        tables.append(policy_reference_table(lm, prepare_pairs(read_dataset(pair_file), tokenizer, cfg), runtime_for(cfg)))
    local, on_ray = tables
    assert not np.allclose(local["ref_chosen_logp"], local["policy_chosen_logp"])      # policy and reference differ
    for col in ("ref_chosen_logp", "ref_rejected_logp", "policy_chosen_logp", "policy_rejected_logp"):
        np.testing.assert_allclose(on_ray[col], local[col], atol=1e-5, err_msg=col)


def test_signals_verb_with_backend_ray(tmp_path, model_dir, alpaca_file):
    import pandas as pd
    from typer.testing import CliRunner

    from siftlm.cli import app

    outs = []
    for backend in ("local", "ray"):
        out = tmp_path / f"{backend}.parquet"
        r = CliRunner().invoke(app, ["signals", str(alpaca_file), "--model", str(model_dir), "--pass", "lm-embed",
                                     "--store", str(tmp_path / backend), "--shard-size", "8", "--backend", backend,
                                     "--out", str(out)])
        assert r.exit_code == 0, r.output
        outs.append(pd.read_parquet(out))
    np.testing.assert_allclose(np.stack(outs[1]["vector"]), np.stack(outs[0]["vector"]), atol=1e-6)


def test_a_failing_worker_is_one_line_naming_the_cause():
    with pytest.raises(RuntimeError, match=r"a Ray worker failed after 0 of 2 shards .*rerun to resume.*division"):
        ray_backend.run_shards([0, 1], lambda: (lambda s: 1 // 0))
