"""Tiny randomly initialised models and a byte-level tokenizer built in code: nothing downloads."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def byte_tokenizer(chat_template: str | None = CHAT_TEMPLATE):
    """One token per byte plus <s>, </s>, <pad>; optional chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])  # adds BOS like Llama
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


def tiny_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).float().eval()
    return model


@pytest.fixture(scope="session")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture(scope="session")
def model(tokenizer):
    return tiny_llama(len(tokenizer))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer, model):
    """The tiny model and tokenizer saved as a normal transformers folder (safetensors)."""
    d = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(d, safe_serialization=True)
    tokenizer.save_pretrained(d)
    return d


def alpaca_rows(n: int, seed: int = 0) -> list[dict]:
    """Synthetic Alpaca records of mixed lengths (deterministic)."""
    import random

    rng = random.Random(seed)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    rows = []
    for i in range(n):
        instr = f"Task {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(2, 12)))
        out = " ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))
        rows.append({"instruction": instr, "input": "" if i % 3 else "ctx " + words[i % 12], "output": out})
    return rows


@pytest.fixture
def alpaca_file(tmp_path):
    path = tmp_path / "alpaca.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in alpaca_rows(24)) + "\n")
    return path


def pair_rows(n: int, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    return [{"prompt": f"Q{i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 10))),
             "chosen": " ".join(rng.choice(words) for _ in range(rng.randint(1, 25))),
             "rejected": "no " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 25)))} for i in range(n)]


@pytest.fixture
def pair_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(16)))
    return path


# `--dtype auto` means fp32 in every test and every process a test starts (the environment is inherited): the suite's
# exact comparisons are written for fp32, and no test may depend on a timing (tests/models/test_precision.py checks the
# decision itself, with the pin removed and the probe injected).
os.environ["SIFTLM_AUTO_DTYPE"] = "float32"


def run_killed(tmp_path, source: str, *args) -> None:
    """Run ``source`` as a script in a fresh process (this test's sys.path) and check that it killed itself with
    SIGKILL at the point it injects: what every kill -9 test starts with."""
    import subprocess
    import sys

    script = tmp_path / "killed.py"
    script.write_text(source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, str(script), *map(str, args)], env=env, capture_output=True)
    assert res.returncode == -9, res.stderr.decode()[-2000:]


def runs_script(name: str):
    """A script of ``runs/`` (e.g. "evidence") imported as a module, for testing its functions."""
    path = Path(__file__).resolve().parents[1] / "runs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"runs_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
