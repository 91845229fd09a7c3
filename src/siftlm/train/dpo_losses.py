"""Per-pair DPO objectives as plain torch functions of sequence log-probabilities (DavIR section 3.2).

Arguments: policy and reference log pi(y|x) of the chosen (w) and rejected (l) responses, summed over
response tokens, and their token counts. Training runs through TRL's ``DPOTrainer`` (``siftlm.train.dpo``);
these functions give the same objectives per pair for the length analysis (DavIR Table 3) and the tests.
The TRL-native ones follow TRL 1.16's definitions (ipo and sigmoid_norm average over completion tokens).

DavIR-DPO (eq. 4):  -log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) / |log pi_ref(y_w|x)|
                                          - (log pi(y_l|x) - log pi_ref(y_l|x)) / |log pi_ref(y_l|x)| ] )
Each log-ratio is divided by the magnitude of its own reference log-likelihood, the DPO analogue of the
DavIR score (L_base - L_ref) / L_base. Consequence: scaling one response's policy AND reference log-probs
by the same c > 0 (e.g. a response repeated c times with the same per-token log-probs) leaves the loss
unchanged, while vanilla DPO's margin grows c-fold. At policy == reference it is ln 2 like vanilla DPO.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from siftlm.scores.pair_margin import davir_log_ratio


def davir(pc, pr, rc, rr, nc, nr, beta):
    return -F.logsigmoid(beta * (davir_log_ratio(pc, rc) - davir_log_ratio(pr, rr)))


def sigmoid(pc, pr, rc, rr, nc, nr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))


def ipo(pc, pr, rc, rr, nc, nr, beta):
    delta = (pc - rc) / nc.clamp(min=1) - (pr - rr) / nr.clamp(min=1)
    return (delta - 1 / (2 * beta)) ** 2


def hinge(pc, pr, rc, rr, nc, nr, beta):
    return torch.relu(1 - beta * ((pc - rc) - (pr - rr)))


def sigmoid_norm(pc, pr, rc, rr, nc, nr, beta):
    return -F.logsigmoid(beta * ((pc - rc) / nc.clamp(min=1) - (pr - rr) / nr.clamp(min=1)))


def sppo_hard(pc, pr, rc, rr, nc, nr, beta):
    return (pc - rc - 0.5 / beta) ** 2 + (pr - rr + 0.5 / beta) ** 2


def nca_pair(pc, pr, rc, rr, nc, nr, beta):
    cw, cl = beta * (pc - rc), beta * (pr - rr)
    return -F.logsigmoid(cw) - 0.5 * F.logsigmoid(-cw) - 0.5 * F.logsigmoid(-cl)


def bco_pair(pc, pr, rc, rr, nc, nr, beta):
    return -F.logsigmoid(beta * (pc - rc)) - F.logsigmoid(-beta * (pr - rr))


def apo_zero(pc, pr, rc, rr, nc, nr, beta):
    return 1 - torch.sigmoid(beta * (pc - rc)) + torch.sigmoid(beta * (pr - rr))


def apo_down(pc, pr, rc, rr, nc, nr, beta):
    return torch.sigmoid(beta * (pc - rc)) + 1 - torch.sigmoid(beta * ((pc - rc) - (pr - rr)))


# name -> (per-pair loss, trained through TRL as loss_type=...)
LOSSES = {
    "sigmoid": (sigmoid, "sigmoid"),
    "ipo": (ipo, "ipo"),
    "davir": (davir, "sigmoid"),          # TRL's sigmoid on eq. 4's normalised log-ratios (see trainer.py)
    "hinge": (hinge, "hinge"),
    "sigmoid_norm": (sigmoid_norm, "sigmoid_norm"),
    "sppo_hard": (sppo_hard, "sppo_hard"),
    "nca_pair": (nca_pair, "nca_pair"),
    "bco_pair": (bco_pair, "bco_pair"),
    "apo_zero": (apo_zero, "apo_zero"),
    "apo_down": (apo_down, "apo_down"),
}


TRL_DEFAULT_BETA = 0.1


def default_beta(loss: str, ref_chosen, ref_rejected) -> float:
    """TRL's 0.1; for DavIR-DPO (ours, not the paper's: it gives no beta), 0.1 x the median |log pi_ref(y|x)|
    over all chosen and rejected responses.

    Eq. 4 divides each log-ratio by |log pi_ref(y|x)| (hundreds of nats for a typical response), so with
    beta = 0.1 its logits and gradients would be ~100x smaller than vanilla DPO's and training barely moves.
    Scaling by the median makes the DavIR logit equal the vanilla one for a median-length response; the
    normalisation then only redistributes weight between short and long responses, which is its purpose.
    """
    if loss != "davir":
        return TRL_DEFAULT_BETA
    refs = np.abs(np.concatenate([np.asarray(ref_chosen, dtype=np.float64), np.asarray(ref_rejected, dtype=np.float64)]))
    return float(TRL_DEFAULT_BETA * np.median(refs))


def per_pair(name: str, table, beta: float = 0.1) -> torch.Tensor:
    """Loss ``name`` for every row of a pair table (``siftlm.signals.table.pair_table`` with a policy), float64."""
    if name not in LOSSES:
        raise KeyError(f"unknown DPO loss {name!r}; known: {', '.join(LOSSES)}")
    col = {k: torch.tensor(table[k].to_numpy(dtype="float64")) for k in
           ("policy_chosen_logp", "policy_rejected_logp", "ref_chosen_logp", "ref_rejected_logp",
            "chosen_tokens", "rejected_tokens")}
    return LOSSES[name][0](col["policy_chosen_logp"], col["policy_rejected_logp"], col["ref_chosen_logp"],
                           col["ref_rejected_logp"], col["chosen_tokens"], col["rejected_tokens"], beta)
