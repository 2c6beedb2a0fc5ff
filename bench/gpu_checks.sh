#!/usr/bin/env bash
# Issue 9's GPU checks in one or two commands, on a machine with an NVIDIA GPU, from the repository root:
#
#   bash bench/gpu_checks.sh tests    build with CUDA for this GPU, then the parity tests      (~3-5 min)
#   bash bench/gpu_checks.sh bench    the float16 full-size checkpoint, then the GPU benchmark (~5-8 min)
#   bash bench/gpu_checks.sh sanitize compute-sanitizer memcheck and racecheck over a few CUDA tests (after tests)
#   bash bench/gpu_checks.sh profile  Nsight Compute: time and DRAM traffic of each kernel of batch-1 eager
#                                     steps, for the roofline work (after bench, which writes the checkpoint)
#   bash bench/gpu_checks.sh all      tests, then bench
#
# Logs and JSON go to $OUT (default ./gpu_checks_out); the last lines printed are the summary. Every step has a
# time limit (a hang costs minutes, not the lease); GPU_CHECKS_DEADLINE (seconds since the epoch) ends them all.
# PYTHON (default python3) must have numpy, regex, pytest, hypothesis, pybind11, scikit-build-core and
# cmake; torch + transformers for the side-by-side benchmark. Build: an editable install into that
# Python with -Cbuild-dir=build, for the GPU's own architecture only (nvidia-smi's compute_cap).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$PWD/gpu_checks_out}"
py="${PYTHON:-python3}"
stage="${1:-all}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
summary=()

# step NAME LOGFILE SECONDS COMMAND...: run, killed after SECONDS (or at GPU_CHECKS_DEADLINE, a `date +%s`
# time: a device lease's end), keep the log, remember the exit status
step() {
  local name=$1 log=$2 limit=$3
  shift 3
  if [[ -n ${GPU_CHECKS_DEADLINE:-} ]]; then
    local left=$((GPU_CHECKS_DEADLINE - $(date +%s)))
    if ((left < 10)); then summary+=("$name: skipped (deadline)"); return 124; fi
    ((left < limit)) && limit=$left
  fi
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$out/$log"
  local rc=${PIPESTATUS[0]}
  summary+=("$name: exit $rc (log $log)")
  return "$rc"
}

nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')

if [[ $stage == tests || $stage == all ]]; then
  step build build.log 400 env PYCLVP_CUDA=ON "$py" -m pip install --no-build-isolation --no-deps -e . \
    -Cbuild-dir=build "-Ccmake.define.CMAKE_CUDA_ARCHITECTURES=${arch:-90}" || exit 1
  step build_info build_info.txt 60 "$py" -c "import pyclvp._core as c; print(c.build_info())"
  step test_cuda test_cuda.log 300 "$py" -m pytest -q -p no:cacheprovider -rfEs tests/test_cuda.py
  step cuda_backend_cases cuda_backend.log 240 "$py" -m pytest -q -p no:cacheprovider -rfEs -k cuda \
    tests/test_decoder_cache.py tests/test_decoding.py tests/test_model_parity.py
fi

if [[ $stage == sanitize ]]; then  # out-of-bounds accesses, then shared-memory races, on small cases
  few="literal or hyp_attention or hyp_linear or (fused_decoder and (1-3 or 6-5 or 20-4)) or select or choice_equals"
  step memcheck memcheck.log 300 env PYCLVP_MAX_EXAMPLES=5 compute-sanitizer --tool memcheck --error-exitcode 9 \
    "$py" -m pytest -q -p no:cacheprovider -k "$few" tests/test_cuda.py
  step racecheck racecheck.log 200 env PYCLVP_MAX_EXAMPLES=3 compute-sanitizer --tool racecheck --error-exitcode 9 \
    "$py" -m pytest -q -p no:cacheprovider -k "literal or (fused_decoder and True-1-3) or (choice_equals and tortoise)" tests/test_cuda.py
fi

ckpt=bench/checkpoints/clvp-default-float16
if [[ $stage == bench || $stage == all ]]; then
  [[ -f $ckpt/model.safetensors ]] || step checkpoint checkpoint.log 180 "$py" bench/make_checkpoint.py --dtype float16
  step bench bench_cuda.log 400 "$py" bench/bench_decode.py --backend cuda --checkpoint "$ckpt" --json "$out/bench_cuda.json"
  step bench_no_graph bench_no_graph.log 120 "$py" bench/bench_decode.py --backend cuda --checkpoint "$ckpt" \
    --jobs decode1,decode16 --no-graph --no-transformers --json "$out/bench_no_graph.json"
  step bench_pdl bench_pdl.log 120 env PYCLVP_CUDA_PDL=1 "$py" bench/bench_decode.py --backend cuda \
    --checkpoint "$ckpt" --jobs decode1,decode16 --no-transformers --json "$out/bench_pdl.json"
  step bench_host_pick bench_host_pick.log 120 env PYCLVP_CUDA_PICK=0 "$py" bench/bench_decode.py --backend cuda \
    --checkpoint "$ckpt" --jobs job16 --no-transformers --json "$out/bench_host_pick.json"
fi

if [[ $stage == profile ]]; then  # ~30 kernels of a step past prefill and the first step (~370 launches)
  step ncu ncu.csv 300 ncu --target-processes all --clock-control none --kernel-name regex:'gemv|gemm|attention|layer_norm|embed' \
    --launch-skip 400 --launch-count 30 --csv \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed \
    "$py" bench/bench_decode.py --backend cuda --checkpoint "$ckpt" --jobs decode1 --new-tokens 8 --no-graph \
    --no-transformers
fi

printf '%s\n' "${summary[@]}"
