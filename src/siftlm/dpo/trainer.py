"""DPO training through TRL's ``DPOTrainer`` (LoRA by default), with the DavIR-DPO loss of eq. 4.

Reference log-probs come from siftlm's pair pass (batched, cached in the signal store, reused across runs)
and the pairs are tokenised once by siftlm, so the reference numbers and TRL's policy numbers are over the
very same token ids; TRL's own reference pass and tokenisation are skipped for such a dataset.

DavIR-DPO without a fork of the trainer: TRL's sigmoid loss is -log sigmoid(beta * [(p_w - r_w) - (p_l - r_l)]),
with p the policy's summed per-token log-probs. For ``loss="davir"`` a forward hook scales each sequence's
per-token log-probs by 1 / |r| of that sequence, and the batch's reference log-probs are replaced by
r / |r| (= -1), so TRL computes (p - r) / |r| for every response: exactly eq. 4, logged by TRL as its rewards.
TRL's ``logps/chosen`` and ``logps/rejected`` metrics are then p / |r| (about -1 at the start), not log-probs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from trl import DPOConfig, DPOTrainer

from siftlm.dpo.losses import LOSSES, davir_default_beta

MIN_REF_NATS = 1e-3   # |log pi_ref(y|x)| floor: a near-certain response must not divide by ~0


class SiftDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer that accepts siftlm-tokenised pairs with precomputed reference log-probs, and
    trains the DavIR-DPO objective when ``davir=True`` (with ``loss_type="sigmoid"``)."""

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

        def hook(module, args, kwargs, output):
            if kwargs.get("fused_lm_head") and getattr(output, "log_probs", None) is not None:
                output.log_probs = output.log_probs * scale.to(output.log_probs)[:, None]
            return output

        handle = model.register_forward_hook(hook, with_kwargs=True)
        try:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            handle.remove()


@dataclass
class DPOTrainConfig:
    loss: str = "davir"              # davir | sigmoid | ipo | hinge | ... (siftlm.dpo.losses.LOSSES)
    beta: float | None = None        # None: 0.1 (TRL's default); for davir 0.1 x median |log pi_ref(y|x)| (see default_beta)
    lr: float = 5e-5
    epochs: float = 1.0
    max_steps: int = -1              # > 0 overrides epochs
    batch_size: int = 4              # pairs per device step
    grad_accum: int = 1
    full: bool = False               # full fine-tuning instead of LoRA
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: str = "all-linear"
    save_steps: int = 50             # checkpoint interval (the unit of resume)
    activation_checkpointing: bool = False   # TRL turns it on by default; off is ~1.3x faster when memory allows
    logging_steps: int = 1
    seed: int = 0


def hf_dataset(prep, ref_frame):
    """The pairs as TRL's tokenised columns plus the cached reference log-probs."""
    from datasets import Dataset as HFDataset

    return HFDataset.from_dict({
        "prompt_ids": [p.prompt_ids for p in prep.pairs],
        "chosen_ids": [p.chosen_ids for p in prep.pairs],
        "rejected_ids": [p.rejected_ids for p in prep.pairs],
        "ref_chosen_logps": ref_frame["chosen_logp"].astype("float32").tolist(),
        "ref_rejected_logps": ref_frame["rejected_logp"].astype("float32").tolist(),
    })


def default_beta(loss: str, ref_frame) -> float:
    """TRL's 0.1; for DavIR-DPO, 0.1 x the median |log pi_ref(y|x)| of the training responses.

    Eq. 4 divides each log-ratio by |log pi_ref(y|x)| (hundreds of nats for a typical response), so with
    beta = 0.1 its logits and gradients would be ~100x smaller than vanilla DPO's and training barely moves.
    Scaling by the median makes the DavIR logit equal the vanilla one for a median-length response; the
    normalisation then only redistributes weight between short and long responses, which is its purpose.
    """
    if loss != "davir":
        return 0.1
    return davir_default_beta(ref_frame["chosen_logp"].to_numpy(), ref_frame["rejected_logp"].to_numpy())


def last_checkpoint(out: Path, identity: dict) -> str | None:
    """The newest checkpoint of a run with the same identity (data, model, settings); an error for another run."""
    path = out / "siftlm-dpo-identity.json"
    if path.exists() and json.loads(path.read_text()) != json.loads(json.dumps(identity, default=str)):
        raise ValueError(f"{out} holds a DPO run with other data, model or settings ({path}); use another --out "
                         "or remove the folder")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2, default=str))
    ckpts = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return str(ckpts[-1]) if ckpts else None


def train_dpo(lm, prep, ref_frame, out: str | Path, cfg: DPOTrainConfig, *, callbacks=None) -> dict:
    """Train with TRL; resume from the newest checkpoint in ``out``; save the adapter to ``out/final``.

    Returns {"log_history": TRL's log, "final": folder, "train_runtime": s, ...}; also ``out/siftlm-dpo.json``.
    """
    from peft import LoraConfig

    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown DPO loss {cfg.loss!r}; known: {', '.join(LOSSES)}")
    out = Path(out)
    device = next(lm.model.parameters()).device
    beta = cfg.beta if cfg.beta is not None else default_beta(cfg.loss, ref_frame)
    args = DPOConfig(
        output_dir=str(out), loss_type=LOSSES[cfg.loss][1], beta=beta, learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, logging_steps=cfg.logging_steps, save_strategy="steps",
        save_steps=cfg.save_steps, report_to=[], precompute_ref_log_probs=True, max_length=None, seed=cfg.seed,
        use_cpu=device.type == "cpu", bf16=False, fp16=False, dataloader_num_workers=0,
        activation_checkpointing=cfg.activation_checkpointing)
    peft_config = None if cfg.full else LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, task_type="CAUSAL_LM",
                                                   target_modules=cfg.target_modules)
    trainer = SiftDPOTrainer(model=lm.model, args=args, train_dataset=hf_dataset(prep, ref_frame),
                             processing_class=lm.tokenizer, peft_config=peft_config, davir=cfg.loss == "davir",
                             callbacks=callbacks)
    identity = {"data": prep.fingerprint, "model": lm.fingerprint, "beta": beta,
                **{k: v for k, v in asdict(cfg).items() if k not in ("max_steps", "epochs", "save_steps", "logging_steps")}}
    result = trainer.train(resume_from_checkpoint=last_checkpoint(out, identity))
    final = out / "final"
    trainer.save_model(str(final))
    summary = {"config": asdict(cfg), "beta": beta, "model": lm.name, "model_fingerprint": lm.fingerprint, "final": str(final),
               "n_pairs": len(prep.pairs), "metrics": result.metrics, "log_history": trainer.state.log_history}
    (out / "siftlm-dpo.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
