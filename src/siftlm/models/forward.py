"""The pieces of a causal LM's forward that every pass uses: decoder, output layer, logit transform, and the
hidden states at the positions that predict response tokens.

Passes never call ``model(...).logits``: the decoder runs on the padded batch, then the output layer is
applied only where a response token is predicted, so B x T x V logits never exist.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from siftlm.models.batching import Batch
from siftlm.models.template import IGNORE


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
    """The decoder's last hidden states for a padded batch, (B, T, H); no KV cache."""
    device = device_of(model)
    out = parts(model).decoder(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                               use_cache=False)
    return out.last_hidden_state


def response_hidden(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states that predict response tokens.

    Returns h (N_resp, H), targets (N_resp,), rows (N_resp,) = batch row of each position.
    Position t predicts token t+1, so labels are shifted left by one.
    """
    hidden = last_hidden(model, batch)[:, :-1]              # (B, T-1, H)
    shifted = batch.labels[:, 1:].to(hidden.device)         # (B, T-1)
    sel = shifted != IGNORE
    rows = torch.arange(sel.shape[0], device=hidden.device)[:, None].expand_as(sel)[sel]
    return hidden[sel], shifted[sel], rows


def logits(head, h: torch.Tensor, transform: tuple) -> torch.Tensor:
    """The model's logits (float32) for hidden states ``h`` (N, H), with its logit transform applied."""
    softcap, divide_by, multiply_by = transform
    z = head(h).float()
    if divide_by:
        z = z / divide_by
    if multiply_by:
        z = z * multiply_by
    if softcap:
        z = torch.tanh(z / softcap) * softcap
    return z


def response_nll(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable per-token NLL at response positions (for training): (nll (N_resp,), rows (N_resp,))."""
    p = parts(model)
    h, targets, rows = response_hidden(model, batch)
    return F.cross_entropy(logits(p.head, h, p.transform), targets, reduction="none"), rows
