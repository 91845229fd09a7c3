"""What every report says about its score: the shipped evidence file is the committed results' (regenerated whenever
they change), the advice follows the verdicts, never the sign of a point estimate, and a report shows the rows of
the chosen score's methods only."""

import json
from pathlib import Path

import pytest

from siftlm.report import evidence
from tests.conftest import runs_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs_evidence():
    return runs_script("evidence")


def _row(method, verdict, diff, low, high, set_="heldout", budget="10 %", metric="loss_per_token", primary=True,
         value=1.0, random=1.0, q=0.01):
    return {"method": method, "budget": budget, "set": set_, "metric": metric, "primary": primary, "diff": diff,
            "low": low, "high": high, "verdict": verdict, "q": q, "survives_bh": verdict != "no difference detected"
            and q < 0.05, "beats_random": 0.0, "train_tokens": 100.0, "examples": 60.0, "value": value,
            "random": random}


def test_the_shipped_evidence_is_the_committed_results(runs_evidence):
    if not (ROOT / "runs" / "results" / "clean" / "results.json").exists():
        pytest.skip("no committed results in this checkout")
    assert json.loads(evidence.FILE.read_text()) == runs_evidence.build()


def test_advice_follows_verdicts_not_point_estimates(runs_evidence):
    auroc = {"lp_app": {"all": 0.8}, "davir": {"all": 0.3}}
    # a lower loss than random whose CI contains 0 is no win
    hopeful = [_row("highest:davir", "no difference detected", -0.05, -0.11, +0.01)]
    text = runs_evidence.advice(hopeful, [], auroc)
    assert text.startswith("No selection method beat random") and "highest:davir" not in text
    won = runs_evidence.advice([_row("highest:davir", "better", -0.05, -0.09, -0.01)], [], auroc)
    assert won.startswith("In siftlm's clean grids, highest:davir at 10 % trained a better model")
    lost = runs_evidence.advice([_row("lowest:lp_app", "worse", +0.07, +0.05, +0.10),
                                 _row("highest:ifd", "worse", +0.07, +0.05, +0.10, set_="mt-bench")], [], auroc)
    assert "Worse than random there, with the CI excluding 0: lowest:lp_app at 10 %." in lost
    weak = runs_evidence.advice([_row("highest:ifd", "better", -0.02, -0.03, -0.001, q=0.06)], [], auroc)
    assert "highest:ifd at 10 % (not after BH) trained a better model" in weak
    # the whole pool's row is quoted with its verdict, whichever way it points
    full = [{"set": "heldout", "metric": "loss_per_token", "examples": 599, "budget": "10 % of the tokens",
             "diff": -0.09, "low": -0.12, "high": -0.06, "verdict": "better"}]
    text = runs_evidence.advice(hopeful, [], auroc, full)
    assert text.startswith("No selection method beat random")
    assert "whole pool (599 examples) came out -0.090 [-0.120, -0.060] from a random 10 % of the tokens subset (better)" in text
    unclear = runs_evidence.advice(hopeful, [], auroc, [{**full[0], "low": -0.2, "high": 0.02,
                                                         "verdict": "no difference detected"}])
    assert "(no difference detected)." in unclear and "cost held-out loss" not in unclear
    # the best-AUROC score is named with the direction it keeps, and its noisy-pool fine-tune verdict is quoted
    noisy = [_row("lowest:lp_app", "no difference detected", +0.038, -0.007, +0.074)]
    text = runs_evidence.advice([], noisy, auroc)
    assert "lp_app ranks injected junk last best (noisy-pool AUROC 0.80)" in text
    assert "+0.038 [-0.007, +0.074] from random's held-out loss per token (no difference detected)" in text
    assert "keep the lowest by lp_app" in text and "not measured against random at that size" in text


@pytest.mark.parametrize("verdict, low, high, says, not_says", [
    ("better", -0.06, -0.01, "at 50 % it trained better than random subsets", "Even as a generous filter"),
    ("worse", +0.01, +0.06, "Even as a generous filter (at 50 %) its selection trained worse", "it trained better"),
    ("no difference detected", -0.06, +0.01, "not distinguishable from random", "it trained better"),
])
def test_filter_advice_follows_the_generous_budgets_verdict(runs_evidence, verdict, low, high, says, not_says):
    """The junk filter's advice rests on its fine-tune at a generous budget (>= 50 %), not on the 10 % pick's, and a
    CI containing 0 never recommends it as a gain."""
    auroc = {"lp_app": {"all": 0.8}}
    pick = _row("lowest:lp_app", "worse", +0.05, +0.01, +0.09)               # a 10 % pick that lost: not the filter
    generous = _row("lowest:lp_app", verdict, (low + high) / 2, low, high, budget="50 %")
    text = runs_evidence.advice([], [generous, pick], auroc)
    assert says in text and not_says not in text
    assert text.index("As a 10 % selection") < text.index("As a 50 % selection")     # quoted smallest budget first
    assert "not measured against random at that size" not in text


def test_a_report_shows_the_rows_of_its_own_score(monkeypatch):
    ev = {"setting": "tiny", "advice": "ADVICE",
          "noisy": {"setting": "n", "auroc": {"lp_app": {"all": 0.81, "refusal": 0.99}, "davir": {"all": 0.31}}},
          "clean": {"setting": "c", "rows": [_row("lowest:lp_app", "worse", 0.07, 0.05, 0.1),
                                             _row("highest:davir", "worse", 0.05, 0.02, 0.08)]},
          "noisy_cells": {"setting": "nc", "rows": [_row("lowest:lp_app", "no difference detected", 0.04, -0.01,
                                                         0.07)]}}
    monkeypatch.setattr(evidence, "load", lambda: ev)
    e = evidence.for_score("lp_app")
    assert [r["method"] for r in e["grid"]] == ["lowest:lp_app"] and len(e["noisy_grid"]) == 1
    line = evidence.line("lp_app")
    assert "AUROC 0.81" in line and "lowest:lp_app at 10 % worse" in line
    assert "lowest:lp_app at 10 % no difference detected" in line
    html = evidence.section("lp_app")
    assert "refusal 0.99" in html and "Fine-tunes on the noisy pool (nc)" in html and "+0.0700 [+0.0500, +0.1000]" in html
    assert "highest:davir" not in html
    assert evidence.for_score("davir")["noisy_grid"] == []


BEHAVIOUR_WORDS = ("refus", "another language", "loop")


def test_a_behaviour_is_claimed_only_where_a_grid_measured_it(runs_evidence):
    """Without behaviour rows the advice says nothing about refusals, languages or loops; with a measured refusal
    rate it quotes it (with random's rate and the CI), and only the behaviours that were measured."""
    auroc = {"lp_app": {"all": 0.8}}
    noisy = [_row("lowest:lp_app", "no difference detected", -0.01, -0.02, 0.01, budget="50 %")]
    text = runs_evidence.advice([], noisy, auroc)
    assert not any(w in text for w in BEHAVIOUR_WORDS)
    refusals = [_row("lowest:lp_app", "better", -0.08, -0.11, -0.05, set_="heldout+alpaca-eval", budget="50 %",
                     metric="refusal", value=0.02, random=0.10),
                _row("filter", "better", -0.07, -0.10, -0.04, set_="heldout+alpaca-eval", budget="50 %",
                     metric="refusal", value=0.03, random=0.10)]
    text = runs_evidence.advice([], noisy, auroc, behaviour=refusals, rate="30 %")
    assert "Keeping the lowest by lp_app, refused on 2.0 % of heldout+alpaca-eval prompts against random 50 % " \
           "subsets' 10.0 % (-0.080 [-0.110, -0.050], better, survives BH)" in text
    assert "the detector filter (no model) refused on 3.0 %" in text
    assert "another language" not in text and "loop" not in text           # not measured: not said
    ev = {"behaviour": {"rows": refusals, "rate": "30 %"}}
    assert runs_evidence.lead("lp_app", ev).startswith("Keeping the lowest 50 % by lp_app cut how often the "
                                                       "fine-tuned model refused from 10.0 % (random) to 2.0 %")
    assert not any(w in runs_evidence.lead("lp_app", {"clean": {"rows": []}}) for w in BEHAVIOUR_WORDS)
    # a CI containing 0 leads with no behaviour claim
    flat = [{**refusals[0], "verdict": "no difference detected", "low": -0.1, "high": 0.02}]
    assert not any(w in runs_evidence.lead("lp_app", {"behaviour": {"rows": flat, "rate": "30 %"}})
                   for w in BEHAVIOUR_WORDS)


def test_a_targeted_lead_follows_the_primary_verdict_and_says_when_unmeasured(runs_evidence):
    rows = [{**_row("repr->query", "better", -0.021, -0.034, -0.008, set_="target"), "grid": "targeted-alpaca-eval"},
            {**_row("nearest->query", "no difference detected", 0.004, -0.01, 0.02, set_="target"),
             "grid": "targeted-alpaca-eval"},
            {**_row("repr->query", "worse", 0.5, 0.4, 0.6, set_="target", metric="refusal", primary=False),
             "grid": "targeted-alpaca-eval"}]
    repr_ = runs_evidence.target_lead("repr", rows)
    assert "better model for the target" in repr_ and "-0.0210 [-0.0340, -0.0080]" in repr_
    assert "refusal" not in repr_                                       # secondary rows do not lead
    assert "not distinguishable" in runs_evidence.target_lead("nearest", rows)
    assert "have not measured --target-method less" in runs_evidence.target_lead("less", rows)


def test_a_lead_says_when_a_gain_at_equal_examples_vanishes_at_equal_tokens(runs_evidence):
    rows = [_row("highest:ifd", "better", -0.024, -0.040, -0.009),
            _row("highest:ifd", "no difference detected", -0.004, -0.017, +0.011, budget="10 % of the tokens")]
    text = runs_evidence.lead("ifd", {"clean": {"rows": rows}})
    assert "better model than random subsets at 10 % of the examples, but not at 10 % of the tokens" in text
    assert "-0.004 [-0.017, +0.011]" in text and "worth using" not in text
    assert "worth using at those budgets" in runs_evidence.lead("ifd", {"clean": {"rows": rows[:1]}})
