#!/usr/bin/env bash
# GPU check, for a machine with one CUDA GPU (prepared for an H100; budget < 8 minutes). Not run in CI and
# never run on this project's CPU machines. Writes every result under ${OUT:-gpu_check_out}/:
#   1. trainer MFU, llama-100m and llama-300m, bf16 autocast + torch.compile, seq 2048 (target >= 45%,
#      torchtitan's figure for Llama on H100)                                     -> train_mfu.json
#   2. our model's logits against HF LlamaForCausalLM on the GPU (random llama-100m shape, fp32 and bf16)
#                                                                                  -> logits_vs_hf.json
#   3. transformers-backend generation throughput, SmolLM2-135M, batch 64/128/256, bf16 -> generation.json
#   4. a real mini study end to end (reports/studies/gpu.toml: 10-20M tokens per run) -> study.json, report.html
# Usage: bash benchmarks/gpu_check.sh   (from the repository root, with .venv set up by scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
t0=$SECONDS
step() { echo "== $1 ($((SECONDS - t0)) s)"; }

step "1. trainer MFU"
timeout 150 $PY benchmarks/train.py --presets debugmodel --variants ours --repeats 1 --steps 1 --warmup 1 \
    --gpu-preset llama-100m,llama-300m --gpu-seq-len 2048 --gpu-batch-size 16 --json > "$OUT/train_mfu.json" \
    || echo "train MFU failed or timed out" | tee -a "$OUT/errors.txt"

step "2. logits vs HF"
timeout 60 $PY - > "$OUT/logits_vs_hf.json" <<'PYEOF' || echo "logits check failed" | tee -a "$OUT/errors.txt"
import json, torch
from transformers import LlamaConfig, LlamaForCausalLM
from train.model import from_hf
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=32768, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=2048,
                  rope_theta=500000.0, attn_implementation="sdpa")
hf = LlamaForCausalLM(cfg).cuda().eval()
ours = from_hf(hf.cpu()).cuda().eval()
hf.cuda()
x = torch.randint(0, cfg.vocab_size, (4, 1024), device="cuda")
out = {}
for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        a, b = ours(x).float(), hf(input_ids=x).logits.float()
    out[name] = {"max_abs_diff": (a - b).abs().max().item(), "logit_std": b.std().item()}
print(json.dumps(out))
PYEOF
cat "$OUT/logits_vs_hf.json" || true

step "3. generation throughput"
timeout 150 $PY benchmarks/synth.py --device cuda --dtypes bf16 --batch-sizes 64,128,256 --n-docs 256 \
    --max-new-tokens 128 --max-chunk-tokens 320 --no-single --repeats 1 --json > "$OUT/generation.json" \
    || echo "generation benchmark failed or timed out" | tee -a "$OUT/errors.txt"

step "4. mini study"
timeout 240 $PY -m reports study --config reports/studies/gpu.toml --store "$OUT/gpu_store" \
    --out "$OUT/report.html" --json > "$OUT/study.json" \
    || echo "mini study failed or timed out" | tee -a "$OUT/errors.txt"
rm -rf "$OUT/gpu_store/artifacts/mixtures" "$OUT/gpu_store/artifacts/cache" 2>/dev/null || true
step "done"
