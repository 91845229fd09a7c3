"""The batched pair pass against a per-pair loop with full logits."""

import pytest
import torch

from siftlm.config import SignalConfig
from siftlm.data import read_dataset
from siftlm.models.template import IGNORE
from siftlm.signals.pairs import pair_logps
from siftlm.signals.prepare import prepare_pairs


def _reference_logp(model, seq):
    with torch.no_grad():
        logits = model(torch.tensor([seq.input_ids])).logits[0, :-1].double()
    y = torch.tensor(seq.labels[1:])
    keep = y != IGNORE
    return torch.log_softmax(logits[keep], -1).gather(1, y[keep][:, None]).sum().item(), int(keep.sum())


def test_batched_pair_pass_equals_per_pair_loop(tokenizer, model, pair_file):
    prep = prepare_pairs(read_dataset(pair_file), tokenizer, SignalConfig(progress=False))
    got = pair_logps(model, prep.encoded, pad_id=0, token_budget=600)
    for i, p in enumerate(prep.encoded):
        c, r = p.sequences()
        (lc, nc), (lr, nr) = _reference_logp(model, c), _reference_logp(model, r)
        assert got["chosen_logp"][i] == pytest.approx(lc, rel=1e-4) and got["chosen_tokens"][i] == nc
        assert got["rejected_logp"][i] == pytest.approx(lr, rel=1e-4) and got["rejected_tokens"][i] == nr
