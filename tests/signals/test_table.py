"""The signals table schema, trajectory columns, pair tables and feature files."""

import numpy as np
import pandas as pd
import pytest

from siftlm.signals.table import load_features, pair_table, signal_arrays, trajectory_columns, write_frame


def test_trajectory_columns_are_in_epoch_order_and_become_matrices():
    t = pd.DataFrame({"id": ["a", "b"], "ppl_10": [1.0, 2.0], "ppl_2": [3.0, 4.0], "ppl_0": [5.0, 6.0],
                      "ppl_x": [0, 0], "acc_0": [0.1, 0.2], "acc_1": [0.3, 0.4]})
    assert trajectory_columns(t, "ppl") == ["ppl_0", "ppl_2", "ppl_10"]
    arrays = signal_arrays(t)
    np.testing.assert_array_equal(arrays["ppl_trajectory"], [[5, 3, 1], [6, 4, 2]])
    np.testing.assert_array_equal(arrays["acc_trajectory"], [[0.1, 0.3], [0.2, 0.4]])
    assert "id" not in arrays


def test_pair_table_joins_policy_and_reference():
    ref = pd.DataFrame({"id": ["a", "b"], "chosen_logp": [-5.0, -7.0], "rejected_logp": [-6.0, -4.0],
                        "chosen_tokens": [10, 3], "rejected_tokens": [4, 8]})
    t = pair_table(ref, ref.assign(chosen_logp=[-4.0, -6.0]))
    assert t["length_diff"].tolist() == [6, -5] and t["policy_chosen_logp"].tolist() == [-4.0, -6.0]
    with pytest.raises(ValueError, match="different pairs"):
        pair_table(ref, ref.iloc[::-1])


def test_feature_files_round_trip_and_align_by_id(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    frame = pd.DataFrame({"id": ["d", "c", "b", "a"], "vector": list(x), "grad_norm": [1.0, 2.0, 3.0, 4.0]})
    write_frame(frame, tmp_path / "f.parquet")
    write_frame(frame, tmp_path / "f.npy")
    np.testing.assert_array_equal(load_features(tmp_path / "f.npy"), x)
    np.testing.assert_array_equal(load_features(tmp_path / "f.parquet", ["a", "b", "c", "d"]), x[::-1])
    with pytest.raises(ValueError, match="no vector for 1 ids"):
        load_features(tmp_path / "f.parquet", ["a", "z"])
    with pytest.raises(ValueError, match=r"shape \(4, 3\), expected \(2, D\)"):
        load_features(tmp_path / "f.npy", ["a", "b"])
    with pytest.raises(FileNotFoundError, match="no such features file"):
        load_features(tmp_path / "nope.npy")
    with pytest.raises(ValueError, match="has no vectors"):
        write_frame(frame.drop(columns="vector"), tmp_path / "g.npy")
