"""DavIR-DPO (eq. 4) and the other per-pair objectives on made-up log-probs."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siftlm.scores.pair_margin import davir_margin, dpo_margin
from siftlm.train.dpo_losses import LOSSES, davir, default_beta, sigmoid

logp = st.floats(-500, -0.5)


def _t(*xs):
    return [torch.tensor([x], dtype=torch.float64) for x in xs]


@settings(max_examples=50, deadline=None)
@given(rc=logp, rr=logp, beta=st.floats(0.01, 5))
def test_davir_is_ln2_when_policy_equals_reference(rc, rr, beta):
    pc, pr, rc_, rr_ = _t(rc, rr, rc, rr)
    n = torch.tensor([10.0])
    assert float(davir(pc, pr, rc_, rr_, n, n, beta)) == pytest.approx(math.log(2), abs=1e-12)
    assert float(sigmoid(pc, pr, rc_, rr_, n, n, beta)) == pytest.approx(math.log(2), abs=1e-12)


def test_davir_hand_computed():
    # chosen: log pi = -10, log pi_ref = -20 -> (-10 + 20) / 20 = 0.5
    # rejected: log pi = -30, log pi_ref = -15 -> (-30 + 15) / 15 = -1
    # beta = 0.1: -log sigmoid(0.1 * 1.5) = log(1 + exp(-0.15)) = 0.62095705...
    pc, pr, rc, rr = _t(-10, -30, -20, -15)
    n = torch.tensor([5.0])
    assert float(davir(pc, pr, rc, rr, n, n, 0.1)) == pytest.approx(math.log1p(math.exp(-0.15)), abs=1e-12)
    assert math.log1p(math.exp(-0.15)) == pytest.approx(0.62095705, abs=1e-8)
    # vanilla on the same numbers: margin (10) - (-15) = 25 -> log(1 + exp(-2.5))
    assert float(sigmoid(pc, pr, rc, rr, n, n, 0.1)) == pytest.approx(math.log1p(math.exp(-2.5)), abs=1e-12)
    assert davir_margin([-10], [-30], [-20], [-15])[0] == pytest.approx(1.5)
    assert dpo_margin([-10], [-30], [-20], [-15])[0] == pytest.approx(25)


def test_davir_gradient_pushes_chosen_up_and_rejected_down():
    pc, pr, rc, rr = (torch.tensor([v], dtype=torch.float64, requires_grad=i < 2)
                      for i, v in enumerate((-12.0, -25.0, -11.0, -20.0)))
    n = torch.tensor([4.0])
    davir(pc, pr, rc, rr, n, n, 0.5).sum().backward()
    assert pc.grad.item() < 0 and pr.grad.item() > 0       # descent raises log pi(chosen), lowers log pi(rejected)
    # each side's gradient is the vanilla one divided by |log pi_ref| of that response
    w = torch.sigmoid(torch.tensor(-0.5 * ((-12 + 11) / 11 - (-25 + 20) / 20), dtype=torch.float64))
    assert pc.grad.item() == pytest.approx(-0.5 * w.item() / 11, rel=1e-12)
    assert pr.grad.item() == pytest.approx(0.5 * w.item() / 20, rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(pc=logp, pr=logp, rc=logp, rr=logp, cw=st.floats(0.1, 20), cl=st.floats(0.1, 20))
def test_davir_invariant_to_scaling_each_response(pc, pr, rc, rr, cw, cl):
    """Eq. 4 divides each log-ratio by |log pi_ref| of the same response, so multiplying one response's policy
    and reference log-probs by the same c > 0 (e.g. the response repeated c times) changes nothing."""
    n = torch.tensor([7.0])
    base = davir(*_t(pc, pr, rc, rr), n, n, 0.1)
    scaled = davir(*_t(cw * pc, cl * pr, cw * rc, cl * rr), n, n, 0.1)
    assert float(scaled) == pytest.approx(float(base), rel=1e-9, abs=1e-12)


def test_vanilla_is_not_scale_invariant_but_davir_is():
    pc, pr, rc, rr = -10.0, -30.0, -20.0, -15.0
    n = torch.tensor([3.0])
    v1, v3 = (float(sigmoid(*_t(c * pc, c * pr, c * rc, c * rr), n, n, 0.1)) for c in (1, 3))
    d1, d3 = (float(davir(*_t(c * pc, c * pr, c * rc, c * rr), n, n, 0.1)) for c in (1, 3))
    assert v3 < v1 - 0.05                                  # vanilla: a 3x longer pair looks 3x more separated
    assert d3 == pytest.approx(d1, rel=1e-12)


def test_every_loss_is_finite_on_random_pairs():
    rng = np.random.default_rng(0)
    x = [torch.tensor(-rng.uniform(1, 300, 50)) for _ in range(4)]
    n = [torch.tensor(rng.integers(1, 200, 50).astype(float)) for _ in range(2)]
    for name, (fn, _) in LOSSES.items():
        y = fn(*x, *n, 0.1)
        assert y.shape == (50,) and torch.isfinite(y).all(), name


def test_default_beta_is_trls_except_for_davir():
    assert default_beta("sigmoid", [-10.0], [-20.0]) == 0.1
    # davir: 0.1 x median |log pi_ref| over all four responses: median(10, 30, 20, 40) = 25
    assert default_beta("davir", [-10.0, -30.0], [-20.0, -40.0]) == pytest.approx(2.5)
