"""Model passes that leave per-example signals in the store (``siftlm.signals.passes``), the fine-tuning
trajectory, and the signals table that scores read. Importing the package itself is light (no torch), so the
CLI can show the pass names in its help."""

PASS_HELP = {
    "loss": "per-example response loss, entropy, EL2N, accuracy",
    "uncond": "the same for the response without its prompt (IFD's denominator)",
    "lm-embed": "mean last hidden state of the causal LM over response tokens",
    "grads": "LoRA-gradient features (sparse JL projected) and the gradient norm",
    "pairs": "preference pairs: log-probs of chosen and rejected under the reference (the model) and, with "
             "--adapter, the policy, plus the dpo_margin and davir_margin scores",
    "embed": "sentence embedding (sentence-transformers; default all-MiniLM-L6-v2)",
}
