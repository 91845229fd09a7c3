"""Progress lines in logs and the step timer."""

import pytest

from siftlm.progress import Timer, log_line


def test_log_lines_say_elapsed_rate_and_eta():
    assert log_line("base loss", 64, 128, 70.0) == "base loss: 64/128 (50%) elapsed 1m10s, 0.914/s, eta 1m10s"
    assert log_line("x", 10, 10, 3725.0).endswith("elapsed 1h02m, 0.00268/s, eta 0s")


def test_timer_records_each_step():
    t = Timer()
    with t("a"):
        pass
    assert set(t.times) == {"a"} and t.times["a"] >= 0 and t.cached == []


def test_timer_says_which_step_raised_the_peak_memory():
    """In a fresh process: a step that touches enough memory to go 0.3 GB over the earlier peak (its resident memory
    read from /proc) raises the peak by 0.3 GB; a step after it that allocates less raises it by nothing; the
    summary's peak is at least the big step's rise."""
    import json
    import subprocess
    import sys

    code = """
import json, os, numpy as np
from siftlm.progress import Timer, peak_rss_gb
t = Timer()
with t("nothing"):
    pass
resident = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
size = peak_rss_gb() - resident + 0.3          # GB to touch so that the peak rises by 0.3 GB
expected = resident + size - peak_rss_gb()
with t("big"):
    a = np.ones(int(size * 2**30) // 8); del a
with t("small"):
    b = np.ones(50 * 2**20 // 8); del b
print(json.dumps({**t.memory(), "expected": expected}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    rises = out["raised_by_step_gb"]
    assert abs(rises["big"] - 0.3) < 0.03
    assert rises["nothing"] < 0.01 and rises["small"] < 0.01
    assert out["peak_rss_gb"] >= rises["big"]


def test_a_resumed_run_starts_its_bar_where_it_was_and_counts_its_rate_from_there(capsys):
    """Training resumed after epoch 1 of 2 (600 of 1,200 examples done): the bar starts at 600, and its rate and ETA
    count only the examples this run did."""
    assert log_line("train", 720, 1200, 120.0, start=600) == "train: 720/1200 (60%) elapsed 2m00s, 1/s, eta 8m00s"
    from siftlm.progress import bar, console

    if console.is_terminal:
        pytest.skip("the log-file form of the bar is for a console that is not a terminal")
    with bar("train", 1200, start=600) as advance:
        for _ in range(120):
            advance(1)
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() + captured.out.splitlines() if ln.startswith("train:")]
    assert [ln.split(" (")[0] for ln in lines] == ["train: 720/1200"]
