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
