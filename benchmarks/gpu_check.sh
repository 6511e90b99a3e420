#!/usr/bin/env bash
# The GPU check: one script, under 10 minutes on one GPU, that writes every result under $OUT.
#
#   1. build the package with the CUDA layout kernels and -Werror;
#   2. the GPU tests (pytest -m gpu, plus the CUDA paths of the layout-kernel tests);
#   3. single-device throughput and MFU of a ~1B LLaMA (bf16, SDPA; flash-attn when installed);
#   4. fidelity on the GPU: every 1-device plan of that model (checkpointing none / selective /
#      full) run with `galvatron check` (predicted vs measured step time and
#      torch.cuda.max_memory_allocated), and the same plans with `galvatron check --fake`
#      (the runtime on fake tensors) against the same measured peaks.
#
# Run it first whenever a GPU is lent (device tool):  bash benchmarks/gpu_check.sh
# Files in $OUT: gpu_check.log, gpu_tests.xml, throughput.jsonl, fidelity.jsonl (one line per
# plan and mode). Copy the figures into benchmarks/results/ with the date.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8
LOG="$OUT/gpu_check.log"
PY="${PYTHON:-python3}"
step() { echo "== $(date +%T) $*" | tee -a "$LOG"; }

step "device"
nvidia-smi >>"$LOG" 2>&1
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$LOG"

step "build with CUDA and -Werror"
if ! "$PY" -m pip install -q --no-build-isolation --no-deps -e . \
    -Ccmake.define.GALVATRON_CUDA=ON -Ccmake.define.GALVATRON_WERROR=ON >>"$LOG" 2>&1; then
  step "build FAILED (see above)"
  exit 1
fi

step "GPU tests"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu --junitxml="$OUT/gpu_tests.xml" tests \
    2>&1 | tail -n 30 | tee -a "$LOG"

step "throughput (~1B LLaMA, bf16)"
timeout 150 "$PY" benchmarks/run_throughput_bench.py --out "$OUT/throughput.jsonl" 2>&1 | tee -a "$LOG"

step "fidelity: galvatron check (real and --fake) on every 1-device plan"
PLANS=$(mktemp -d)
"$PY" - "$PLANS" <<'EOF' 2>&1 | tee -a "$LOG"
import sys
import galvatron
for ck in ("none", "selective", "full"):
    plan = galvatron.Plan.uniform(world_size=1, num_layers=16, checkpoint=ck, global_batch_size=8,
                                  num_microbatches=1, precision="bf16")
    plan.save(f"{sys.argv[1]}/ckpt_{ck}.json")
    print("plan", ck)
EOF
ONE_B=(--model llama-debug --seq-len 2048 --set hidden_size=2048 --set num_layers=16 --set num_heads=16
       --set num_kv_heads=16 --set ffn_hidden=5632 --set max_seq_len=2048)
for ck in none selective full; do
  plan="$PLANS/ckpt_$ck.json"
  timeout 90 "$PY" -m galvatron check "$plan" "${ONE_B[@]}" --nproc 1 --steps 5 --warmup 2 \
      --json "$PLANS/real_$ck.json" 2>&1 | tail -n 25 | tee -a "$LOG"
  timeout 60 "$PY" -m galvatron check "$plan" "${ONE_B[@]}" --fake --json "$PLANS/fake_$ck.json" \
      2>&1 | tail -n 10 | tee -a "$LOG"
  "$PY" - "$ck" "$PLANS/real_$ck.json" "$PLANS/fake_$ck.json" >>"$OUT/fidelity.jsonl" <<'EOF'
import json, os, sys
ck, real, fake = sys.argv[1:]
row = {"plan": f"llama-1b_1gpu_bf16_ckpt_{ck}"}
for key, path in (("real", real), ("fake", fake)):
    row[key] = json.load(open(path)) if os.path.exists(path) else None
print(json.dumps(row))
EOF
done
step "done: $(ls "$OUT")"
