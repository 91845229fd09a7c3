"""Pair encoding, the batched pair pass against a per-pair loop, and DavIR-DPO through TRL's trainer."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from siftlm.cli import app
from siftlm.data import read_dataset
from siftlm.dpo.losses import per_pair
from siftlm.models.template import IGNORE, EncodeError, encode_pair
from siftlm.pipeline import SignalConfig
from siftlm.preference import pair_logps, pair_signals, pair_table, prepare_pairs

runner = CliRunner()


def pair_rows(n: int, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    return [{"prompt": f"Q{i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 10))),
             "chosen": " ".join(rng.choice(words) for _ in range(rng.randint(1, 25))),
             "rejected": "no " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 25)))} for i in range(n)]


@pytest.fixture
def pair_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(16)))
    return path


def test_encode_pair_shares_the_prompt_and_labels_only_the_response(tokenizer):
    msgs = [{"role": "user", "content": "hello there"}]
    p = encode_pair(tokenizer, "x", msgs, "yes indeed", "no")
    c, r = p.sequences()
    assert c.input_ids[:len(p.prompt_ids)] == r.input_ids[:len(p.prompt_ids)] == p.prompt_ids
    assert tokenizer.decode(p.chosen_ids).startswith("yes indeed")
    assert c.labels == [IGNORE] * len(p.prompt_ids) + p.chosen_ids and r.n_response == len(p.rejected_ids)
    long = encode_pair(tokenizer, "x", msgs, "yes indeed", "no", max_length=len(p.prompt_ids) + len(p.chosen_ids) - 5)
    assert long.truncated == 5 and long.prompt_ids[0] == tokenizer.bos_token_id
    assert long.prompt_ids[1:] == p.prompt_ids[6:]            # both responses keep one shared, cut prompt
    with pytest.raises(EncodeError, match="does not fit"):
        encode_pair(tokenizer, "x", msgs, "yes indeed", "no", max_length=len(p.chosen_ids))


def test_prepare_pairs_accounts_for_every_record(tmp_path, tokenizer):
    rows = pair_rows(5) + [{"prompt": "q", "chosen": "", "rejected": "b"}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prep = prepare_pairs(read_dataset(path), tokenizer, SignalConfig(limit=3, progress=False))
    c = prep.counts()
    assert c == {"read": 6, "kept": 3, "rejected": 1, "unused_by_limit": 2}


def _reference_logp(model, seq):
    with torch.no_grad():
        logits = model(torch.tensor([seq.input_ids])).logits[0, :-1].double()
    y = torch.tensor(seq.labels[1:])
    keep = y != IGNORE
    return torch.log_softmax(logits[keep], -1).gather(1, y[keep][:, None]).sum().item(), int(keep.sum())


def test_batched_pair_pass_equals_per_pair_loop(tokenizer, model, pair_file):
    prep = prepare_pairs(read_dataset(pair_file), tokenizer, SignalConfig(progress=False))
    got = pair_logps(model, prep.pairs, pad_id=0, token_budget=600)
    for i, p in enumerate(prep.pairs):
        c, r = p.sequences()
        (lc, nc), (lr, nr) = _reference_logp(model, c), _reference_logp(model, r)
        assert got["chosen_logp"][i] == pytest.approx(lc, rel=1e-4) and got["chosen_tokens"][i] == nc
        assert got["rejected_logp"][i] == pytest.approx(lr, rel=1e-4) and got["rejected_tokens"][i] == nr


def _policy(model, seed=0):
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)                                # a policy that differs from the reference
    return peft


@pytest.mark.parametrize("loss", ["davir", "sigmoid", "ipo"])
def test_trl_trainer_loss_equals_the_per_pair_formula(tmp_path, tokenizer, model, pair_file, loss):
    """TRL computes the loss on its own batches; it must equal our formula on our pair passes (eq. 4 for davir)."""
    from trl import DPOConfig

    from siftlm.dpo.losses import LOSSES
    from siftlm.dpo.trainer import SiftDPOTrainer, hf_dataset

    prep = prepare_pairs(read_dataset(pair_file), tokenizer, SignalConfig(store=str(tmp_path / "st"), progress=False))
    policy = _policy(model)
    with policy.disable_adapter():
        ref = pair_signals(policy, "ref", prep)
    pol = pair_signals(policy, "policy", prep)
    table = pair_table(ref, pol)
    args = DPOConfig(output_dir=str(tmp_path / "o"), loss_type=LOSSES[loss][1], beta=0.1, report_to=[],
                     precompute_ref_log_probs=True, max_length=None, use_cpu=True, per_device_train_batch_size=8)
    trainer = SiftDPOTrainer(model=policy, args=args, train_dataset=hf_dataset(prep, ref), processing_class=tokenizer,
                             davir=loss == "davir")
    rows = list(range(8))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in rows])
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, batch).item()
    expect = per_pair(loss, table.iloc[rows], beta=0.1).mean().item()
    assert got == pytest.approx(expect, rel=2e-4)
    if loss == "davir":
        assert abs(expect - per_pair("sigmoid", table.iloc[rows], 0.1).mean().item()) > 1e-3   # not the same loss


def test_dpo_cli_trains_resumes_and_analyzes(tmp_path, model_dir, pair_file):
    from safetensors.torch import load_file

    args = ["dpo", str(pair_file), "--model", str(model_dir), "--loss", "davir", "--max-steps", "6", "--batch-size", "4",
            "--lr", "1e-2", "--save-steps", "3", "--out", str(tmp_path / "dpo"), "--store", str(tmp_path / "st")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "dpo" / "siftlm-dpo.json").read_text())
    losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)          # policy == reference at step 0
    assert losses[-1] < losses[0]
    weights = load_file(tmp_path / "dpo" / "final" / "adapter_model.safetensors")
    assert any(float(v.abs().max()) > 0 for k, v in weights.items() if "lora_B" in k)   # B starts at 0
    # a rerun with more steps resumes from checkpoint-6 instead of starting over
    res = runner.invoke(app, args[:7] + ["8"] + args[8:])
    assert res.exit_code == 0, res.output
    history = json.loads((tmp_path / "dpo" / "siftlm-dpo.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == list(range(1, 9))
    assert [h["loss"] for h in history if "loss" in h][:6] == losses    # the first 6 steps come from the checkpoint

    other = runner.invoke(app, [*args[:5], "sigmoid", *args[6:]])            # another loss into the same folder
    assert other.exit_code == 1 and "with other data, model or settings" in other.output.replace("\n", " ")

    res = runner.invoke(app, ["analyze", "dpo-length", str(pair_file), "--model", str(model_dir), "--adapter",
                              str(tmp_path / "dpo" / "final"), "--out", str(tmp_path / "an"), "--store", str(tmp_path / "st")])
    assert res.exit_code == 0, res.output
    table = pd.DataFrame(json.loads((tmp_path / "an" / "dpo_length.json").read_text()))
    assert {"sigmoid", "ipo", "davir", "hinge"} <= set(table["loss"])
    pairs = pd.read_parquet(tmp_path / "an" / "pairs.parquet")
    from scipy import stats

    davir_beta = table.set_index("loss").loc["davir", "beta"]
    assert davir_beta == pytest.approx(summary["beta"], rel=1e-5)      # the beta the policy was trained with
    r = stats.pearsonr(pairs["length_diff"], per_pair("davir", pairs, davir_beta).numpy())[0]
    assert table.set_index("loss").loc["davir", "pearson"] == pytest.approx(r, rel=1e-9)
    assert (tmp_path / "an" / "dpo_length.png").stat().st_size > 5000
    page = (tmp_path / "an" / "report.html").read_text()
    assert "data:image/png;base64," in page and f"{table.set_index('loss').loc['davir', 'pearson']:+.3f}" in page
    assert np.isfinite(pairs["davir_margin"]).all()
    res = runner.invoke(app, ["select", str(tmp_path / "an" / "pairs.parquet"), "--data", str(pair_file), "--by",
                              "davir_margin", "--budget", "4", "--out", str(tmp_path / "sel")])
    assert res.exit_code == 0, res.output
    sel = pd.read_parquet(tmp_path / "sel" / "selection.parquet")
    assert set(sel["id"]) == set(pairs.nlargest(4, "davir_margin")["id"])


def test_dpo_cli_full_fine_tuning_runs_without_a_reference_copy(tmp_path, model_dir, pair_file):
    res = runner.invoke(app, ["dpo", str(pair_file), "--model", str(model_dir), "--loss", "ipo", "--full", "--max-steps",
                              "2", "--batch-size", "4", "--out", str(tmp_path / "dpo"), "--store", str(tmp_path / "st")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "dpo" / "siftlm-dpo.json").read_text())
    assert summary["beta"] == 0.1 and len([h for h in summary["log_history"] if "loss" in h]) == 2
    assert (tmp_path / "dpo" / "final" / "model.safetensors").exists()
