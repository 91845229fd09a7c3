"""Benchmark: the two embedding passes against per-example loops, side by side in one run.

embed     all-MiniLM-L6-v2 (sentence-transformers) on real alpaca_en_demo texts: siftlm sorts all texts by
          length and encodes batches (8 on CPU), vs one `model.encode([text])` call per example.
lm-embed  mean last hidden state over response tokens of SmolLM2-135M: siftlm's token-budget batches (length
          buckets, padding masked), vs a batch-size-1 loop over `model.model(input_ids)`.
fused     the base loss pass and lm-embed from one forward (``run_pass("loss", also=("lm-embed",))``) against the
          two engine passes run one after the other: seconds for both, and the agreement of each result.
Agreement: max |difference| between the two results of each pair. Peak memory: the process's peak RSS at the end.

    python bench/embed.py --n 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import cpu_record, save_result
from siftlm.assets import demo_data
from siftlm.config import SignalConfig
from siftlm.data import read_dataset
from siftlm.models.load import load_model, load_sentence_model
from siftlm.models.template import IGNORE
from siftlm.progress import peak_rss_gb
from siftlm.signals.embed import lm_embed_pass
from siftlm.signals.losses import loss_pass
from siftlm.signals.prepare import prepare
from siftlm.signals.sentence import example_text, sentence_embed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--model", default="builtin:smollm2")
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()
    ds = read_dataset(demo_data("alpaca_en_demo"))
    res = {**cpu_record(), "threads": torch.get_num_threads()}

    st = load_sentence_model("builtin:all-minilm-l6-v2", device="cpu").model
    texts = [example_text(e) for e in ds.examples[:args.n]]
    sentence_embed(st, texts[:8])
    t = time.perf_counter()
    loop = np.stack([st.encode([x], normalize_embeddings=True, convert_to_numpy=True)[0] for x in texts])
    t_loop = time.perf_counter() - t
    t = time.perf_counter()
    ours = sentence_embed(st, texts)
    t_ours = time.perf_counter() - t
    res.update({"embed_n": len(texts), "embed_loop_ex_s": round(len(texts) / t_loop, 1),
                "embed_ex_s": round(len(texts) / t_ours, 1), "embed_ratio": round(t_loop / t_ours, 2),
                "embed_max_abs_diff": float(np.abs(loop - ours).max())})

    lm = load_model(args.model)
    lm.computing().__enter__()              # the rest runs in the handle's precision, as a pass does
    enc = prepare(ds, lm.tokenizer, SignalConfig(limit=args.n, max_length=512, progress=False)).encoded
    decoder = lm.model.get_decoder()
    tokens = sum(len(e.input_ids) for e in enc)
    lm_embed_pass(lm.model, enc[:4], pad_id=lm.tokenizer.pad_token_id)
    t = time.perf_counter()
    with torch.inference_mode():
        loop = []
        for e in enc:
            h = decoder(input_ids=torch.tensor([e.input_ids])).last_hidden_state[0]
            mask = torch.tensor(e.labels) != IGNORE
            loop.append(h[mask].mean(0).numpy())
    t_loop = time.perf_counter() - t
    t = time.perf_counter()
    ours = np.stack(lm_embed_pass(lm.model, enc, pad_id=lm.tokenizer.pad_token_id, token_budget=4096)["vector"])
    t_ours = time.perf_counter() - t
    res.update({"lm_embed_n": len(enc), "lm_embed_tokens": tokens, "lm_embed_loop_tok_s": round(tokens / t_loop, 1),
                "lm_embed_tok_s": round(tokens / t_ours, 1), "lm_embed_ratio": round(t_loop / t_ours, 2),
                "lm_embed_max_abs_diff": float(np.abs(np.stack(loop) - ours).max())})
    t = time.perf_counter()
    loss_alone = loss_pass(lm.model, enc, pad_id=lm.tokenizer.pad_token_id, token_budget=4096)
    embed_alone = np.stack(lm_embed_pass(lm.model, enc, pad_id=lm.tokenizer.pad_token_id, token_budget=4096)["vector"])
    t_two = time.perf_counter() - t
    t = time.perf_counter()
    both = loss_pass(lm.model, enc, pad_id=lm.tokenizer.pad_token_id, token_budget=4096, embed=True)
    t_one = time.perf_counter() - t
    res.update({"fused_two_passes_s": round(t_two, 2), "fused_one_forward_s": round(t_one, 2),
                "fused_ratio": round(t_two / t_one, 2),
                "fused_loss_max_abs_diff": float(np.abs(both["loss"] - loss_alone["loss"]).max()),
                "fused_vector_max_abs_diff": float(np.abs(np.stack(both["vector"]) - embed_alone).max()),
                "peak_rss_gb": round(peak_rss_gb(), 2)})
    print(f"{'':12s}{'per-example loop':>18s}{'siftlm':>10s}{'ratio':>8s}")
    print(f"{'embed':12s}{res['embed_loop_ex_s']:14.1f} ex/s{res['embed_ex_s']:6.1f} ex/s{res['embed_ratio']:7.2f}x")
    print(f"{'lm-embed':12s}{res['lm_embed_loop_tok_s']:13.1f} tok/s{res['lm_embed_tok_s']:5.1f} tok/s"
          f"{res['lm_embed_ratio']:7.2f}x")
    print(f"{'loss+lm-embed':12s}{'two passes':>14s} {res['fused_two_passes_s']:.1f} s, one forward "
          f"{res['fused_one_forward_s']:.1f} s: {res['fused_ratio']:.2f}x (max |diff| loss "
          f"{res['fused_loss_max_abs_diff']:.1e}, vector {res['fused_vector_max_abs_diff']:.1e}); peak RSS "
          f"{res['peak_rss_gb']} GB")
    save_result(args.out, "embed-cpu", res)


if __name__ == "__main__":
    main()
