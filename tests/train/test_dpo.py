"""DPO through TRL's trainer: every siftlm per-pair objective equals TRL's loss on the same batch, TRL still calls
the two methods siftlm overrides, and a full fine-tune keeps no reference copy."""

import copy

import pytest
import torch
from trl import DPOConfig, DPOTrainer

from siftlm.config import SignalConfig
from siftlm.data import read_dataset
from siftlm.models.load import in_memory
from siftlm.signals.passes import run_pass
from siftlm.signals.prepare import prepare_pairs
from siftlm.signals.table import pair_table
from siftlm.train.dpo import SiftDPOTrainer, hf_dataset
from siftlm.train.dpo_losses import LOSSES, per_pair


def _policy(model, seed=0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)                                # a policy that differs from the reference
    return peft


def _args(tmp_path, loss_type, **kw):
    return DPOConfig(output_dir=str(tmp_path / "o"), loss_type=loss_type, beta=0.1, report_to=[],
                     precompute_ref_log_probs=True, max_length=None, use_cpu=True, per_device_train_batch_size=8, **kw)


@pytest.fixture
def pairs(tmp_path, tokenizer, model, pair_file):
    prep = prepare_pairs(read_dataset(pair_file), tokenizer, SignalConfig(store=str(tmp_path / "st"), progress=False))
    policy = _policy(model)
    with policy.disable_adapter():
        ref = run_pass(prep, "pairs", in_memory(policy, "ref"))
    table = pair_table(ref, run_pass(prep, "pairs", in_memory(policy, "policy")))
    return prep, policy, ref, table


@pytest.mark.parametrize("loss", list(LOSSES))
def test_trl_trainer_loss_equals_the_per_pair_formula(tmp_path, tokenizer, pairs, loss):
    """TRL computes the loss on its own batches; it must equal our formula on our pair passes (eq. 4 for davir),
    for every loss siftlm exposes."""
    prep, policy, ref, table = pairs
    trainer = SiftDPOTrainer(model=policy, args=_args(tmp_path, LOSSES[loss][1]), train_dataset=hf_dataset(prep, ref),
                             processing_class=tokenizer, davir=loss == "davir")
    rows = list(range(8))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in rows])
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, batch).item()
    expect = per_pair(loss, table.iloc[rows], beta=0.1).mean().item()
    assert got == pytest.approx(expect, rel=2e-4, abs=1e-6)
    if loss == "davir":
        assert abs(expect - per_pair("sigmoid", table.iloc[rows], 0.1).mean().item()) > 1e-3   # not the same loss
        logged = trainer._metrics["eval" if not trainer.model.training else "train"]
        assert logged["logps/chosen"][-1] == pytest.approx(table.iloc[rows]["policy_chosen_logp"].mean(), rel=1e-4)
        assert logged["logps/rejected"][-1] == pytest.approx(table.iloc[rows]["policy_rejected_logp"].mean(), rel=1e-4)


def test_trl_calls_the_overridden_methods_and_never_its_own(tmp_path, tokenizer, pairs, monkeypatch):
    """The overrides of TRL's private _prepare_dataset and _precompute_ref_logps must still be called by TRL's init
    (pinned TRL range), and TRL's own tokenisation and reference pass must not run on siftlm's pairs."""
    prep, policy, ref, _ = pairs
    calls = []
    for name in ("_prepare_dataset", "_precompute_ref_logps"):
        monkeypatch.setattr(DPOTrainer, name, lambda *a, name=name, **k: pytest.fail(f"TRL's own {name} ran"))
        real = getattr(SiftDPOTrainer, name)

        def spy(self, *a, real=real, name=name, **k):
            calls.append(name)
            return real(self, *a, **k)
        monkeypatch.setattr(SiftDPOTrainer, name, spy)
    trainer = SiftDPOTrainer(model=policy, args=_args(tmp_path, "sigmoid"), train_dataset=hf_dataset(prep, ref),
                             processing_class=tokenizer, davir=True)
    assert calls == ["_prepare_dataset", "_precompute_ref_logps"]
    assert trainer.train_dataset["ref_chosen_logps"] == pytest.approx(ref["chosen_logp"].tolist(), rel=1e-6)


def test_davir_refuses_to_train_when_trl_skips_the_fused_forward(tmp_path, tokenizer, pairs, monkeypatch):
    prep, policy, ref, _ = pairs
    trainer = SiftDPOTrainer(model=policy, args=_args(tmp_path, "sigmoid"), train_dataset=hf_dataset(prep, ref),
                             processing_class=tokenizer, davir=True)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    monkeypatch.setattr(DPOTrainer, "compute_loss", lambda *a, **k: torch.tensor(0.0))   # as if TRL changed its forward
    with pytest.raises(RuntimeError, match="fused log-prob forward"):
        trainer.compute_loss(trainer.model, batch)


def test_full_fine_tuning_keeps_no_reference_copy(tmp_path, tokenizer, model, pairs):
    prep, _, ref, _ = pairs
    trainer = SiftDPOTrainer(model=copy.deepcopy(model), args=_args(tmp_path, "ipo"), train_dataset=hf_dataset(prep, ref),
                             processing_class=tokenizer)
    assert trainer.ref_model is None          # the reference is the cached pass, never a second model in memory


def test_davir_options_trl_would_apply_are_refused(tmp_path, tokenizer, pairs):
    prep, policy, ref, _ = pairs
    with pytest.raises(ValueError, match="loss_type='sigmoid'"):
        SiftDPOTrainer(model=policy, args=_args(tmp_path, "ipo"), train_dataset=hf_dataset(prep, ref),
                       processing_class=tokenizer, davir=True)
