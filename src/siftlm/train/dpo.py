"""DPO training through TRL's ``DPOTrainer`` (LoRA by default), with the DavIR-DPO loss of eq. 4.

Reference log-probs come from siftlm's pair pass (batched, cached in the signal store, reused across runs)
and the pairs are tokenised once by siftlm, so the reference numbers and TRL's policy numbers are over the
very same token ids; TRL's own reference pass and tokenisation are skipped for such a dataset.

DavIR-DPO without a fork of the trainer: TRL's sigmoid loss is -log sigmoid(beta * [(p_w - r_w) - (p_l - r_l)]),
with p the policy's summed per-token log-probs. For ``loss="davir"`` a forward hook scales each sequence's
per-token log-probs by 1 / |r| of that sequence, and the batch's reference log-probs are replaced by
r / |r| (= -1), so TRL computes (p - r) / |r| for every response: exactly eq. 4, logged by TRL as its rewards.
TRL's ``logps/chosen`` and ``logps/rejected`` metrics would then be p / |r| (about -1); the real log-probs, taken
before the scaling, are logged under those names instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from datasets import Dataset as HFDataset
from peft import LoraConfig
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer

from siftlm.config import DPOTrainConfig
from siftlm.errors import Unavailable, UsageError
from siftlm.keyed import Keyed, open_keyed
from siftlm.models.load import normalize_saved
from siftlm.scores.pair_margin import MIN_REF_NATS
from siftlm.train.dpo_losses import LOSSES, default_beta


class SiftDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer that accepts siftlm-tokenised pairs with precomputed reference log-probs, and
    trains the DavIR-DPO objective when ``davir=True`` (with ``loss_type="sigmoid"``).

    TRL 1.16 has no public switch for either (its ``_prepare_dataset`` always tokenises and its
    ``_precompute_ref_logps`` always recomputes), so the two private methods are overridden; pyproject pins
    the TRL range where they exist with these signatures, and a test checks that TRL still calls them.
    DavIR scales ``log_probs`` of TRL's fused output layer (``fused_lm_head``, TRL >= 1.16); ``compute_loss``
    raises if that forward never happened, so an older or changed TRL cannot silently train another loss.
    """

    def __init__(self, *args, davir: bool = False, **kwargs):
        self.davir = davir
        a = kwargs.get("args")
        data = kwargs.get("train_dataset")
        if data is not None and "ref_chosen_logps" in getattr(data, "column_names", ()):
            # the supplied reference log-probs cover whole, unweighted responses: TRL must score the same tokens
            if a is None or a.max_length is not None or a.ld_alpha is not None:
                raise ValueError("precomputed reference log-probs need args.max_length=None (siftlm already applied "
                                 "its max_length) and ld_alpha=None")
        if davir:
            loss_types = a.loss_type if a is not None and isinstance(a.loss_type, list) else [getattr(a, "loss_type", None)]
            if (a is None or not a.precompute_ref_log_probs or loss_types != ["sigmoid"] or a.use_weighting
                    or a.f_divergence_type not in ("reverse_kl", None) or a.ld_alpha is not None):
                raise ValueError("the DavIR loss needs precompute_ref_log_probs=True, loss_type='sigmoid', "
                                 "f_divergence_type='reverse_kl', use_weighting=False and ld_alpha=None")
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" in dataset.column_names:   # tokenised by siftlm: the ids its reference pass scored
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if {"ref_chosen_logps", "ref_rejected_logps"} <= set(dataset.column_names):   # from siftlm's pair pass
            return dataset
        return super()._precompute_ref_logps(dataset, name, batch_size)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.davir:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        ref = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])   # batch is [chosen; rejected]
        size = ref.abs().clamp_min(MIN_REF_NATS)
        scale = 1.0 / size
        n = inputs["ref_chosen_logps"].shape[0]
        inputs = {**inputs, "ref_chosen_logps": (ref / size)[:n], "ref_rejected_logps": (ref / size)[n:]}

        fired = []

        def hook(module, args, kwargs, output):
            if kwargs.get("fused_lm_head") and getattr(output, "log_probs", None) is not None:
                fired.append(output.log_probs.detach().sum(-1))      # the real log-probs, before the scaling
                output.log_probs = output.log_probs * scale.to(output.log_probs)[:, None]
            return output

        handle = model.register_forward_hook(hook, with_kwargs=True)
        try:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            handle.remove()
        if not fired:
            raise Unavailable("the DavIR-DPO loss needs TRL's fused log-prob forward (TRL >= 1.16); it did not run")
        self._log_real_logps(fired[0], n)
        return result

    def _log_real_logps(self, logps: torch.Tensor, n: int) -> None:
        """TRL logged p / |r| (about -1) as logps/chosen and logps/rejected; put the real sequence log-probs there."""
        metrics = self._metrics["train" if self.model.training else "eval"]
        for key, part in (("logps/chosen", logps[:n]), ("logps/rejected", logps[n:])):
            if metrics.get(key):
                metrics[key][-1] = self.accelerator.gather(part).mean().item()


def hf_dataset(prep, ref_frame):
    """The pairs as TRL's tokenised columns plus the cached reference log-probs."""
    return HFDataset.from_dict({
        "prompt_ids": [p.prompt_ids for p in prep.encoded],
        "chosen_ids": [p.chosen_ids for p in prep.encoded],
        "rejected_ids": [p.rejected_ids for p in prep.encoded],
        "ref_chosen_logps": ref_frame["chosen_logp"].astype("float32").tolist(),
        "ref_rejected_logps": ref_frame["rejected_logp"].astype("float32").tolist(),
    })


def last_checkpoint(keyed: Keyed) -> str | None:
    """The newest checkpoint marked done (``MarkSaved``): a checkpoint TRL was killed while writing is passed over."""
    ckpts = sorted((p for p in keyed.folder.glob("checkpoint-*") if p.name.split("-")[1].isdigit() and keyed.done(p.name)),
                   key=lambda p: int(p.name.split("-")[1]))
    return str(ckpts[-1]) if ckpts else None


class MarkSaved(TrainerCallback):
    """Marks each checkpoint done in the keyed run folder once the trainer has written all of it."""

    def __init__(self, keyed: Keyed):
        self.keyed = keyed

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.keyed.mark(f"checkpoint-{state.global_step}")


def train_dpo(lm, prep, ref_frame, out: str | Path, cfg: DPOTrainConfig, *, callbacks=None) -> dict:
    """Train with TRL; resume from the newest checkpoint in ``out``; save the adapter to ``out/final``.

    Returns {"log_history": TRL's log, "final": folder, "train_runtime": s, ...}; also ``out/siftlm-dpo.json``.
    """
    if cfg.loss not in LOSSES:
        raise UsageError(f"unknown DPO loss {cfg.loss!r}; known: {', '.join(LOSSES)}")
    out = Path(out)
    device = next(lm.model.parameters()).device
    beta = cfg.beta if cfg.beta is not None else default_beta(cfg.loss, ref_frame["chosen_logp"], ref_frame["rejected_logp"])
    args = DPOConfig(
        output_dir=str(out), loss_type=LOSSES[cfg.loss][1], beta=beta, learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, logging_steps=cfg.logging_steps, save_strategy="steps",
        save_steps=cfg.save_steps, report_to=[], precompute_ref_log_probs=True, max_length=None, seed=cfg.seed,
        use_cpu=device.type == "cpu", bf16=lm.compute == torch.bfloat16, fp16=False,
        dataloader_num_workers=0,
        activation_checkpointing=cfg.activation_checkpointing)
    peft_config = None if cfg.full else LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, task_type="CAUSAL_LM",
                                                   target_modules=cfg.target_modules)
    identity = {"data": prep.fingerprint, "model": lm.fingerprint, "beta": beta,
                **{k: v for k, v in asdict(cfg).items() if k not in ("max_steps", "epochs", "save_steps", "logging_steps")}}
    keyed = open_keyed(out, identity, what="a DPO run", labels={"data": "other pairs", "model": "another model"})
    resume = last_checkpoint(keyed)                  # a folder of another run is refused above, before any work
    trainer = SiftDPOTrainer(model=lm.model, args=args, train_dataset=hf_dataset(prep, ref_frame),
                             processing_class=lm.tokenizer, peft_config=peft_config, davir=cfg.loss == "davir",
                             callbacks=[*(callbacks or []), MarkSaved(keyed)])
    result = trainer.train(resume_from_checkpoint=resume)
    final = out / "final"
    trainer.save_model(str(final))                   # TRL saves on the main process only (under a launcher)
    summary = {"config": asdict(cfg), "beta": beta, "model": lm.name, "model_fingerprint": lm.fingerprint, "final": str(final),
               "n_pairs": len(prep.encoded), "metrics": result.metrics, "log_history": trainer.state.log_history,
               "world_size": trainer.args.world_size}
    if trainer.is_world_process_zero():
        normalize_saved(final)
        keyed.write("siftlm-dpo.json", json.dumps(summary, indent=2, default=str))
    trainer.accelerator.wait_for_everyone()
    return summary
