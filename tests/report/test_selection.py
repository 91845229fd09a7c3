"""The selection report: counts, plots and the kept examples of a scored table."""

import numpy as np
import pandas as pd

from siftlm.report.selection import write_report


def test_report_shows_counts_plots_and_kept_rows(tmp_path):
    rng = np.random.default_rng(0)
    n = 20
    t = pd.DataFrame({"id": [f"e<{i}>" for i in range(n)], "n_prompt": rng.integers(5, 50, n),
                      "n_response": rng.integers(5, 200, n), "davir": rng.random(n), "rho": rng.random(n),
                      "ppl_0": rng.random(n) + 5, "ppl_1": rng.random(n) + 3, "ppl_2": rng.random(n) + 1})
    rank = pd.array([pd.NA] * n, dtype="Int64")
    top = np.argsort(-t["davir"].to_numpy())[:3]
    rank[top] = [1, 2, 3]
    t["rank"], t["selected"] = rank, ~rank.isna()
    summary = {"counts": {"read": 22, "kept": 20, "rejected": 2}, "length_correlations": {},
               "timings_s": {"base loss pass": 1.25}}
    page = write_report(t, summary, tmp_path / "r.html", by="davir").read_text()
    assert page.count("data:image/png;base64,") == 4                       # score/length, rho+davir, trajectory, hist
    assert "<td>rejected</td><td class='n'>2</td>" in page and "<td>base loss pass</td><td class='n'>1.2 s</td>" in page
    first = t["id"][top[0]].replace("<", "&lt;").replace(">", "&gt;")
    assert f"<td class='n'>1</td><td>{first}</td>" in page
