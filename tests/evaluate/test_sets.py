

def test_a_limited_set_is_a_seeded_sample_stratified_over_its_sources():
    from collections import Counter

    from siftlm.evaluate.sets import EvalItem, stratified_sample

    items = [EvalItem(f"i{k}", ["q"], ["a"], dataset=src) for k, src in
             enumerate(["a"] * 50 + ["b"] * 30 + ["c"] * 15 + ["d"] * 5)]
    got = stratified_sample(items, 20, seed=1)
    assert Counter(i.dataset for i in got) == {"a": 10, "b": 6, "c": 3, "d": 1}       # proportional, exact total
    assert [i.id for i in got] == sorted((i.id for i in got), key=lambda s: int(s[1:]))  # the set's own order
    assert [i.id for i in stratified_sample(items, 20, seed=1)] == [i.id for i in got]
    assert [i.id for i in stratified_sample(items, 20, seed=2)] != [i.id for i in got]
    odd = stratified_sample(items, 7, seed=0)                                         # remainders by largest share
    assert len(odd) == 7 and Counter(i.dataset for i in odd) == {"a": 4, "b": 2, "c": 1}          # 3.5, 2.1, 1.05, 0.35
    assert stratified_sample(items, 500) == items
