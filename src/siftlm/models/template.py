"""Render conversations to token ids with a response-only label mask.

The tokenizer's chat template is used when it has one, else the Alpaca prompt template.
Every assistant turn is a response (labels on); everything else is prompt (labels = -100).

Over-long examples follow one explicit policy (``max_length``): tokens are cut from the left of the
sequence (the oldest prompt text first) as long as no response token is cut; if the responses alone
no longer fit, the example is rejected with a reason, never silently dropped or truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE = -100

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
            segs.append((f"### Instruction:\n{m['content']}\n\n### Response:\n", False))
        elif m["role"] == "assistant":
            segs.append((m["content"] + eos, True))
            segs.append(("\n\n", False))
    if segs[-1] == ("\n\n", False):
        segs.pop()
    return segs


def _chat_segments(tokenizer, messages: list[dict]) -> list[tuple[str, bool]]:
    """Split the chat-template rendering into prompt and response text by rendering each prefix.

    The response text of assistant turn k is render(messages[:k+1]) minus render(messages[:k], generation prompt),
    so it includes the template's end-of-turn marker (which the model must learn to emit).
    """
    def render(msgs, gen):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    segs: list[tuple[str, bool]] = []
    done = ""
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(messages[:k], True)
        full = render(messages[: k + 1], False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise EncodeError("chat template does not render conversations prefix-consistently")
        segs.append((prompt[len(done):], False))
        segs.append((full[len(prompt):], True))
        done = full
    return [s for s in segs if s[0]]


def segments(tokenizer, messages: list[dict], *, template: str = "auto") -> list[tuple[str, bool]]:
    """(text, is_response) pieces of one conversation. ``template``: auto | chat | alpaca."""
    use_chat = template == "chat" or (template == "auto" and getattr(tokenizer, "chat_template", None))
    if use_chat:
        return _chat_segments(tokenizer, messages)
    return _alpaca_segments(messages, tokenizer.eos_token or "")


def _bos(tokenizer) -> list[int]:
    """The BOS id when the tokenizer would add one itself and the text does not already start with it."""
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None and probe and probe[0] == bos else []


def encode(tokenizer, example_id: str, messages: list[dict], *, max_length: int | None = None,
           template: str = "auto") -> Encoded:
    """Token ids and response-only labels for one conversation (loss on every assistant turn)."""
    ids: list[int] = []
    labels: list[int] = []
    segs = segments(tokenizer, messages, template=template)
    bos = _bos(tokenizer)
    if bos and not (segs and tokenizer.bos_token and segs[0][0].startswith(tokenizer.bos_token)):
        ids += bos
        labels += [IGNORE]
    for text, is_resp in segs:
        toks = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += toks
        labels += toks if is_resp else [IGNORE] * len(toks)
    return _apply_max_length(example_id, ids, labels, max_length)


def encode_response_only(tokenizer, example_id: str, messages: list[dict], *,
                         max_length: int | None = None, template: str = "auto") -> Encoded:
    """The responses without their prompts, for P(y) in IFD: BOS (or EOS when there is no BOS) then the
    response pieces exactly as tokenised in ``encode``, so both passes score the same response tokens."""
    segs = [s for s in segments(tokenizer, messages, template=template) if s[1]]
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids, labels = [start], [IGNORE]
    for text, _ in segs:
        toks = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += toks
        labels += toks
    return _apply_max_length(example_id, ids, labels, max_length)


def _apply_max_length(example_id: str, ids: list[int], labels: list[int], max_length: int | None) -> Encoded:
    n_resp = sum(1 for t in labels if t != IGNORE)
    if n_resp == 0:
        raise EncodeError("no response tokens after tokenisation")
    cut = 0
    if max_length is not None and len(ids) > max_length:
        cut = len(ids) - max_length
        first_resp = next(i for i, t in enumerate(labels) if t != IGNORE)
        # position first_resp is predicted from position first_resp-1, which must stay in the window
        if cut > first_resp - 1:
            raise EncodeError(
                f"response does not fit in max_length={max_length}: {len(ids)} tokens, "
                f"{n_resp} of them response; cutting the prompt from the left is not enough"
            )
        ids, labels = ids[cut:], labels[cut:]
    return Encoded(example_id, ids, labels, len(ids) - n_resp, n_resp, cut)
