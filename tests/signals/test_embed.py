"""LM embeddings: the batched pass against the per-example mean hidden state over response tokens."""

import numpy as np
import torch

from siftlm.models.template import IGNORE
from siftlm.signals.embed import lm_embed_pass
from tests.signals.test_losses import _encoded


def test_lm_embeddings_batched_equal_per_example_mean_hidden_state(tokenizer, model):
    enc = _encoded(tokenizer, 10)
    got = lm_embed_pass(model, enc, pad_id=0, token_budget=300)["vector"]
    for i, e in enumerate(enc):
        with torch.no_grad():
            h = model.model(torch.tensor([e.input_ids])).last_hidden_state[0]
        resp = torch.tensor(e.labels) != IGNORE
        np.testing.assert_allclose(got[i], h[resp].mean(0).numpy(), atol=1e-5)
