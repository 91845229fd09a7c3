"""Every key siftlm stores results under (cell_key, the base model's key, scoring_key, a pool's fingerprint, set_key,
the store keys of every pass, model fingerprints), pinned to the values main's code gave before the model handles,
keyed pool files and runtimes (issue 34; computed with that code, not with this one): committed results in
runs/results/ and running experiments are keyed by them, so a change here would silently recompute (or orphan) every
one of them."""

import json
from dataclasses import replace

import torch

from siftlm.config import ExperimentConfig, GradConfig, SignalConfig, TrainConfig, from_dict
from siftlm.data import read_dataset
from siftlm.models.load import folder_fingerprint, in_memory, model_fingerprint
from siftlm.recipes import experiment
from siftlm.recipes import pool as pools
from siftlm.recipes.grid import cells
from siftlm.signals import store
from siftlm.signals.passes import pass_spec
from siftlm.signals.prepare import prepare, prepare_texts
from siftlm.train.loop import epoch_fingerprint
from tests.conftest import alpaca_rows, byte_tokenizer, tiny_llama

CELLS = {
    "random-b0.25-s0": "47b026a934a946ed", "random-b0.25-s1": "3938caac1f2e20ab",
    "highest-davir-b0.25-s0": "a5f7fb8ef7e57a79", "highest-davir-b0.25-s1": "28be2e2694d8175f",
    "dpp-b0.25-s0": "64fd35d99f5b7a59", "dpp-b0.25-s1": "edc50423054348d0",
    "filter-b0.25-s0": "04f062decfb601e7", "filter-b0.25-s1": "33333811ee63e71d",
    "random-t60-s0": "d8cb727328bbaae2", "random-t60-s1": "7459209fdb842ef0",
    "highest-davir-t60-s0": "7cf20a4f6f025522", "highest-davir-t60-s1": "2b48815a9884b77e",
    "dpp-t60-s0": "67d6dfab462f4f92", "dpp-t60-s1": "a0392b35732fb43b",
    "filter-t60-s0": "43701c306fec0c96", "filter-t60-s1": "9748dc00a77c8f34",
    "full-all-s0": "6f5ed20540486409", "full-all-s1": "904e1d997744d9c7",
}


def _grid():
    return from_dict(ExperimentConfig, {
        "data": "d.jsonl", "model": "m", "methods": ["random", "highest:davir", "full", {"name": "dpp", "method": "dpp"},
                                                      "filter"],
        "budgets": [0.25], "budget_tokens": [60], "seeds": [0, 1], "signals": {"max_length": 256},
        "train": {"epochs": 1, "lr": 0.005}})


def test_cell_keys_and_the_base_key_are_unchanged():
    cfg = _grid()
    assert {c.folder: experiment.cell_key(cfg, c, "pool:0123456789abcdef") for c in cells(cfg)} == CELLS
    assert store.fingerprint([experiment.CELL_VERSION, "base", cfg.model, cfg.signals.identity()]) == "ca096733c822c149"


def test_scoring_keys_and_a_pool_fingerprint_are_unchanged(tmp_path):
    cfg = _grid()
    p = pools.Pool(tmp_path, tmp_path / "pool.jsonl", None, "0123456789abcdef", {})
    assert pools.scoring_key(cfg, p) == "dbcd74f58a002768"
    assert pools.scoring_key(replace(cfg, crossfit=True, grad_norm=False, selector_model="s"), p) == "99a5de681a63b52e"
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(40)))
    pc = from_dict(ExperimentConfig, {"data": str(tmp_path / "data.jsonl"), "pool": {"size": 30, "heldout": 8, "seed": 0},
                                      "inject": {"rate": 0.2, "kinds": ["swap", "truncate", "repeat"]}})
    assert pools.build_pool(pc, tmp_path / "pool").fingerprint == "74695237201857ed"


def test_set_keys_are_unchanged(tmp_path):
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(40)))
    grid = {"data": str(tmp_path / "data.jsonl"), "pool": {"size": 30, "heldout": 8, "seed": 0}, "eval": "heldout"}
    cfg = from_dict(ExperimentConfig, {**grid, "behaviour": {"max_new_tokens": 32}})
    pool = pools.build_pool(cfg, tmp_path / "pool")
    assert pool.fingerprint == "fb2c2b7144658fa8"
    assert {k: v[0] for k, v in experiment.eval_sets(cfg, pool).items()} == {"heldout": "22c2bee38f971472"}
    plain = from_dict(ExperimentConfig, {**grid, "eval_max_length": 256})
    assert {k: v[0] for k, v in experiment.eval_sets(plain, pool).items()} == {"heldout": "17670040b86048d9"}


def test_store_pass_keys_of_a_tiny_model_are_unchanged(tmp_path):
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(40)))
    tok = byte_tokenizer()
    lm = in_memory(tiny_llama(len(tok)), "m0", tokenizer=tok)
    ds = read_dataset(tmp_path / "data.jsonl")
    sig = SignalConfig(store=str(tmp_path / "st"), progress=False)
    prep = prepare(ds, tok, sig)
    assert prep.fingerprint == "6da93430db6aa48e"
    keys = {name: pass_spec(prep, name, lm, opts).key
            for name, opts in (("loss", {}), ("uncond", {}), ("lm-embed", {}), ("grads", {"grad": GradConfig(dim=64)}))}
    assert keys == {"loss": "bbdff16aee5ad18f", "uncond": "948c69331ff31677", "lm-embed": "7031577b996081c4",
                    "grads": "34d7c4757d2afd08"}
    assert pass_spec(prepare_texts(ds, sig), "embed", in_memory(None, "e0"), {"part": "full"}).key == "78ce4d591ce9cea1"
    bf16 = in_memory(tiny_llama(len(tok)).to(torch.bfloat16), "m0", tokenizer=tok, compute=torch.bfloat16)
    assert pass_spec(prep, "loss", bf16).key == "013a31c10994d8da"


def test_model_fingerprints_are_unchanged(tmp_path):
    f = tmp_path / "folder"
    f.mkdir()
    (f / "config.json").write_text('{"a": 1}')
    (f / "model.safetensors").write_bytes(b"weights")
    (f / "siftlm-x.json").write_text("x")                   # siftlm's own files are not the weights
    a = tmp_path / "adapter"
    a.mkdir()
    (a / "adapter_config.json").write_text('{"r": 8}')
    (a / "adapter_model.safetensors").write_bytes(b"lora")
    assert folder_fingerprint(f) == model_fingerprint(f) == "5fd3d77a609b2709"
    assert epoch_fingerprint("5fd3d77a609b2709", a, TrainConfig()) == "5fd3d77a609b2709+fcd2422984536064"
    assert model_fingerprint(base="5fd3d77a609b2709", adapter=a) == "5fd3d77a609b2709+fcd2422984536064"
    assert epoch_fingerprint("ignored", f, TrainConfig(full=True)) == "5fd3d77a609b2709"
    assert model_fingerprint("HuggingFaceTB/SmolLM2-135M-Instruct") == "5ed213fbf53be57a"      # a hub id: its name
