"""Batched generation with the model's chat template: left-padded token-budget batches, greedy by default.

Multi-turn items (MT-bench) are answered turn by turn, each turn conditioned on the model's own earlier answers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from siftlm.evaluate.sets import EvalItem
from siftlm.models import precision
from siftlm.models.batching import plan_batches
from siftlm.models.forward import device_of, evaluating
from siftlm.models.merge import merged
from siftlm.models.precision import autocast
from siftlm.models.template import prompt_ids


def _stop_ids(model, tokenizer) -> list[int]:
    """Every token that ends a turn: the tokenizer's EOS and the generation config's EOS ids."""
    ids = {tokenizer.eos_token_id}
    cfg_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(cfg_eos if isinstance(cfg_eos, list) else [cfg_eos])
    return sorted(i for i in ids if i is not None)


@torch.inference_mode()
def generate_batch(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int, sample: bool = False,
                   temperature: float = 0.7, top_p: float = 0.9) -> list[str]:
    """Continue each prompt (token ids); returns the new text of each, special tokens removed."""
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):                 # left padding: every prompt ends where generation starts
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    device = device_of(model)
    kwargs = {"do_sample": True, "temperature": temperature, "top_p": top_p} if sample else {"do_sample": False}
    with autocast(model):
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             eos_token_id=_stop_ids(model, tokenizer), pad_token_id=pad, **kwargs)
    return [tokenizer.decode(o[width:], skip_special_tokens=True).strip() for o in out.cpu()]


def generate(lm, items: list[EvalItem], *, max_new_tokens: int = 256, template: str = "auto", sample: bool = False,
             seed: int = 0, token_budget: int = 4096, on_batch: Callable[[int], None] | None = None) -> list[list[str]]:
    """The model's answer to every turn of every item, in item order."""
    model, tok = lm.model, lm.tokenizer
    torch.manual_seed(seed)
    answers: list[list[str]] = [[] for _ in items]
    # a LoRA model generates at the base model's speed (models.merge), in the handle's compute precision
    with evaluating(model), merged(model), precision.computing(lm.compute):
        for turn in range(max(len(i.turns) for i in items)):
            todo = [k for k, i in enumerate(items) if turn < len(i.turns)]
            prompts = []
            for k in todo:
                msgs = [{"role": "system", "content": items[k].system}] if items[k].system else []
                for q, a in zip(items[k].turns[:turn], answers[k], strict=True):
                    msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                prompts.append(prompt_ids(tok, msgs + [{"role": "user", "content": items[k].turns[turn]}],
                                          template=template))
            lengths = [len(p) + max_new_tokens for p in prompts]       # the batch grows by max_new_tokens
            for index in plan_batches(lengths, token_budget, max_spread=0.2):
                texts = generate_batch(model, tok, [prompts[j] for j in index], max_new_tokens=max_new_tokens,
                                       sample=sample)
                for j, text in zip(index, texts, strict=True):
                    answers[todo[j]].append(text)
                if on_batch:
                    on_batch(len(index))
    return answers
