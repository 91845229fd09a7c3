"""bench/op_profile.py: operators are sorted into kinds by name, and a real profile's self times are all accounted."""

import sys
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
op_profile = pytest.importorskip("op_profile")


@pytest.mark.parametrize("name, kind", [
    ("aten::mm", "matrix products"), ("aten::addmm", "matrix products"), ("aten::bmm", "matrix products"),
    ("aten::add", "element-wise"), ("aten::add_", "element-wise"), ("aten::mul_", "element-wise"),
    ("aten::silu", "element-wise"), ("aten::addcdiv_", "optimizer"), ("aten::_foreach_mul_", "optimizer"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"), ("aten::_log_softmax", "softmax statistics"),
    ("aten::logsumexp", "softmax statistics"), ("aten::copy_", "copies and layout"), ("aten::_to_copy", "copies and layout"),
    ("aten::addcmul_", "optimizer"), ("aten::matmul", "matrix products"), ("aten::mean", "element-wise"),
    ("aten::maximum", "other"), ("MmBackward0", "other"), ("aten::multinomial", "other"),
])
def test_kind_of_sorts_operator_names(name, kind):
    assert op_profile.kind_of(name) == kind


def test_by_kind_accounts_for_every_operator_of_a_real_profile():
    a, b, x = torch.randn(256, 256), torch.randn(256, 256), torch.randn(1000)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            c = a @ b
            y = (x * 2.0).sin()
    assert c.shape == (256, 256) and y.shape == (1000,)
    events = prof.key_averages()
    kinds, ops = op_profile.by_kind(events)
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    assert sum(kinds.values()) == pytest.approx(total, rel=1e-9)
    assert sum(s for _, s in ops) == pytest.approx(total, rel=1e-9)
    mm = sum(e.self_cpu_time_total for e in events if e.key == "aten::mm") / 1e6
    assert mm > 0 and kinds["matrix products"] >= mm
    assert kinds["element-wise"] > 0 and [s for _, s in ops] == sorted((s for _, s in ops), reverse=True)
