#!/usr/bin/env bash
# The GPU check (bench/gpu.py): the loss pass, a LoRA model's merged evaluation, the LoRA training step, the grads pass
# and batched generation on builtin:smollm2, each against the per-example loop (tok/s, MFU against the GPU's bf16
# peak, peak GPU memory), plus the 2-process DDP equality test under NCCL when 2 GPUs exist; under 8 minutes.
#
#   bench/gpu.sh              # on a CUDA machine with the project's venv
#   bench/gpu.sh --dry-run    # what it would run; exits 0, saying so, on a machine without a GPU
#   bench/gpu.sh --only loss,train --n-loss 200
#
# The interpreter: $PYTHON, else the repository's .venv, else python3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py="python3"; fi
fi
cd "$root"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" bench/gpu.py "$@"
