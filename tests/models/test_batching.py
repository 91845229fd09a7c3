from hypothesis import given, settings
from hypothesis import strategies as st

from siftlm.models.batching import padding_fraction, plan_batches


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 500), min_size=1, max_size=200), st.integers(1, 4000))
def test_batches_cover_every_example_once_within_budget(lengths, budget):
    batches = plan_batches(lengths, budget)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert len(b) == 1 or len(b) * width <= budget


def test_padding_fraction_by_hand():
    lengths = [10, 8, 4]
    assert padding_fraction(lengths, [[0, 1], [2]]) == 1 - 22 / 24
    # spread limit: 8 < 0.9 * 10 closes the batch, so nothing is padded
    assert padding_fraction(lengths, plan_batches(lengths, 1000)) == 0.0
