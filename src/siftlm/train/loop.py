"""The training loop of every siftlm fine-tune (reference models with their trajectory, ``finetune``, experiment
cells): LoRA by default, full fine-tuning as an option, data-parallel when a launcher starts several processes
(``siftlm.train.dist``).

The loop is ours rather than a Trainer's so it uses the same token-budget batches, chat template and response-only
loss as the signal engine, and resumes exactly from the last saved epoch. Its folder is a keyed folder
(``siftlm.keyed``, identity given by the caller). Each epoch folder ``epoch-N`` holds the weights (an adapter, or a
full model folder that loads on its own) and the optimizer and scheduler state (loaded with ``weights_only=True``);
it is written under a temporary name and renamed by rank 0, so its existence means the weights are saved. The
unit ``epoch-N`` is marked done when that epoch's evaluation (a callback) is stored, so a run killed during an
evaluation redoes only the evaluation, and a run killed mid-epoch continues after the last saved epoch, at any world
size.

The loop takes a model handle (``siftlm.models.load.LoadedModel``) and returns a new one, the trained model's (with
the fingerprints of P_0..P_n); it never changes the fingerprint of the handle it was given. It does train that
handle's module in place (LoRA layers go into it), and says so on the handle it was given (``trained_into``): a pass
asked to run on that handle refuses (``siftlm.signals.passes``), so the weights a pass uses and the key it is stored
under cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from siftlm.config import TrainConfig, UsageError, from_dict
from siftlm.errors import MissingInput
from siftlm.files import write_folder
from siftlm.keyed import Keyed, done_marker
from siftlm.models import precision
from siftlm.models.batching import collate, plan_batches
from siftlm.models.forward import response_nll
from siftlm.models.load import LoadedModel, model_fingerprint, save_folder
from siftlm.models.template import IGNORE, Encoded
from siftlm.train.dist import Ranks, ranks, split_batch

OPTIMIZER_FILE = "siftlm-optimizer.pt"
CONFIG_FILE = "siftlm-train.json"
STEPS_FILE = "siftlm-steps.json"    # in each epoch folder: the global loss of every step, in order

# evaluate(lm, epoch) stores the loss pass of the model handle ``lm`` for epoch ``epoch`` (on every rank)
Evaluate = Callable[[LoadedModel, int], None]


@dataclass
class Trained:
    lm: LoadedModel                 # the last epoch's weights (LoRA: the PeftModel), in memory, with their identity
    fingerprints: list[str]         # P_0 (the base) .. P_n: what ``load_model`` gives each saved epoch
    trained: bool                   # whether an epoch was trained here (False: every epoch was saved and evaluated)
    step_losses: list[float] = field(default_factory=list)   # the global loss of each step run here, in order


class ResponseNLL(torch.nn.Module):
    """A module whose forward is the training loss's per-token NLL at response positions: the thing DDP or FSDP
    wraps, so their forward hooks run around exactly the computation siftlm does (decoder, then the output layer
    on response positions only)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return response_nll(self.model, batch)[0]


def epoch_dir(out: Path, epoch: int) -> Path:
    return Path(out) / f"epoch-{epoch}"


def _epochs(out: Path, have: Callable[[Path], bool]) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in Path(out).glob("epoch-*")
                  if p.is_dir() and p.name.split("-")[1].isdigit() and have(p))


def finished_epochs(out: Path) -> list[int]:
    """Epochs whose weights are saved and whose evaluation is stored."""
    return _epochs(out, lambda p: done_marker(p.parent, p.name).exists())


def saved_epochs(out: Path) -> list[int]:
    """Epochs whose weights and optimizer state are saved (the folder is renamed into place only when complete)."""
    return _epochs(out, lambda p: (p / OPTIMIZER_FILE).exists())


def resumed_at(out: Path, n_examples: int) -> int:
    """How many of a training's example steps its saved epochs already did (where a resumed progress bar starts)."""
    return max(saved_epochs(out), default=0) * n_examples


def epoch_fingerprint(base_fp: str, folder: Path, cfg: TrainConfig) -> str:
    """Same fingerprint ``load_model`` gives when the folder is loaded later (adapter or full model)."""
    return model_fingerprint(folder) if cfg.full else model_fingerprint(base=base_fp, adapter=folder)


def epoch_source(lm: LoadedModel, folder: Path, cfg: TrainConfig) -> dict | None:
    """How another process loads an epoch's weights (``load_model``'s arguments), or None when ``lm`` was not loaded
    from files (or already had an adapter)."""
    if lm.source is None or lm.source.get("adapter"):
        return None
    where = str(Path(folder).resolve())
    return {**lm.source, "spec": where, "adapter": None} if cfg.full else {**lm.source, "adapter": where}


def trajectory_fingerprints(out: str | Path, base_fp: str) -> list[str]:
    """Model fingerprints of P_0..P_n for a finished training folder; FileNotFoundError when it is not finished."""
    out = Path(out)
    if not (out / CONFIG_FILE).exists():
        raise MissingInput(f"{out}: no training here")
    cfg = from_dict(TrainConfig, json.loads((out / CONFIG_FILE).read_text()))
    finished = finished_epochs(out)
    if finished != list(range(1, cfg.epochs + 1)):
        raise MissingInput(f"{out}: training not finished (epochs done: {finished} of {cfg.epochs})")
    return [base_fp] + [epoch_fingerprint(base_fp, epoch_dir(out, e), cfg) for e in finished]


def _response_tokens(e: Encoded) -> int:
    """Positions whose next token is a response token: what the loss averages over."""
    return sum(1 for t in e.labels[1:] if t != IGNORE)


def _save(net, model, cfg: TrainConfig, folder: Path, opt, sched, tokenizer, rk: Ranks, steps: list[float]) -> None:
    """The epoch folder (rank 0 writes, the others wait): weights (a full model folder must load on its own; under
    FSDP the full state dict is gathered first), optimizer and scheduler state, and the epoch's step losses with the
    world size they were computed at."""
    state = rk.accelerator.get_state_dict(net) if rk.accelerator is not None and cfg.full else None
    if rk.main:
        def write(tmp: Path) -> None:
            if state is not None:
                plain = {k.removeprefix("model."): v for k, v in state.items()}
                model.save_pretrained(tmp, state_dict=plain, safe_serialization=True)
                if tokenizer is not None:
                    tokenizer.save_pretrained(tmp)
                from siftlm.models.load import normalize_saved

                normalize_saved(tmp)
            else:
                save_folder(model, tmp, tokenizer if cfg.full else None)
            optimizer = opt.optimizer if hasattr(opt, "optimizer") else opt
            torch.save({"optimizer": {} if rk.sharded else optimizer.state_dict(), "scheduler": sched.state_dict()},
                       tmp / OPTIMIZER_FILE)
            (tmp / STEPS_FILE).write_text(json.dumps({"world_size": rk.world, "losses": steps}))
        write_folder(folder, write)
    rk.barrier()


def _load_weights(model, folder: Path, cfg: TrainConfig) -> None:
    from safetensors.torch import load_file

    if cfg.full:
        state = {}
        for f in sorted(folder.glob("*.safetensors")):
            state.update(load_file(f))
        model.load_state_dict(state, strict=False)
    else:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))


def _with_lora(model, cfg: TrainConfig):
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.full:
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def train(lm: LoadedModel, encoded: list[Encoded], keyed: Keyed, cfg: TrainConfig, *, pad_id: int,
          evaluate: Evaluate | None = None, on_step: Callable[[int], None] | None = None, tokenizer=None) -> Trained:
    """Train the model of handle ``lm`` on ``encoded`` for ``cfg.epochs`` epochs in the keyed folder ``keyed``,
    evaluating P_0..P_n through ``evaluate`` (when given); resumes after the last saved epoch. On several ranks every
    global batch is split by tokens, rank 0 writes, and every rank evaluates (the store shares the shards out).
    Returns the trained model's handle; ``lm`` is marked ``trained_into`` (its module now holds other weights)."""
    with precision.computing(lm.compute):
        return _train(lm, encoded, keyed, cfg, pad_id=pad_id, evaluate=evaluate or (lambda *a: None),
                      on_step=on_step, tokenizer=tokenizer)


def _train(lm: LoadedModel, encoded, keyed: Keyed, cfg: TrainConfig, *, pad_id, evaluate, on_step, tokenizer) -> Trained:
    out, rk, base_fp = keyed.folder, ranks(), lm.fingerprint
    if rk.sharded and not cfg.full:
        raise UsageError("FSDP / DeepSpeed shard the weights of a full fine-tune (--full); LoRA trains under DDP: "
                         "launch without the sharding config")
    if rk.world > 1 and rk.world > len(encoded):
        raise UsageError(f"{rk.world} processes for {len(encoded)} examples: launch at most {len(encoded)}")
    if rk.main:
        keyed.write(CONFIG_FILE, json.dumps(asdict(cfg), indent=2))
    torch.manual_seed(cfg.seed)
    saved = saved_epochs(out)
    evaluate(lm, 0)  # before LoRA is injected (in place): P_0 is always the base (a cache hit on resume)
    model = _with_lora(lm.model, cfg)

    handed = [lm]                                      # every handle of ``model`` given out: all but the last are stale

    def stale(weights: str) -> None:                   # ``model`` holds other weights than those handles name
        for h in handed:
            h.trained_into = weights

    def now(epoch: int, fp: str) -> LoadedModel:      # the handle of the weights ``model`` holds after ``epoch``
        stale(fp)
        handed.append(lm.trained(model, fp, source=epoch_source(lm, epoch_dir(out, epoch), cfg), adapter=not cfg.full))
        return handed[-1]

    lengths = [len(e.input_ids) for e in encoded]
    targets = [_response_tokens(e) for e in encoded]
    batches = plan_batches(lengths, cfg.token_budget)       # the global batches: the same at any world size
    if saved:
        _load_weights(model, epoch_dir(out, saved[-1]), cfg)
    net = ResponseNLL(model)
    if rk.accelerator is not None:
        net = rk.accelerator.prepare(net)                    # DDP, or FSDP / DeepSpeed as the Accelerate config says
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * len(batches)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / max(1, total_steps)))
    fps = [base_fp]
    start, trained, losses, current = 1, False, [], lm
    if saved:
        last = saved[-1]
        state = torch.load(epoch_dir(out, last) / OPTIMIZER_FILE, weights_only=True, map_location="cpu")
        if not rk.sharded:                           # a sharded optimizer restarts its moments at the last epoch
            opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        fps += [epoch_fingerprint(base_fp, epoch_dir(out, e), cfg) for e in range(1, last + 1)]
        start = last + 1
        current = now(last, fps[-1])
        if last not in finished_epochs(out):           # killed during this epoch's evaluation: redo only that
            model.eval()
            evaluate(current, last)
            _mark(keyed, last, rk)
    if rk.accelerator is not None:
        opt = rk.accelerator.prepare(opt)
    for epoch in range(start, cfg.epochs + 1):
        trained = True
        stale(f"epoch {epoch} in training")
        net.train()
        rng = np.random.default_rng(cfg.seed * 1000 + epoch)
        steps = []
        for b in rng.permutation(len(batches)):
            steps.append(_step(net, params, opt, encoded, batches[b], lengths, targets, pad_id, cfg, rk))
            sched.step()
            if on_step:
                on_step(len(batches[b]))
        losses += steps
        net.eval()
        folder = epoch_dir(out, epoch)
        _save(net, model, cfg, folder, opt, sched, tokenizer, rk, steps)
        fps.append(epoch_fingerprint(base_fp, folder, cfg))
        current = now(epoch, fps[-1])
        evaluate(current, epoch)
        _mark(keyed, epoch, rk)
    return Trained(current, fps, trained, losses)


def _mark(keyed: Keyed, epoch: int, rk: Ranks) -> None:
    rk.barrier()                                   # every rank's share of the evaluation is stored
    if rk.main:
        keyed.mark(f"epoch-{epoch}")
    rk.barrier()


def _step(net, params, opt, encoded, batch: list[int], lengths: list[int], targets: list[int], pad_id: int,
          cfg: TrainConfig, rk: Ranks) -> float:
    """One optimizer step on a global batch; returns its loss (the token mean over the whole global batch). The batch
    is split across ranks by sequence length (what a forward costs); the loss is normalised by response tokens."""
    n_global = sum(targets[i] for i in batch)
    mine = split_batch(batch, lengths, rk.world)[rk.rank] if rk.world > 1 else batch
    real = bool(mine)
    part = collate(encoded, mine if real else batch[:1], pad_id)   # an empty share still joins the gradient sync
    nll = net(part)
    loss = nll.sum() * rk.world / n_global if real else nll.sum() * 0.0   # DDP averages over ranks: x world
    if rk.accelerator is not None:
        rk.accelerator.backward(loss)
        rk.accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return rk.total(float(nll.detach().sum()) if real else 0.0) / n_global
