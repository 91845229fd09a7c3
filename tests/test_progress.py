"""Progress lines in logs and the step timer."""

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
    """In a fresh process: a step that touches 400 MB raises the peak by what it adds above the earlier peak (the
    resident memory before it + 400 MB - the peak before it, read from /proc); a step after it that allocates less
    raises it by nothing; the summary's peak is at least the big step's rise."""
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
expected = max(0.0, resident + 400 / 1024 - peak_rss_gb())
with t("big"):
    a = np.ones(400 * 2**20 // 8); del a
with t("small"):
    b = np.ones(100 * 2**20 // 8); del b
print(json.dumps({**t.memory(), "expected": expected}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    rises = out["raised_by_step_gb"]
    assert out["expected"] > 0.1 and abs(rises["big"] - out["expected"]) < 0.03
    assert rises["nothing"] < 0.01 and rises["small"] < 0.01
    assert out["peak_rss_gb"] >= rises["big"]
