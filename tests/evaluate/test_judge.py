"""The judge against a loopback OpenAI-compatible server: verdicts, both orders, the cache, retries, failures."""

import pytest

from siftlm.evaluate.judge import Judge, JudgeConfig, parse_pairwise, parse_rating
from tests.evaluate.loopback import Rules, serve


@pytest.fixture
def server():
    rules = Rules()
    srv, url = serve(rules)
    yield rules, url
    srv.shutdown()


def _judge(url, tmp_path, **kw):
    return Judge(JudgeConfig(url, "judge-x", backoff_s=0.01, **kw), tmp_path / "cache")


def test_parsers_never_guess():
    assert parse_pairwise("Output (a)") == 1.0 and parse_pairwise("I pick output(b).") == 0.0
    assert parse_pairwise("Output (a) or Output (b)") is None and parse_pairwise("neither") is None
    assert parse_rating("Rating: [[7]]") == 7.0 and parse_rating("[[7.5]]") == 7.5
    assert parse_rating("[[11]]") is None and parse_rating("Rating: 7") is None and parse_rating("[[3]] [[4]]") is None


def test_pairwise_asks_both_orders_and_a_position_bias_cancels(server, tmp_path):
    rules, url = server
    judge = _judge(url, tmp_path)
    out = judge.pairwise([("win", "q", "a GOOD answer", "a plain one"), ("lose", "q", "plain", "GOOD one"),
                          ("tie", "q", "plain", "also plain")])
    by = {r["id"]: r for r in out}
    assert by["win"]["preference"] == 1.0 and by["lose"]["preference"] == 0.0
    assert by["tie"]["model_first"] == 1.0 and by["tie"]["model_second"] == 0.0 and by["tie"]["preference"] == 0.5
    assert rules.requests == 6 and judge.stats.requests == 6


def test_the_cache_makes_a_rerun_free_and_retries_survive_rate_limits(server, tmp_path):
    rules, url = server
    items = [(f"i{k}", f"question {k}", "GOOD" if k % 2 else "meh", "other") for k in range(4)]
    rules.fail_with = [429, 500, 429]
    first = _judge(url, tmp_path, concurrency=1)
    a = first.pairwise(items)
    assert first.stats.retries == 3 and first.stats.errors == 0 and rules.requests == 8 + 3
    again = _judge(url, tmp_path)
    b = again.pairwise(items)
    assert a == b and again.stats.cached == 8 and again.stats.requests == 0 and rules.requests == 11


def test_failures_are_counted_never_scored(server, tmp_path):
    rules, url = server
    judge = _judge(url, tmp_path, max_retries=1)
    out = judge.pairwise([("bad", "UNPARSEABLE instruction", "GOOD", "x"), ("ok", "q", "GOOD", "x")])
    assert out[0]["preference"] is None and out[0]["orders_parsed"] == 0 and out[1]["preference"] == 1.0
    assert judge.stats.parse_failures == 2 and {f["id"] for f in judge.stats.failures} == {"bad:model-first",
                                                                                            "bad:model-second"}
    rules.fail_with = [500, 500]
    broken = _judge(url, tmp_path / "other", max_retries=1, concurrency=1)
    res = broken.grade([("g", [{"role": "user", "content": "q"}], "GOOD answer", None)] * 1)
    assert res[0]["grade"] is None and broken.stats.errors == 1 and broken.stats.retries == 1
    assert broken.grade([("g2", [{"role": "user", "content": "q"}], "GOOD answer", "ref")])[0]["grade"] == 9.0


def test_the_api_key_is_read_from_the_environment_and_never_stored(server, tmp_path, monkeypatch):
    rules, url = server
    monkeypatch.setenv("SIFTLM_TEST_KEY", "sk-secret-123")
    judge = Judge(JudgeConfig(url, "judge-x", key_env="SIFTLM_TEST_KEY"), tmp_path / "cache")
    judge.grade([("g", [{"role": "user", "content": "q"}], "GOOD", None)])
    assert judge.client.api_key == "sk-secret-123"
    assert not any("sk-secret" in p.read_text() for p in (tmp_path / "cache").rglob("*.json"))


def test_data_ratings_alpagasus_style(server, tmp_path):
    from siftlm.evaluate.judge import parse_score

    rules, url = server
    assert parse_score("Score: 4.5\nGood.") == 4.5 and parse_score("Score: 9") is None and parse_score("great") is None
    out = _judge(url, tmp_path).rate([("a", "q", "a GOOD answer"), ("b", "q", "meh"), ("c", "UNPARSEABLE q", "x")])
    assert [r["rating"] for r in out] == [5.0, 1.0, None]


def test_rate_cli_then_select_by_rating(server, tmp_path):
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from siftlm.cli import app

    rules, url = server
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"q{i}", "output": "GOOD" if i % 2 else "meh"}) + "\n"
                            for i in range(6)))
    res = CliRunner().invoke(app, ["rate", str(data), "--judge-url", url, "--judge-model", "j", "--out",
                                   str(tmp_path / "r.parquet")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["select", str(tmp_path / "r.parquet"), "--data", str(data), "--by", "rating",
                                   "--budget", "3", "--out", str(tmp_path / "sel")])
    assert res.exit_code == 0, res.output
    kept = [json.loads(x)["output"] for x in (tmp_path / "sel" / "selected.jsonl").read_text().splitlines()]
    assert kept == ["GOOD"] * 3 and len(pd.read_parquet(tmp_path / "r.parquet")) == 6


def _rate_cli(url, tmp_path, n=6, *extra):
    import json

    from typer.testing import CliRunner

    from siftlm.cli import app

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"q{i}", "output": "GOOD" if i % 2 else "meh"}) + "\n"
                            for i in range(n)))
    out = tmp_path / "rating" / "r.parquet"
    res = CliRunner().invoke(app, ["rate", str(data), "--judge-url", url, "--judge-model", "j", "--out", str(out),
                                   "--concurrency", "1", *extra])
    failures = [json.loads(x) for x in (out.parent / "failures.jsonl").read_text().splitlines()] \
        if (out.parent / "failures.jsonl").exists() else None
    return res, out, failures


def test_replies_that_are_not_chat_completions_are_failures_of_their_item(tmp_path):
    import pandas as pd

    rules = Rules(fail_with=["html", "junk", 404])
    srv, url = serve(rules)
    try:
        res, out, failures = _rate_cli(url, tmp_path, 6, "--judge-max-failures", "0.6")
    finally:
        srv.shutdown()
    assert res.exit_code == 0, res.output
    ratings = pd.read_parquet(out)["rating"]
    assert ratings.isna().sum() == 3 and ratings.notna().sum() == 3          # the junk replies are failed items
    assert len(failures) == 3 and all(f["reason"] for f in failures)
    reasons = " | ".join(f["reason"] for f in failures)
    assert ("not a chat completion" in reasons or "JudgeReplyError" in reasons) and "404" in reasons


def test_junk_500s_and_silence_finish_with_counted_failures_and_the_right_exit_code(tmp_path):
    import pandas as pd

    rules = Rules(fail_with=["html", 500, 500, "junk", "silent"], silence_s=3.0)
    srv, url = serve(rules)
    try:
        res, out, failures = _rate_cli(url, tmp_path, 8, "--judge-timeout", "0.5", "--judge-max-retries", "1",
                                       "--judge-retry-budget", "2", "--judge-max-failures", "0.25")
    finally:
        srv.shutdown()
    assert res.exit_code == 1 and "3 of 8 examples failed (more than --judge-max-failures 0.25)" in res.stderr
    assert "Traceback" not in res.output
    frame = pd.read_parquet(out)                      # the ratings are written before the exit code says so
    assert len(frame) == 8 and frame["rating"].isna().sum() == len(failures) == 3
    reasons = sorted(f["reason"] for f in failures)
    assert "InternalServerError 500 after 1 retries" in reasons and sum("not a chat completion" in r for r in reasons) == 2
    assert rules.requests == 8 + 1 + 1                # one retry of the 500, one of the silent request


def test_a_judge_that_never_answers_stops_being_asked_and_exits_1(tmp_path):
    import time

    rules = Rules(always="silent", silence_s=2.0)
    srv, url = serve(rules)
    t = time.perf_counter()
    try:
        res, out, failures = _rate_cli(url, tmp_path, 20, "--judge-timeout", "0.3", "--judge-retry-budget", "1")
    finally:
        srv.shutdown()
    took = time.perf_counter() - t
    assert res.exit_code == 1 and "no verdict for any of the 20 examples" in " ".join(res.stderr.split())
    assert len(failures) == 20 and sum("judge unavailable" in f["reason"] for f in failures) >= 10
    assert took < 20 and rules.requests < 20                     # gave up instead of waiting out every item


KILLED_JUDGE = """
import os, signal, sys
from siftlm.config import JudgeConfig
from siftlm.evaluate.judge import Judge
judge = Judge(JudgeConfig(sys.argv[1], "j", concurrency=1, progress=False), sys.argv[2])
real, n = judge._request, [0]
def dying(messages):
    n[0] += 1
    if n[0] == 4:                      # killed while asking for the fourth verdict
        os.kill(os.getpid(), signal.SIGKILL)
    return real(messages)
judge._request = dying
judge.rate([(f"i{k}", f"q{k}", "GOOD") for k in range(6)])
"""


def test_kill_9_mid_judging_keeps_every_verdict_already_given(server, tmp_path):
    from tests.conftest import run_killed

    rules, url = server
    run_killed(tmp_path, KILLED_JUDGE, url, tmp_path / "cache")
    assert rules.requests == 3 and not list((tmp_path / "cache").glob(".*.tmp"))
    again = Judge(JudgeConfig(url, "j", concurrency=1, progress=False), tmp_path / "cache")
    out = again.rate([(f"i{k}", f"q{k}", "GOOD") for k in range(6)])
    assert [r["rating"] for r in out] == [5.0] * 6 and again.stats.cached == 3 and again.stats.requests == 3


def test_the_api_key_never_leaves_through_a_reply_that_echoes_the_request(tmp_path, monkeypatch):
    """An endpoint (or a proxy before it) that echoes the request's headers, as a 200 web page, as a chat completion
    or in an error body, must not put the key into failures.jsonl, the cache, the results or the error line."""
    import pandas as pd

    secret = "sk-live-0123456789abcdef"
    monkeypatch.setenv("SIFTLM_TEST_KEY", secret)
    rules = Rules(fail_with=["echo", "echo-reply", "echo-401", "echo", "echo-reply", "echo-401"])
    srv, url = serve(rules)
    try:
        res, out, failures = _rate_cli(url, tmp_path, 6, "--judge-key-env", "SIFTLM_TEST_KEY")
    finally:
        srv.shutdown()
    assert res.exit_code == 1 and "no verdict for any of the 6" in res.output, res.output
    assert len(failures) == 6 and "Bearer $SIFTLM_TEST_KEY" in " ".join(f["reason"] + f["reply"] for f in failures)
    written = [res.output, (out.parent / "failures.jsonl").read_text()]
    written += [p.read_text() for p in tmp_path.rglob("*.json")] + [p.read_text() for p in tmp_path.rglob("*.jsonl")]
    if out.exists():
        written.append(pd.read_parquet(out).to_json())
    assert not [w for w in written if secret in w]
