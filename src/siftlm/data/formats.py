"""Record formats: detection and conversion of raw records to chat messages.

Every converter takes one raw record (a plain dict) and returns ``(messages, chosen, rejected)``:
for SFT ``messages`` is the whole conversation ending with an assistant turn and chosen/rejected
are None; for preference data ``messages`` holds the prompt turns (ending with a user turn) and
chosen/rejected are the two assistant replies.  Problems raise :class:`RecordError` naming the
field (as a path into the raw record, e.g. ``conversations[2].value``) and the reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from siftlm.errors import DataError

KNOWN_ROLES = ("system", "user", "assistant")
ROLE_MAP = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "chatgpt": "assistant",
}

Converted = tuple[list[dict], str | None, str | None]


class RecordError(ValueError):
    """One record is invalid; becomes a Reject row."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


@dataclass
class Example:
    id: str
    messages: list[dict]
    chosen: str | None = None
    rejected: str | None = None
    source: str = ""
    line: int = 0
    raw: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "preference" if self.chosen is not None else "sft"


@dataclass
class Reject:
    source: str
    line: int
    field: str
    reason: str
    id: str | None = None


# ---------------------------------------------------------------------------------------------
# small helpers


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _has(record: dict, key: str) -> bool:
    return record.get(key) is not None


def _require(record: dict, key: str) -> Any:
    if not _has(record, key):
        raise RecordError(key, f"missing required field '{key}'")
    return record[key]


def _expect(value: Any, types: type | tuple[type, ...], path: str, expected: str) -> Any:
    if not isinstance(value, types) or isinstance(value, bool):
        raise RecordError(path, f"wrong type: expected {expected}, got {_type_name(value)}")
    return value


def _str(value: Any, path: str) -> str:
    return _expect(value, str, path, "string")


def _opt_str(record: dict, key: str) -> str:
    return _str(record[key], key) if _has(record, key) else ""


def _content(value: Any, path: str) -> str:
    """A message content: a string, or a list of {"type": "text", "text": ...} parts (joined by newlines)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise RecordError(path, f"wrong type: expected string or list of text parts, got {_type_name(value)}")
    texts = []
    for j, part in enumerate(value):
        p = f"{path}[{j}]"
        if isinstance(part, str):
            texts.append(part)
            continue
        _expect(part, dict, p, "object")
        kind = part.get("type", "text")
        if kind != "text":
            raise RecordError(f"{p}.type", f"unsupported content part type '{kind}' (only text parts)")
        texts.append(_str(part.get("text"), f"{p}.text"))
    return "\n".join(texts)


def _turn(item: Any, path: str) -> dict:
    """One message in either OpenAI ({role, content}) or ShareGPT ({from, value}) style."""
    _expect(item, dict, path, "object")
    if "role" in item or "content" in item:
        role_key, content_key = "role", "content"
    else:
        role_key, content_key = "from", "value"
    if item.get(role_key) is None:
        raise RecordError(f"{path}.{role_key}", f"missing required field '{role_key}'")
    raw_role = _str(item[role_key], f"{path}.{role_key}")
    role = ROLE_MAP.get(raw_role.strip().lower())
    if role is None:
        known = ", ".join(sorted(ROLE_MAP))
        raise RecordError(f"{path}.{role_key}", f"unknown role '{raw_role}' (known roles: {known})")
    if content_key not in item:
        raise RecordError(f"{path}.{content_key}", f"missing required field '{content_key}'")
    content = _content(item[content_key], f"{path}.{content_key}")
    if role == "assistant" and not content.strip():
        raise RecordError(f"{path}.{content_key}", "empty response")
    return {"role": role, "content": content}


def _turns(value: Any, path: str) -> list[dict]:
    _expect(value, list, path, "list of messages")
    return [_turn(item, f"{path}[{i}]") for i, item in enumerate(value)]


def _with_system(messages: list[dict], record: dict) -> list[dict]:
    system = _opt_str(record, "system")
    if system.strip() and not (messages and messages[0]["role"] == "system"):
        return [{"role": "system", "content": system}, *messages]
    return messages


def _finish_sft(messages: list[dict], path: str) -> list[dict]:
    if not messages:
        raise RecordError(path, "empty conversation")
    if not any(m["role"] == "assistant" for m in messages):
        raise RecordError(path, "no assistant turn")
    if messages[-1]["role"] != "assistant":
        raise RecordError(path, f"conversation must end with an assistant turn, got '{messages[-1]['role']}'")
    return messages


def _finish_prompt(prompt: list[dict], path: str) -> list[dict]:
    if not prompt or not any(m["content"].strip() for m in prompt if m["role"] != "system"):
        raise RecordError(path, "empty prompt")
    if prompt[-1]["role"] != "user":
        raise RecordError(path, f"prompt must end with a user turn, got '{prompt[-1]['role']}'")
    return prompt


def _reply(value: Any, path: str) -> str:
    """A preference reply: a string, one {from, value}/{role, content} turn, or a one-message list."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict):
        turn = _turn(value, path)
        if turn["role"] != "assistant":
            raise RecordError(path, f"reply must be an assistant turn, got '{turn['role']}'")
        text = turn["content"]
    elif isinstance(value, list):
        turns = _turns(value, path)
        if len(turns) != 1 or turns[0]["role"] != "assistant":
            raise RecordError(path, "expected a single assistant message")
        text = turns[0]["content"]
    else:
        raise RecordError(path, f"wrong type: expected string or assistant message, got {_type_name(value)}")
    if not text.strip():
        raise RecordError(path, "empty response")
    return text


def _alpaca_prompt(record: dict) -> list[dict]:
    instruction = _str(_require(record, "instruction"), "instruction")
    extra = _opt_str(record, "input")
    user = instruction if not extra.strip() else f"{instruction}\n\n{extra}"
    if not user.strip():
        raise RecordError("instruction", "empty prompt")
    messages: list[dict] = []
    if _has(record, "history"):
        history = _expect(record["history"], list, "history", "list of [query, response] pairs")
        for i, pair in enumerate(history):
            p = f"history[{i}]"
            if not isinstance(pair, list) or len(pair) != 2:
                raise RecordError(p, f"wrong type: expected [query, response] pair, got {_type_name(pair)}")
            query, answer = _str(pair[0], f"{p}[0]"), _str(pair[1], f"{p}[1]")
            if not answer.strip():
                raise RecordError(f"{p}[1]", "empty response")
            messages += [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": user})
    return _with_system(messages, record)


# ---------------------------------------------------------------------------------------------
# converters


def convert_alpaca(record: dict) -> Converted:
    messages = _alpaca_prompt(record)
    output = _str(_require(record, "output"), "output")
    if not output.strip():
        raise RecordError("output", "empty response")
    return [*messages, {"role": "assistant", "content": output}], None, None


CONVERSATION_KEYS = ("conversations", "messages", "conversation")


def convert_sharegpt(record: dict) -> Converted:
    key = next((k for k in CONVERSATION_KEYS if _has(record, k)), "conversations")
    messages = _with_system(_turns(_require(record, key), key), record)
    return _finish_sft(messages, key), None, None


def convert_messages(record: dict) -> Converted:
    messages = _turns(_require(record, "messages"), "messages")
    return _finish_sft(messages, "messages"), None, None


def _side(value: Any, path: str, role: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return _turns(value, path)
    raise RecordError(path, f"wrong type: expected string or list of messages, got {_type_name(value)}")


COMPLETION_KEYS = ("completion", "response", "output", "answer")   # TRL's name first, then common ones
PROMPT_KEYS = ("prompt", "question")


def convert_prompt_completion(record: dict) -> Converted:
    pkey = next((k for k in PROMPT_KEYS if _has(record, k)), "prompt")
    prompt = _with_system(_finish_prompt(_side(_require(record, pkey), pkey, "user"), pkey), record)
    key = next((k for k in COMPLETION_KEYS if _has(record, k)), None)
    if key is None:
        raise RecordError("completion", f"missing required field 'completion' (or {', '.join(COMPLETION_KEYS[1:])})")
    completion = _side(record[key], key, "assistant")
    for i, m in enumerate(completion):
        if m["role"] != "assistant":
            raise RecordError(f"{key}[{i}]", f"completion must hold assistant turns, got '{m['role']}'")
    if not completion or not completion[-1]["content"].strip():
        raise RecordError(key, "empty response")
    return _finish_sft([*prompt, *completion], key), None, None


def convert_preference(record: dict) -> Converted:
    chosen_raw, rejected_raw = _require(record, "chosen"), _require(record, "rejected")
    if _has(record, "prompt"):  # TRL explicit prompt
        prompt = _side(record["prompt"], "prompt", "user")
        prompt_path = "prompt"
    elif _has(record, "conversations") or _has(record, "messages"):
        prompt_path = "conversations" if _has(record, "conversations") else "messages"  # LLaMA-Factory
        prompt = _with_system(_turns(record[prompt_path], prompt_path), record)
    elif _has(record, "instruction"):  # LLaMA-Factory alpaca-style preference
        prompt, prompt_path = _alpaca_prompt(record), "instruction"
    else:  # TRL implicit prompt: two full conversations sharing the prompt turns
        if not isinstance(chosen_raw, list) or not isinstance(rejected_raw, list):
            raise RecordError("prompt", "missing required field 'prompt' (chosen/rejected are not conversations)")
        chosen_turns, rejected_turns = _turns(chosen_raw, "chosen"), _turns(rejected_raw, "rejected")
        for name, turns in (("chosen", chosen_turns), ("rejected", rejected_turns)):
            if not turns or turns[-1]["role"] != "assistant":
                raise RecordError(name, "conversation must end with an assistant turn")
        k = 0
        while k < min(len(chosen_turns), len(rejected_turns)) and chosen_turns[k] == rejected_turns[k]:
            k += 1
        if k == len(chosen_turns) == len(rejected_turns):
            raise RecordError("rejected", "chosen and rejected are identical")
        if k != len(chosen_turns) - 1 or k != len(rejected_turns) - 1:
            raise RecordError("rejected", "chosen and rejected must differ only in the final assistant turn")
        prompt = _finish_prompt(chosen_turns[:k], "chosen")
        return prompt, chosen_turns[-1]["content"], rejected_turns[-1]["content"]
    prompt = _finish_prompt(prompt, prompt_path)
    chosen, rejected = _reply(chosen_raw, "chosen"), _reply(rejected_raw, "rejected")
    if chosen == rejected:
        raise RecordError("rejected", "chosen and rejected are identical")
    return prompt, chosen, rejected


def convert_text(record: dict) -> Converted:
    """TRL's plain ``text`` records: the whole text is what is learned (scored with no template, see prepare)."""
    text = _str(_require(record, "text"), "text")
    if not text.strip():
        raise RecordError("text", "empty text")
    return [{"role": "assistant", "content": text}], None, None


FORMATS: dict[str, Callable[[dict], Converted]] = {
    "alpaca": convert_alpaca,
    "sharegpt": convert_sharegpt,
    "messages": convert_messages,
    "prompt_completion": convert_prompt_completion,
    "preference": convert_preference,
    "text": convert_text,
}


# ---------------------------------------------------------------------------------------------
# detection


def _first_item(value: Any) -> dict:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    return {}


def guess_format(record: dict) -> str | None:
    """The format one record looks like, or None. Preference wins whenever chosen+rejected exist."""
    if _has(record, "chosen") and _has(record, "rejected"):
        return "preference"
    if any(_has(record, k) for k in PROMPT_KEYS) and any(_has(record, k) for k in COMPLETION_KEYS):
        return "prompt_completion"
    if _has(record, "messages"):
        first = _first_item(record["messages"])
        return "sharegpt" if "from" in first and "role" not in first else "messages"
    if _has(record, "conversations") or _has(record, "conversation"):
        return "sharegpt"
    if _has(record, "instruction") or (_has(record, "output") and _has(record, "input")):
        return "alpaca"
    if _has(record, "text") and isinstance(record["text"], str):
        return "text"
    return None


DETECT_VOTES = 100


def detect_format(records: list[dict]) -> str:
    """Majority vote over the first 100 records that look like a known format (records that look like none, e.g.
    broken objects at the top of a file, are passed over; ties go to the order of FORMATS)."""
    votes: Counter = Counter()
    sample = []
    for r in records:
        if not isinstance(r, dict):
            continue
        sample.append(r)
        guess = guess_format(r)
        if guess is not None:
            votes[guess] += 1
            if sum(votes.values()) >= DETECT_VOTES:
                break
    sample = sample[:DETECT_VOTES]
    if not votes:
        keys = sorted({str(k) for r in sample for k in r})
        seen = ", ".join(keys) if keys else "(no records)"
        raise DataError(
            f"could not detect the data format; keys seen: {seen}; supported formats: {', '.join(FORMATS)}"
        )
    order = list(FORMATS)
    return max(votes, key=lambda f: (votes[f], -order.index(f)))


def convert_record(record: dict, fmt: str) -> Converted:
    if fmt not in FORMATS:
        raise DataError(f"unknown format '{fmt}'; supported formats: {', '.join(FORMATS)}")
    if not isinstance(record, dict):
        raise RecordError("", "record is not a JSON object")
    return FORMATS[fmt](record)
