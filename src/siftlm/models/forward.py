"""The pieces of a causal LM's forward that every pass uses: decoder, output layer, logit transform, and the
hidden states at the positions that predict response tokens.

Passes never call ``model(...).logits``: the decoder runs on the padded batch, then the output layer is
applied only where a response token is predicted, so B x T x V logits never exist.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from siftlm.models.batching import Batch
from siftlm.models.compiled import decoder_forward
from siftlm.models.precision import autocast
from siftlm.models.template import IGNORE


@contextlib.contextmanager
def evaluating(model):
    """``model`` in eval mode inside the block; its own mode (training or not) is restored on leaving, error or not."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class Parts(NamedTuple):
    decoder: torch.nn.Module        # input ids -> last hidden states (B, T, H)
    head: torch.nn.Module           # the output layer H -> V
    transform: tuple                # (softcap, divide_by, multiply_by) applied to the output layer's result


def _config_value(config, name: str):
    return getattr(config, name, None) or getattr(getattr(config, "text_config", None), name, None)


def parts(model) -> Parts:
    """Decoder, output layer and logit transform of a causal LM, looking through a PEFT wrapper.

    The transform reproduces what the model's own forward does to the output layer's result:
    final-logit softcapping (Gemma 2), ``logits_scaling`` (Granite divides) and ``logit_scale`` (Cohere multiplies).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    return Parts(base.get_decoder(), base.get_output_embeddings(),
                 (_config_value(cfg, "final_logit_softcapping"), _config_value(cfg, "logits_scaling"),
                  _config_value(cfg, "logit_scale")))


def device_of(model) -> torch.device:
    return next(model.parameters()).device


def last_hidden(model, batch: Batch) -> torch.Tensor:
    """The decoder's last hidden states for a padded batch, (B, T, H), in the model's compute precision; no KV cache."""
    device = device_of(model)
    with autocast(model):      # compiled inside siftlm.models.compiled.compiling(True), for work without gradients
        out = decoder_forward(parts(model).decoder, batch.input_ids.to(device), batch.attention_mask.to(device))
    return out.last_hidden_state


def response_hidden(model, batch: Batch, hidden: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states that predict response tokens (from ``hidden``, the batch's last hidden states, when the caller
    already ran the decoder).

    Returns h (N_resp, H), targets (N_resp,), rows (N_resp,) = batch row of each position.
    Position t predicts token t+1, so labels are shifted left by one.
    """
    hidden = (last_hidden(model, batch) if hidden is None else hidden)[:, :-1]   # (B, T-1, H)
    shifted = batch.labels[:, 1:].to(hidden.device)         # (B, T-1)
    sel = shifted != IGNORE
    rows = torch.arange(sel.shape[0], device=hidden.device)[:, None].expand_as(sel)[sel]   # (N_resp,)
    return hidden[sel], shifted[sel], rows                   # (N_resp, H), (N_resp,), (N_resp,)


def logits(head, h: torch.Tensor, transform: tuple, model=None) -> torch.Tensor:
    """The model's logits for hidden states ``h`` (N, H) with its logit transform applied, always float32: the
    product runs in ``model``'s compute precision, everything after it (transform, softmax, loss) in fp32."""
    softcap, divide_by, multiply_by = transform
    with autocast(model) if model is not None else contextlib.nullcontext():
        z = head(h)                                          # (N, V)
    z = z.float()
    if divide_by:
        z = z / divide_by
    if multiply_by:
        z = z * multiply_by
    if softcap:
        z = torch.tanh(z / softcap) * softcap
    return z


TRAIN_LOGIT_ELEMENTS = 1 << 26    # a training chunk's logits: 256 MB in fp32 (1,024 positions of SmolLM2, 256 of Gemma 3)


def response_nll(model, batch: Batch, hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable per-token NLL at response positions (for training): (nll (N_resp,), rows (N_resp,)); ``hidden``:
    the batch's last hidden states, when the caller already ran the decoder.

    The output layer runs over the response positions in chunks, each under activation checkpointing, so at most one
    chunk's logits exist at a time, forward or backward (all of them at once would be N_resp x V floats: gigabytes
    for a 262k vocabulary); the backward recomputes each chunk's logits, one extra output-layer product.
    """
    p = parts(model)
    h, targets, rows = response_hidden(model, batch, hidden)  # (N_resp, H), (N_resp,), (N_resp,)
    chunk = max(16, min(1024, TRAIN_LOGIT_ELEMENTS // p.head.weight.shape[0]))

    def nll(hc: torch.Tensor, tc: torch.Tensor) -> torch.Tensor:    # (C, H), (C,) -> (C,); (C, V) logits inside
        return F.cross_entropy(logits(p.head, hc, p.transform, model), tc, reduction="none")

    if h.shape[0] <= chunk or not torch.is_grad_enabled():
        return torch.cat([nll(h[s:s + chunk], targets[s:s + chunk]) for s in range(0, max(h.shape[0], 1), chunk)]), rows
    return torch.cat([checkpoint(nll, h[s:s + chunk], targets[s:s + chunk], use_reentrant=False)
                      for s in range(0, h.shape[0], chunk)]), rows
