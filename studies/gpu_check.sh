#!/usr/bin/env bash
# One short script for a machine with a CUDA GPU (< 8 minutes): 2:4 GEMM timings for LLaMA-7B shapes (paper
# Table 16) and the paper's calibration protocol (128 x 2048) on the embedded model. Writes JSON under $1.
# Budget: GEMM timings (< 1 min) + four prunings capped at 100 s each.
# Usage: studies/gpu_check.sh OUT_DIR      (needs `make setup` first; on a CPU it says what it would do and stops)
set -euo pipefail
OUT="${1:?usage: studies/gpu_check.sh OUT_DIR}"
cd "$(dirname "$0")/.."
# Our venv where it exists; on a lent GPU machine, its own python (torch 2.11, transformers 5.17) with
# the GGUF joined by `python3 -m studies.gpu_transfer unpack` and D2P_SMOLLM2_GGUF_DIR=data/transfer.
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: would time dense vs 2:4 GEMMs (4096x4096, 11008x4096, 4096x11008; 2048 tokens; fp16)"
  echo "and prune smollm2-135m with sparsegpt and d2prune at 50% and 2:4 on 128 x 2048 news windows (cuda, fp16)."
  exit 0
fi
$PY - "$OUT" <<'PY'
import json, sys, torch
from d2p_helpers.speed import time_gemms
out = sys.argv[1]
json.dump({"gemm_fp16": time_gemms(2048, torch.float16), "gemm_bf16": time_gemms(2048, torch.bfloat16)},
          open(f"{out}/gemm_2_4.json", "w"), indent=2)
print(open(f"{out}/gemm_2_4.json").read())
PY
for m in sparsegpt d2prune; do
  for shape in "--sparsity 0.5" "--pattern 2:4"; do
    tag=$(echo "$m $shape" | tr -c 'a-z0-9' '_')
    timeout 100 $PY -m d2p_helpers.cli prune --model smollm2-135m --dtype float16 --device cuda --method $m $shape \
      --calib news --nsamples 128 --seqlen 2048 --eval wiki,news:val --out "$OUT/paper_protocol_$tag.json" --no-progress \
      || echo "run $m $shape did not finish in time"
  done
done
PY_DONE=1
echo "gpu_check done: $OUT"
