"""Evaluation of a trained model: held-out response loss, batched generation, an OpenAI-compatible judge, and the
statistics that make comparisons honest (bootstrap CIs, paired differences, length-controlled win rates)."""
