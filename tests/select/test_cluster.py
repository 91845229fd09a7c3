import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from siftlm.select.cluster import apportion, kmeans, per_cluster
from siftlm.select.sample import random_subset


@given(st.lists(st.integers(1, 200), min_size=1, max_size=40), st.data())
def test_apportion_adds_up_exactly_and_is_proportional(sizes, data):
    k = data.draw(st.integers(0, sum(sizes)))
    q = apportion(sizes, k)
    assert q.sum() == k and np.all(q <= np.asarray(sizes)) and np.all(q >= 0)
    exact = k * np.asarray(sizes) / sum(sizes)
    assert np.all(np.abs(q - exact) < 1)                       # floor or ceil of the exact quota


def test_apportion_by_hand():
    # quotas 10 * [5, 3, 2] / 10 = [5, 3, 2]; 4 of them: [2, 1.2, 0.8] -> floors [2, 1, 0], 1 left -> largest remainder 0.8
    assert apportion([5, 3, 2], 4).tolist() == [2, 1, 1]
    with pytest.raises(ValueError):
        apportion([2, 2], 5)


def test_per_cluster_top_share_and_exact_budget():
    ids = [f"i{j:02d}" for j in range(10)]
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    scores = np.array([5, 4, 3, 2, 1, 9, 8, 7, 0.5, 0.1])
    got = per_cluster(ids, labels, 4, scores=scores, direction="low")  # quotas [2, 1, 1]
    assert sorted(got.tolist()) == [3, 4, 7, 9]
    cr = per_cluster(ids, labels, 4, seed=1)                           # cluster-random
    assert len(cr) == 4 and np.bincount(labels[cr], minlength=3).tolist() == [2, 1, 1]
    assert per_cluster(ids, labels, 4, seed=1).tolist() == cr.tolist()  # seeded


def test_kmeans_finds_planted_clusters_and_random_is_seeded():
    rng = np.random.default_rng(0)
    x = np.repeat(np.eye(4) * 10, 25, axis=0) + rng.standard_normal((100, 4)) * 0.1
    labels = kmeans(x, per_cluster=25)
    assert len(set(labels)) == 4 and all(len(set(labels[i * 25:(i + 1) * 25])) == 1 for i in range(4))
    assert random_subset(100, 10, seed=3).tolist() == random_subset(100, 10, seed=3).tolist()


def test_faiss_kmeans_finds_planted_clusters():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(1)
    x = np.repeat(np.eye(5) * 10, 40, axis=0) + rng.standard_normal((200, 5)) * 0.1
    labels = kmeans(x, n_clusters=5, backend="faiss", seed=0)
    assert len(set(labels)) == 5 and all(len(set(labels[i * 40:(i + 1) * 40])) == 1 for i in range(5))
    assert kmeans(x, n_clusters=5, backend="faiss", seed=0).tolist() == labels.tolist()


def test_cluster_selection_warns_when_clustering_cannot_do_its_job():
    import pandas as pd

    from siftlm.config import SelectConfig
    from siftlm.select.cluster import pick_cluster

    rng = np.random.default_rng(0)
    t = pd.DataFrame({"id": [f"e{i:02d}" for i in range(36)], "s": rng.random(36)})
    x = rng.standard_normal((36, 4))
    one = pick_cluster(t, x, SelectConfig(method="cluster", by="s", budget=5))           # 36 / 50 -> 1 cluster
    assert "k-means made 1 cluster (the default N / 50 for 36 examples)" in one.note
    assert one.positions.tolist() == np.argsort(-t["s"].to_numpy())[:5].tolist()        # so it is plain top-k
    many = pick_cluster(t, x, SelectConfig(method="cluster", by="s", budget=3, clusters=6))
    assert "3 of 6 clusters get no pick" in many.note
    fine = pick_cluster(t, x, SelectConfig(method="cluster", by="s", budget=12, clusters=3))
    assert fine.note == ""
