"""Format detection and conversion of each supported record format."""

from __future__ import annotations

import pytest

from siftlm.data import FORMATS, DataError, Example, detect_format
from siftlm.data.formats import RecordError, convert_record

U, A, S = "user", "assistant", "system"


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


CASES: list[tuple[str, dict, list[dict], str | None, str | None]] = [
    (
        "alpaca",
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        [msg(U, "Add the numbers.\n\n2 and 3"), msg(A, "5")],
        None,
        None,
    ),
    (
        "alpaca",
        {
            "instruction": "And now?",
            "input": "",
            "output": "Done.",
            "system": "Be brief.",
            "history": [["Hi", "Hello!"]],
        },
        [msg(S, "Be brief."), msg(U, "Hi"), msg(A, "Hello!"), msg(U, "And now?"), msg(A, "Done.")],
        None,
        None,
    ),
    (
        "sharegpt",
        {
            "system": "You are kind.",
            "conversations": [
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hello"},
                {"from": "human", "value": "Bye"},
                {"from": "gpt", "value": "Goodbye"},
            ],
        },
        [msg(S, "You are kind."), msg(U, "Hi"), msg(A, "Hello"), msg(U, "Bye"), msg(A, "Goodbye")],
        None,
        None,
    ),
    (
        "messages",
        {
            "messages": [
                msg(S, "sys"),
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                msg(A, "c"),
            ]
        },
        [msg(S, "sys"), msg(U, "a\nb"), msg(A, "c")],
        None,
        None,
    ),
    (
        "prompt_completion",
        {"prompt": "The sky is", "completion": " blue."},
        [msg(U, "The sky is"), msg(A, " blue.")],
        None,
        None,
    ),
    (
        "prompt_completion",
        {"prompt": [msg(U, "Color of the sky?")], "completion": [msg(A, "Blue.")]},
        [msg(U, "Color of the sky?"), msg(A, "Blue.")],
        None,
        None,
    ),
    (
        "preference",
        {"prompt": "Color of the sky?", "chosen": "Blue.", "rejected": "Green."},
        [msg(U, "Color of the sky?")],
        "Blue.",
        "Green.",
    ),
    (
        "preference",
        {"prompt": [msg(U, "Sky?")], "chosen": [msg(A, "Blue.")], "rejected": [msg(A, "Green.")]},
        [msg(U, "Sky?")],
        "Blue.",
        "Green.",
    ),
    (
        "preference",
        {
            "chosen": [msg(S, "s"), msg(U, "Sky?"), msg(A, "Blue.")],
            "rejected": [msg(S, "s"), msg(U, "Sky?"), msg(A, "Green.")],
        },
        [msg(S, "s"), msg(U, "Sky?")],
        "Blue.",
        "Green.",
    ),
    (
        "preference",
        {
            "conversations": [{"from": "human", "value": "Sky?"}],
            "chosen": {"from": "gpt", "value": "Blue."},
            "rejected": {"from": "gpt", "value": "Green."},
        },
        [msg(U, "Sky?")],
        "Blue.",
        "Green.",
    ),
]


@pytest.mark.parametrize(("fmt", "record", "messages", "chosen", "rejected"), CASES)
def test_detect_and_convert(fmt: str, record: dict, messages: list, chosen: str | None, rejected: str | None):
    assert detect_format([record]) == fmt
    assert convert_record(record, fmt) == (messages, chosen, rejected)


def test_formats_is_the_documented_set():
    assert set(FORMATS) == {"alpaca", "sharegpt", "messages", "prompt_completion", "preference", "text"}


def test_detection_is_majority_vote_and_prefers_preference():
    alpaca = {"instruction": "i", "output": "o"}
    pc = {"prompt": "p", "completion": "c"}
    assert detect_format([alpaca, alpaca, pc, "junk"]) == "alpaca"  # type: ignore[list-item]
    assert detect_format([{"prompt": "p", "chosen": "a", "rejected": "b", "completion": "c"}]) == "preference"
    assert detect_format([{"messages": [{"from": "human", "value": "x"}]}]) == "sharegpt"


def test_detection_failure_names_keys():
    with pytest.raises(DataError, match="keys seen: foo, txt"):
        detect_format([{"txt": "x", "foo": 1}])


def test_common_shapes_are_detected():
    assert detect_format([{"text": "plain text"}]) == "text"
    assert convert_record({"text": "plain"}, "text") == ([{"role": "assistant", "content": "plain"}], None, None)
    assert detect_format([{"question": "q", "answer": "a"}]) == "prompt_completion"
    assert convert_record({"question": "q", "answer": "a"}, "prompt_completion")[0] == [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    conv = {"conversation": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert detect_format([conv]) == "sharegpt" and convert_record(conv, "sharegpt")[0] == conv["conversation"]


def test_unknown_format_name_lists_formats():
    with pytest.raises(DataError, match="alpaca"):
        convert_record({"x": 1}, "nope")


@pytest.mark.parametrize(
    ("fmt", "record", "field", "reason"),
    [
        ("alpaca", {"instruction": "i"}, "output", "missing required field 'output'"),
        ("alpaca", {"instruction": "i", "output": 3}, "output", "expected string, got number"),
        ("alpaca", {"instruction": "i", "output": " "}, "output", "empty response"),
        ("sharegpt", {"conversations": [{"from": "tool", "value": "x"}]}, "conversations[0].from", "tool"),
        ("messages", {"messages": [msg(U, "q")]}, "messages", "no assistant turn"),
        ("messages", {"messages": [msg(U, "q"), msg(A, "a"), msg(U, "q2")]}, "messages", "must end"),
        ("messages", {"messages": [msg(U, [{"type": "image"}])]}, "messages[0].content[0].type", "image"),
        ("prompt_completion", {"prompt": "", "completion": "x"}, "prompt", "empty prompt"),
        ("preference", {"prompt": "p", "chosen": "", "rejected": "r"}, "chosen", "empty response"),
        ("preference", {"prompt": "  ", "chosen": "c", "rejected": "r"}, "prompt", "empty prompt"),
        ("preference", {"prompt": "p", "chosen": "same", "rejected": "same"}, "rejected", "identical"),
        ("preference", {"chosen": "c", "rejected": "r"}, "prompt", "missing required field"),
        (
            "preference",
            {"chosen": [msg(U, "a"), msg(A, "x")], "rejected": [msg(U, "b"), msg(A, "y")]},
            "rejected",
            "differ only in the final assistant turn",
        ),
    ],
)
def test_record_errors(fmt: str, record: dict, field: str, reason: str):
    with pytest.raises(RecordError) as info:
        convert_record(record, fmt)
    assert info.value.field == field
    assert reason in info.value.reason


def test_example_kind():
    assert Example("a", [msg(U, "q"), msg(A, "a")]).kind == "sft"
    assert Example("b", [msg(U, "q")], chosen="x", rejected="y").kind == "preference"
