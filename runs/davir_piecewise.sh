#!/usr/bin/env bash
# The DavIR pipeline piece by piece on your own data: the same steps `siftlm demo` runs in one call.
# usage: runs/davir_piecewise.sh DATA.jsonl [MODEL] [OUT]
set -euo pipefail
DATA=${1:?usage: $0 DATA [MODEL] [OUT]}
MODEL=${2:-builtin:smollm2}
OUT=${3:-siftlm-run}
STORE=$OUT/store

siftlm inspect "$DATA" --rejects "$OUT/rejects.jsonl"
siftlm signals "$DATA" --model "$MODEL" --store "$STORE"                  # base losses (P_0)
siftlm signals "$DATA" --model "$MODEL" --store "$STORE" --pass uncond    # responses alone, for IFD
siftlm train   "$DATA" --model "$MODEL" --store "$STORE" --out "$OUT/reference" --epochs 2
siftlm score   "$DATA" --model "$MODEL" --store "$STORE" --out "$OUT" --reference "$OUT/reference"  # reuses all above
siftlm select  "$OUT/scores.parquet" --data "$DATA" --by davir --budget 0.1 --out "$OUT/davir-10pct"
siftlm select  "$OUT/scores.parquet" --data "$DATA" --by lp_app --budget 0.1 --out "$OUT/lp_app-10pct"
