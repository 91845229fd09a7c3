"""Render conversations to token ids with a response-only label mask.

The tokenizer's chat template is used when it has one, else the Alpaca prompt template.
Every assistant turn is a response (labels on); everything else is prompt (labels = -100).

Over-long examples follow one explicit policy (``max_length``): tokens are cut from the left of the
sequence (the oldest prompt text first) as long as no response token is cut; if the responses alone
no longer fit, the example is rejected with a reason, never silently dropped or truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

from siftlm.errors import UsageError

IGNORE = -100

ALPACA_RESPONSE_HEADER = "### Response:\n"
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
)


@dataclass
class Encoded:
    id: str
    input_ids: list[int]
    labels: list[int]          # IGNORE on prompt tokens, the token id on response tokens
    n_prompt: int              # tokens with labels == IGNORE
    n_response: int            # tokens with labels != IGNORE
    truncated: int = 0         # prompt tokens cut from the left by the max_length policy


class EncodeError(ValueError):
    """An example that cannot be encoded under the policy; carries the reject reason."""


def _alpaca_segments(messages: list[dict], eos: str) -> list[tuple[str, bool]]:
    """Alpaca template for tokenizers without a chat template; multi-turn repeats Instruction/Response."""
    system = " ".join(m["content"] for m in messages if m["role"] == "system")
    segs: list[tuple[str, bool]] = [((system + "\n\n") if system else ALPACA_PREAMBLE, False)]
    for m in messages:
        if m["role"] == "user":
            segs.append((f"### Instruction:\n{m['content']}\n\n{ALPACA_RESPONSE_HEADER}", False))
        elif m["role"] == "assistant":
            segs.append((m["content"] + eos, True))
            segs.append(("\n\n", False))
    if segs[-1] == ("\n\n", False):
        segs.pop()
    return segs


def _render(tokenizer, msgs: list[dict], gen: bool) -> str:
    try:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
    except Exception as e:  # e.g. jinja's raise_exception("roles must alternate"): one reject, not a crash
        raise EncodeError(f"chat template rejected the conversation: {e}") from e


def _chat_segments(tokenizer, messages: list[dict]) -> list[tuple[str, bool]]:
    """Split the chat-template rendering into prompt and response text by rendering each prefix.

    The response text of assistant turn k is render(messages[:k+1]) minus render(messages[:k], generation prompt):
    the content and the template's end-of-turn marker (which the model must learn to emit). Whitespace the template
    writes after the marker (ChatML's "\n" after "<|im_end|>") is never generated, so it is prompt, not response.
    """
    segs: list[tuple[str, bool]] = []
    done = ""
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:k], True)
        full = _render(tokenizer, messages[: k + 1], False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise EncodeError("chat template does not render conversations prefix-consistently")
        response = full[len(prompt):]
        body = response.rstrip()
        segs += [(prompt[len(done):], False), (body, True), (response[len(body):], False)]
        done = full
    return [s for s in segs if s[0]]


TEMPLATES = ("auto", "chat", "alpaca", "plain")
LOSS_ON = ("assistant", "completion", "all")


def _plain_segments(messages: list[dict], eos: str) -> list[tuple[str, bool]]:
    """No template: the contents one after another (blank line between), assistant text labelled, EOS after the last
    one (TRL's plain ``text`` datasets train on the text as it is)."""
    segs = []
    for i, m in enumerate(messages):
        last = i == len(messages) - 1
        segs.append((m["content"] + (eos if last and m["role"] == "assistant" else ""), m["role"] == "assistant"))
        if not last:
            segs.append(("\n\n", False))
    return segs


def _use_chat(tokenizer, template: str) -> bool:
    if template not in TEMPLATES:
        raise UsageError(f"unknown template {template!r}; known: {', '.join(TEMPLATES)}")
    return template == "chat" or bool(template == "auto" and getattr(tokenizer, "chat_template", None))


def response_headers(tokenizer, messages: list[dict], *, template: str = "auto") -> list[str]:
    """The text the template puts right before each assistant turn, without the conversation before it: the
    generation prompt (ChatML's "<|im_start|>assistant\n", Llama 3's "<|start_header_id|>assistant<|end_header_id|>
    \n\n", Alpaca's "### Response:\n"). Empty when the template adds nothing for a generation prompt."""
    if template == "plain":
        return ["" for m in messages if m["role"] == "assistant"]
    if not _use_chat(tokenizer, template):
        return [ALPACA_RESPONSE_HEADER for m in messages if m["role"] == "assistant"]
    headers = []
    for k, m in enumerate(messages):
        if m["role"] == "assistant":
            with_gen, without = _render(tokenizer, messages[:k], True), _render(tokenizer, messages[:k], False)
            headers.append(with_gen[len(without):] if with_gen.startswith(without) else "")
    return headers


def _loss_on(segs: list[tuple[str, bool]], messages: list[dict], loss_on: str) -> list[tuple[str, bool]]:
    """Which pieces are labelled: every assistant turn, only the completion (the trailing run of assistant turns,
    after the last user turn: what TRL trains on prompt/completion data), or every token."""
    if loss_on == "assistant":
        return segs
    if loss_on == "all":
        return [(t, True) for t, _ in segs]
    if loss_on != "completion":
        raise UsageError(f"unknown loss_on {loss_on!r}; known: {', '.join(LOSS_ON)}")
    responses = [i for i, (_, r) in enumerate(segs) if r]
    keep = set(responses[len(responses) - _completion_turns(messages):])
    return [(t, i in keep) for i, (t, _) in enumerate(segs)]


def _completion_turns(messages: list[dict]) -> int:
    """How many assistant turns end the conversation (after its last non-assistant turn)."""
    n = 0
    while n < len(messages) and messages[len(messages) - 1 - n]["role"] == "assistant":
        n += 1
    return n


def segments(tokenizer, messages: list[dict], *, template: str = "auto", loss_on: str = "assistant") -> list[tuple[str, bool]]:
    """(text, is_response) pieces of one conversation. ``template``: auto | chat | alpaca | plain; ``loss_on``:
    assistant (every assistant turn) | completion (the trailing assistant turns) | all (every token)."""
    return _loss_on(_segments(tokenizer, messages, template), messages, loss_on)


def _segments(tokenizer, messages: list[dict], template: str) -> list[tuple[str, bool]]:
    if template == "plain":
        return _plain_segments(messages, tokenizer.eos_token or "")
    if _use_chat(tokenizer, template):
        return _chat_segments(tokenizer, messages)
    return _alpaca_segments(messages, tokenizer.eos_token or "")


def _bos(tokenizer) -> list[int]:
    """The BOS id when the tokenizer would add one itself and the text does not already start with it."""
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None and probe and probe[0] == bos else []


def _tokenize(tokenizer, segs: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    """Tokenise the rendered text in one call (as a trainer would) and label the tokens that overlap a
    response span, using the fast tokenizer's character offsets. Slow tokenizers fall back to tokenising
    piece by piece (exact masks, but merges across piece boundaries may differ from one call)."""
    if not getattr(tokenizer, "is_fast", False):
        ids, labels = [], []
        for text, is_resp in segs:
            toks = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += toks
            labels += toks if is_resp else [IGNORE] * len(toks)
        return ids, labels
    spans, pos = [], 0
    for text, is_resp in segs:
        if is_resp:
            spans.append((pos, pos + len(text)))
        pos += len(text)
    enc = tokenizer("".join(t for t, _ in segs), add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for tok, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        inside = any((max(a, s0) < min(b, s1)) if b > a else (s0 <= a < s1) for s0, s1 in spans)
        labels.append(tok if inside else IGNORE)
    return list(enc["input_ids"]), labels


def prompt_ids(tokenizer, messages: list[dict], *, template: str = "auto") -> list[int]:
    """Token ids of a conversation that ends with a user turn, followed by the template's generation prompt: what a
    model continues to answer (the same rendering and BOS rule as ``encode``)."""
    if template == "plain":
        text = "".join(t for t, _ in _plain_segments(messages, "")) + "\n\n"
    elif _use_chat(tokenizer, template):
        text = _render(tokenizer, messages, True)
    else:
        text = "".join(t for t, _ in _alpaca_segments(messages, tokenizer.eos_token or ""))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = _bos(tokenizer)
    return bos + ids if bos and not (ids and ids[0] == bos[0]) else ids


def encode(tokenizer, example_id: str, messages: list[dict], *, max_length: int | None = None,
           template: str = "auto", loss_on: str = "assistant") -> Encoded:
    """Token ids and labels for one conversation: loss on every assistant turn (``loss_on``: see ``segments``)."""
    segs = segments(tokenizer, messages, template=template, loss_on=loss_on)
    ids, labels = _tokenize(tokenizer, segs)
    bos = _bos(tokenizer)
    if bos and not (ids and ids[0] == bos[0]):
        ids, labels = bos + ids, [IGNORE] + labels
    keep = 1 if ids and ids[0] == tokenizer.bos_token_id else 0
    return _apply_max_length(example_id, ids, labels, max_length, keep=keep)


def encode_response_only(tokenizer, example_id: str, messages: list[dict], *, max_length: int | None = None,
                         template: str = "auto", loss_on: str = "assistant") -> Encoded:
    """The responses without their prompts, for s(A) in IFD: BOS (or EOS when there is no BOS), then for every
    assistant turn its response header (unlabelled) and its response (labelled, exactly as ``encode`` labels it).

    The header follows Cherry LLM's released script, which scores "### Response:" + answer: the model is told a
    response follows, so IFD = s(A|Q) / s(A) measures what the instruction adds, not what the template's role
    marker adds. With a chat template the header is its generation prompt (``response_headers``).
    """
    responses = [text for text, is_resp in segments(tokenizer, messages, template=template) if is_resp]
    headers = response_headers(tokenizer, messages, template=template)
    turns = list(zip(headers, responses, strict=True))
    if loss_on == "completion":                      # only the turns the conditional pass scores
        turns = turns[len(turns) - _completion_turns(messages):]
    segs = [s for h, r in turns for s in ((h, False), (r, True)) if s[0]]
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids, labels = _tokenize(tokenizer, segs)
    return _apply_max_length(example_id, [start] + ids, [IGNORE] + labels, max_length, keep=1)


def _apply_max_length(example_id: str, ids: list[int], labels: list[int], max_length: int | None,
                      *, keep: int = 0) -> Encoded:
    """Cut ``len - max_length`` prompt tokens from the left, after the first ``keep`` tokens (the BOS),
    or reject when that would cut a response token or the position that predicts the first one."""
    n_resp = sum(1 for t in labels if t != IGNORE)
    if n_resp == 0:
        raise EncodeError("no response tokens after tokenisation")
    cut = 0
    if max_length is not None and len(ids) > max_length:
        cut = len(ids) - max_length
        first_resp = next(i for i, t in enumerate(labels) if t != IGNORE)
        # position first_resp is predicted from position first_resp-1, which must stay in the window
        if cut > first_resp - 1 - keep:
            raise EncodeError(
                f"response does not fit in max_length={max_length}: {len(ids)} tokens, "
                f"{n_resp} of them response; cutting the prompt from the left is not enough"
            )
        ids, labels = ids[:keep] + ids[keep + cut:], labels[:keep] + labels[keep + cut:]
    return Encoded(example_id, ids, labels, len(ids) - n_resp, n_resp, cut)


@dataclass
class EncodedPair:
    id: str
    prompt_ids: list[int]
    chosen_ids: list[int]      # the chosen response's tokens (with the template's end-of-turn marker)
    rejected_ids: list[int]
    truncated: int = 0         # prompt tokens cut from the left by the max_length policy

    def sequences(self) -> tuple[Encoded, Encoded]:
        """(prompt + chosen, prompt + rejected) for the loss engine, labels on the response only."""
        p = len(self.prompt_ids)
        return tuple(Encoded(self.id, self.prompt_ids + r, [IGNORE] * p + r, p, len(r), self.truncated)
                     for r in (self.chosen_ids, self.rejected_ids))


def _last_response(enc: Encoded) -> tuple[int, int]:
    """[start, stop) of the last run of labelled tokens: the final assistant turn."""
    stop = max(i for i, t in enumerate(enc.labels) if t != IGNORE) + 1
    start = stop
    while start > 0 and enc.labels[start - 1] != IGNORE:
        start -= 1
    return start, stop


def encode_pair(tokenizer, example_id: str, messages: list[dict], chosen: str, rejected: str, *,
                max_length: int | None = None, template: str = "auto") -> EncodedPair:
    """One prompt and two responses as token ids, shared prompt, as DPO trains on them.

    Each of prompt + chosen and prompt + rejected is rendered and tokenised as ``encode`` does; the final
    assistant turn's labelled tokens are the response (with the template's end-of-turn marker, e.g. ChatML's
    "<|im_end|>", exactly as SFT labels it); unlabelled tokens after it are dropped. The prompt
    must tokenise identically in both, else the pair is rejected. Over ``max_length``, the prompt is cut
    from the left (after the BOS) by what the longer response needs, so both keep the same prompt.
    """
    encs = [encode(tokenizer, example_id, messages + [{"role": "assistant", "content": r}], template=template)
            for r in (chosen, rejected)]
    spans = [_last_response(e) for e in encs]
    prompts = [e.input_ids[:s] for e, (s, _) in zip(encs, spans, strict=True)]
    if prompts[0] != prompts[1]:
        raise EncodeError("the prompt tokenises differently before the chosen and the rejected response")
    prompt = prompts[0]
    responses = [e.input_ids[s:t] for e, (s, t) in zip(encs, spans, strict=True)]
    longest = len(prompt) + max(len(r) for r in responses)
    cut = 0
    if max_length is not None and longest > max_length:
        keep = 1 if prompt and prompt[0] == tokenizer.bos_token_id else 0
        cut = longest - max_length
        if cut > len(prompt) - 1 - keep:
            raise EncodeError(f"response does not fit in max_length={max_length}: prompt {len(prompt)} tokens, "
                              f"longer response {max(len(r) for r in responses)}; cutting the prompt is not enough")
        prompt = prompt[:keep] + prompt[keep + cut:]
    return EncodedPair(example_id, prompt, responses[0], responses[1], cut)
