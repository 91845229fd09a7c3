"""Batched, left-padded generation against one prompt at a time; multi-turn answers see their own earlier turns."""

import torch

from siftlm.evaluate.generate import generate, generate_batch
from siftlm.evaluate.sets import EvalItem
from siftlm.models.load import load_model
from siftlm.models.template import prompt_ids


def test_batched_greedy_generation_equals_one_at_a_time(model_dir):
    lm = load_model(str(model_dir), device="cpu")
    items = [EvalItem(f"i{k}", ["word " * (1 + 3 * k)]) for k in range(6)]          # mixed prompt lengths
    batched = generate(lm, items, max_new_tokens=12, token_budget=10_000)
    for item, got in zip(items, batched, strict=True):
        one = generate_batch(lm.model, lm.tokenizer, [prompt_ids(lm.tokenizer, [{"role": "user", "content": item.turns[0]}])],
                             max_new_tokens=12)
        assert got == one


def test_multi_turn_items_are_answered_in_turn(model_dir, monkeypatch):
    lm = load_model(str(model_dir), device="cpu")
    seen = []
    import siftlm.evaluate.generate as gen

    def fake(model, tok, prompts, **k):
        seen.extend(tok.decode(p) for p in prompts)
        return [f"answer{len(seen) - len(prompts) + i}" for i in range(len(prompts))]

    monkeypatch.setattr(gen, "generate_batch", fake)
    out = generate(lm, [EvalItem("m", ["first q", "second q"]), EvalItem("s", ["only q"])], max_new_tokens=4)
    assert [len(a) for a in out] == [2, 1]
    second = [s for s in seen if "second q" in s][0]
    assert out[0][0] in second and "first q" in second                          # turn 2 sees its own turn-1 answer


def test_prompt_ids_end_with_the_generation_prompt(tokenizer):
    ids = prompt_ids(tokenizer, [{"role": "user", "content": "hi"}])
    assert tokenizer.decode(ids) == "<s><|user|>\nhi</s>\n<|assistant|>\n"
    assert torch.tensor(ids).dtype == torch.long
