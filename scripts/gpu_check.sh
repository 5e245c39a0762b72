#!/usr/bin/env bash
# Every check the CUDA backend owes to a GPU machine, in one command (docs/cuda.md, "Owed").
#
#   scripts/gpu_check.sh [build dir, default build-gpu] [steps, default "tests bench sanitize"]
#
# The benchmarks come before compute-sanitizer: device time is short, the figures are owed
# nowhere else, and the emulator (scripts/cuda_emulate.sh, also under AddressSanitizer) already
# checks the kernels' bounds and barriers on the CPU.
#
# tests:    ember_tests' GPU tests (Cuda*, UNetCuda*), each test's outcome kept;
# sanitize: compute-sanitizer memcheck on the GPU tests, racecheck on the shared-memory kernels
#           (flash attention, the fused GroupNorm, softmax, reductions);
# bench:    bench/side_by_side.sh <build> all (needs python3 with torch on the GPU).
# Logs go to $OUT (the device tool's result folder) when set, else to <build>/gpu_check. A step
# that fails is reported and the next one still runs; the exit status is the number of failures.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build-gpu}
steps=${2:-tests bench sanitize}
logs=${OUT:-$build/gpu_check}
mkdir -p "$logs"
failures=0

step() {  # step NAME COMMAND...: runs it with its output in $logs/NAME.log and a one-line verdict
  local name=$1
  shift
  local start=$(date +%s)
  if "$@" > "$logs/$name.log" 2>&1; then
    echo "gpu_check: $name passed ($(( $(date +%s) - start )) s)"
  else
    echo "gpu_check: $name FAILED ($(( $(date +%s) - start )) s): see $logs/$name.log; its last lines:"
    tail -n 15 "$logs/$name.log" | sed 's/^/    /'
    failures=$((failures + 1))
  fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/gpu_check: GPU /'
step build bash -c "cmake -S . -B '$build' -DCMAKE_BUILD_TYPE=Release -DEMBER_CUDA=ON && \
  cmake --build '$build' -j\$(nproc) --target ember_tests ember_bench ember_cli"
tests=$build/tests/ember_tests
for s in $steps; do
  case $s in
    tests)
      step tests "$tests" --gtest_filter='Cuda*:UNetCuda*' --gtest_output="json:$logs/gpu_tests.json" ;;
    sanitize)
      step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 "$tests" \
        --gtest_filter='CudaGpu*:CudaConvIgemm*:UNetCuda*'
      step racecheck compute-sanitizer --tool racecheck --error-exitcode 1 "$tests" \
        --gtest_filter='CudaGpu.Flash*:CudaGpu.FusedGroupNorm*:CudaGpu.Softmax*:CudaGpu.Reductions*:CudaConvIgemm*' ;;
    bench)
      step bench env EMBER_SIDE_BY_SIDE_OUT="$logs/side_by_side" bench/side_by_side.sh "$build" all ;;
    *) echo "gpu_check: unknown step '$s' (tests, sanitize, bench)"; failures=$((failures + 1)) ;;
  esac
done
[ -f "$logs/bench.log" ] && cat "$logs/bench.log"
echo "gpu_check: $failures step(s) failed; logs in $logs"
exit "$failures"
