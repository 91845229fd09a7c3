"""Log-determinant distance: known values and invariances, and the report over feature files."""

import json

import numpy as np
import pandas as pd
import pytest

from siftlm.diversity import ldd_report, log_det_distance, unit_sphere


def test_log_det_distance_properties():
    ref = unit_sphere(60, 16, seed=0)
    zero, curve, _, singular = log_det_distance(ref, gamma=1.0, seed=0)          # the reference against itself
    assert zero == pytest.approx(0.0, abs=1e-9) and len(curve) == 60 and singular is None
    rng = np.random.default_rng(1)
    centers = unit_sphere(3, 16, seed=5)
    clustered = centers[rng.integers(0, 3, 60)] + 0.05 * rng.standard_normal((60, 16))
    clustered /= np.linalg.norm(clustered, axis=1, keepdims=True)
    ldd = log_det_distance(clustered, gamma=1.0, steps=20).value
    assert ldd > 0.5
    scaled = log_det_distance(clustered, gamma=1.0, steps=20, scale=7.0).value
    assert scaled == pytest.approx(ldd, abs=1e-9)                   # invariant to kernel scale


def test_ldd_report_reads_npy_and_parquet_alike(tmp_path):
    x = unit_sphere(30, 8, seed=3)
    np.save(tmp_path / "x.npy", x)
    pd.DataFrame({"id": [f"e{i}" for i in range(30)], "vector": list(x)}).to_parquet(tmp_path / "x.parquet")
    res = ldd_report([tmp_path / "x.npy", tmp_path / "x.parquet"], steps=10, plot=tmp_path / "p.png",
                     json_out=tmp_path / "l.json")
    a, b = res[str(tmp_path / "x.npy")], res[str(tmp_path / "x.parquet")]
    assert a["ldd"] == pytest.approx(b["ldd"], abs=1e-6) and a["n"] == 30 and a["d"] == 8 and len(a["curve"]) == 10
    assert a["ldd"] == pytest.approx(log_det_distance(x, steps=10).value, abs=1e-6)
    assert json.loads((tmp_path / "l.json").read_text()) == json.loads(json.dumps(res))
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_duplicates_make_the_distance_infinite_and_say_where(tmp_path):
    """100 unit vectors + 20 exact duplicates: det L_120 = 0, so the paper's LDD is +inf, not the value at step 100."""
    x = unit_sphere(100, 16, seed=1)
    x = np.vstack([x, x[:20]])
    r = log_det_distance(x, gamma=1.0)
    assert r.value == float("inf") and r.singular_after == 100 and len(r.curve) == 100 and r.partial
    assert "inf (kernel singular after 100 of 120 steps" in r.describe()
    np.save(tmp_path / "dup.npy", x)
    res = ldd_report([tmp_path / "dup.npy"], plot=tmp_path / "p.png", json_out=tmp_path / "l.json")
    row = json.loads((tmp_path / "l.json").read_text())[str(tmp_path / "dup.npy")]
    assert row["ldd"] is None and row["infinite"] and row["singular_after"] == 100 and row["steps"] == 120
    assert row["ldd_at_last_step"] == pytest.approx(r.curve[-1]) and res[str(tmp_path / "dup.npy")]["infinite"]
