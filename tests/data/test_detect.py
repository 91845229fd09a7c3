"""The behaviour detectors against hand-labelled answers: what each must flag (true positives, including the
injected junk kinds) and what it must not (false positives a naive rule would make)."""

import pytest

from siftlm.data import detect
from siftlm.data.inject import REFUSALS, repeat

REFUSALS_LABELLED = [
    ("I'm sorry, but I can't help with that request.", True),
    ("As an AI language model, I do not have personal opinions. However, here are some views.", True),
    ("I apologize, but I cannot assist with that.", True),
    ("Sure. I am unable to browse the internet, so here is what I know.", True),    # a disclaimer opening sentence 2
    ("Sure! Here is the list you asked for. I am happy to add more items to it.", False),
    ("Unfortunately, I cannot provide real-time stock prices.", True),
    ("Thank you for your question! Unfortunately, I am not able to complete this task.", True),
    ("She whispered: 'I can't believe it's over.' The story ends there.", False),     # a character speaking
    ("The answer is 42. I'm sorry to say the proof is long.", True),                 # an apology opening a sentence
    ("Paris is the capital of France.", False),
    ("Sorry seems to be the hardest word, as the song goes.", False),
    ("", False),
]


@pytest.mark.parametrize("text,want", REFUSALS_LABELLED)
def test_refusal_detector_on_hand_labelled_answers(text, want):
    assert bool(detect.refusal(text)) is want


def test_every_injected_refusal_is_detected():
    assert all(detect.refusal(r) for r in REFUSALS)


LANGUAGES_LABELLED = [
    ("巴黎是法国的首都，也是法国最大的城市。", "en", "", True),
    ("没有电，一切都是白搭。", "en", "", True),                       # short Chinese: the CJK share decides
    ("Bonjour, je m'appelle Marie et j'habite à Paris depuis dix ans.", "en", "", True),
    ("Bonjour, je m'appelle Marie et j'habite à Paris depuis dix ans.", "en", "Translate this into French", False),
    ("Bonjour, je m'appelle Marie et j'habite à Paris depuis dix ans.", "fr", "", False),
    ("The capital of France is Paris, which is also its largest city.", "en", "", False),
    ("```python\nprint('hola mundo')\n```\nThis prints a greeting in the console.", "en", "", False),
    ("42", "en", "", False),                                           # too short to tell
    ("bird", "en", "", False),
]


@pytest.mark.parametrize("text,expected,prompt,want", LANGUAGES_LABELLED)
def test_wrong_language_detector_on_hand_labelled_answers(text, expected, prompt, want):
    assert bool(detect.wrong_language(text, expected, prompt)) is want


REPEATS_LABELLED = [
    ("the cat sat on the mat the cat sat on the mat the cat sat on the mat the cat sat on the mat", True),
    ("Negative Negative Negative Negative", True),
    ("我很好我很好我很好我很好我很好我很好我很好我很好", True),
    ("Fa la la la la, la la la la: the chorus of Deck the Halls.", False),          # short words: a song, not a loop
    ("Set border: 0 0 0 0 and height: 1px in the CSS rule.", False),
    ("To bake bread, mix flour and water, knead the dough, let it rise, shape it, and bake it for forty minutes.",
     False),
]


@pytest.mark.parametrize("text,want", REPEATS_LABELLED)
def test_repetition_detector_on_hand_labelled_answers(text, want):
    assert bool(detect.repetition(text)) is want


def test_injected_repetitions_are_detected():
    import numpy as np

    rng = np.random.default_rng(0)
    answer = "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the chloroplasts."
    assert all(detect.repetition(repeat(answer, rng)) for _ in range(20))


def test_repeated_share_by_hand():
    share, n = detect.repeated_share("a b c d a b c d")          # 5 word 4-grams, 4 distinct
    assert n == 5 and share == pytest.approx(1 - 4 / 5)
    assert detect.distinct_2("a b a b") == pytest.approx(2 / 3)    # bigrams ab, ba, ab


@pytest.mark.parametrize("text,prompt,want", [
    ("Name three primary colors.", "Name three primary colors.", True),
    ("name three  primary colors. Red", "Name three primary colors.", True),
    ("Red, blue and yellow.", "Name three primary colors.", False),
    ("Name three primary colors. The three primary colors are red, blue and yellow, as every painter knows.",
     "Name three primary colors.", False),                   # starts with the question, then answers it
    ("Hi", "Hi", True),
])
def test_echo_detector(text, prompt, want):
    assert detect.echo(text, prompt) is want


def test_empty_and_findings_reasons():
    assert detect.empty("  ...  ") and detect.empty("") and not detect.empty("ok")
    f = detect.findings("I'm sorry, but I can't help with that request.", "Write a poem.")
    assert f.reasons() == ["refusal: \"i'm sorry\""] and f.words == 11      # \\w runs: I'm and can't are two each
