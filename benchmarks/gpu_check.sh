#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (H200: torch 2.11 + CUDA 13, nvcc, triton 3.6, no network).
# Builds with CUDA, runs the suite on cuda (Triton compiled, not interpreted), compute-sanitizer on the op tests,
# then the benchmarks; everything lands in $OUT (log + JSON). Run from the repo root:
#   device run: bash benchmarks/gpu_check.sh      (timeout ~540 s; leaves room for one rerun)
set -uo pipefail
OUT="${OUT:-$(mktemp -d)}"
export PYTHONUNBUFFERED=1 PYUNLEARN_TEST_DEVICE=cuda TRITON_INTERPRET=0 HF_HUB_OFFLINE=1
log="$OUT/gpu_check.log"
step() { echo "=== $* ($(date +%T))" | tee -a "$log"; }

step "nvidia-smi / versions"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$log"
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" 2>&1 | tee -a "$log"
git rev-parse HEAD 2>/dev/null | tee -a "$log"

step "build (CUDA ON, sm_90)"
PYUNLEARN_CUDA=ON TORCH_CUDA_ARCH_LIST=9.0 python3 -m pip install --no-build-isolation --no-deps -q . >>"$log" 2>&1 \
  || { echo "BUILD FAILED" | tee -a "$log"; tail -60 "$log"; exit 1; }
(cd /tmp && python3 -m pyunlearn.cli info) 2>&1 | tee -a "$log"

step "tests on cuda"
python3 -m pytest -q -x -m "not slow" -p no:cacheprovider tests 2>&1 | tail -25 | tee -a "$log"

step "compute-sanitizer memcheck on the op tests (cpp backend, CUDA kernels)"
if command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck --error-exitcode 3 python3 -m pytest -q -x -p no:cacheprovider \
    tests/ops/test_masked_optim.py tests/ops/test_gat.py tests/ops/test_gatv2.py \
    tests/ops/test_zo_ops.py -k "cpp and (mask_forms or shapes or reference)" 2>&1 \
    | tail -15 | tee -a "$log"
else
  echo "compute-sanitizer not found" | tee -a "$log"
fi

step "benchmark masked_optim (gpu size)"
(cd /tmp && python3 -m pyunlearn.cli bench masked_optim --size gpu --json "$OUT/masked_optim_h200.json") 2>&1 \
  | tee -a "$log" | tail -30
step "benchmark gat (gpu size)"
(cd /tmp && python3 -m pyunlearn.cli bench gat --size gpu --json "$OUT/gat_h200.json") 2>&1 | tee -a "$log" | tail -30
step "benchmark gatv2 (gpu size)"
(cd /tmp && python3 -m pyunlearn.cli bench gatv2 --size gpu --json "$OUT/gatv2_h200.json") 2>&1 | tee -a "$log" \
  | tail -30
step "benchmark zo (gpu size; TF32 off, compiled vmap takes ~1 min)"
(cd /tmp && python3 -m pyunlearn.cli bench zo --size gpu --json "$OUT/zo_h200.json") 2>&1 | tee -a "$log" | tail -30
step "done"
