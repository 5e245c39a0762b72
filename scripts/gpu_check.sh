#!/usr/bin/env bash
# Every check the CUDA backend owes to a GPU machine, in one command (docs/cuda.md, "Owed").
#
#   scripts/gpu_check.sh [build dir or kit, default build-gpu] [steps, default "tests bench sanitize"]
#
# A kit (a folder holding KIT, made here by scripts/device_kit.sh) is run as it is: nothing is
# compiled on the GPU machine. Its binaries need the machine's cuBLAS, which is looked for where
# CUDA toolkits and PyTorch's wheels put it; when they still cannot start, the script falls back
# to building from source in build-gpu. Any other folder is configured and built first.
#
# The steps run in the order given and share one deadline (GPU_CHECK_DEADLINE seconds from the
# start, default 560: the device tool stops a command at 600), so a slow step cannot take the
# whole lease: each gets what is left, a step that would start with under 30 s left is skipped,
# and every log written so far is packed after each step.
#
# tests:    ember_tests' GPU tests (Cuda*, UNetCuda*), each test's outcome kept;
# bench:    bench/side_by_side.sh <build> all (needs python3 with torch on the GPU);
# sanitize: compute-sanitizer memcheck on the GPU tests, racecheck on the shared-memory kernels
#           (flash attention, the fused GroupNorm, softmax, reductions).
# The benchmarks come before compute-sanitizer: device time is short, the figures are owed
# nowhere else, and the emulator (scripts/cuda_emulate.sh, also under AddressSanitizer) already
# checks the kernels' bounds and barriers on the CPU.
#
# Output, for the device tool's limit of 8 files back: in $OUT (else <build>/gpu_check) the
# summary (summary.txt, also printed), the side-by-side table (bench.txt) and every log and raw
# result packed in logs.tar.gz. A failing step is reported and the next one still runs; the exit
# status is the number of failures.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build-gpu}
steps=${2:-tests bench sanitize}
out=${OUT:-$build/gpu_check}
logs=$(mktemp -d)
deadline=$(( $(date +%s) + ${GPU_CHECK_DEADLINE:-560} ))
mkdir -p "$out"
failures=0

say() { echo "gpu_check: $*" | tee -a "$logs/summary.txt"; }

pack() {  # everything so far, in case the device tool stops the command before the end
  cp "$logs/summary.txt" "$out/summary.txt" 2> /dev/null
  [ -f "$logs/bench_table.txt" ] && cp "$logs/bench_table.txt" "$out/bench.txt"
  tar -czf "$out/logs.tar.gz" -C "$logs" . 2> /dev/null
}

step() {  # step NAME COMMAND...: runs it within the deadline, its output in NAME.log, one verdict line
  local name=$1
  shift
  local start left rc
  start=$(date +%s)
  left=$((deadline - start))
  if [ "$left" -lt 30 ]; then
    say "$name SKIPPED: ${left} s left before the deadline"
    failures=$((failures + 1))
    return
  fi
  timeout --kill-after=5 "$left" "$@" > "$logs/$name.log" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    say "$name passed ($(($(date +%s) - start)) s)"
  else
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "gpu_check: stopped at the deadline after ${left} s" >> "$logs/$name.log"
    say "$name FAILED (exit $rc, $(($(date +%s) - start)) s): its last lines:"
    tail -n 15 "$logs/$name.log" | sed 's/^/    /' | tee -a "$logs/summary.txt"
    failures=$((failures + 1))
  fi
  pack
}

# The shared libraries a kit's binary needs and the loader does not find beside it: cuBLAS and
# cuDNN from the CUDA toolkit or from PyTorch's nvidia-* wheels. Their folders go into
# EMBER_KIT_LIBS, which the kit's wrappers alone put on the loader's path.
missing_libs() {
  LD_LIBRARY_PATH="$build/lib${EMBER_KIT_LIBS:+:$EMBER_KIT_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$1" 2> /dev/null |
    awk '/not found/ { print $1 }'
}
find_libs() {
  local bin=$1 lib dir
  for lib in $(missing_libs "$bin"); do
    dir=$(find /usr/local/cuda/lib64 /usr/local/cuda/targets /usr/local /opt /usr/lib -name "$lib" \
      -print -quit 2> /dev/null | xargs -r dirname)
    if [ -n "$dir" ]; then
      export EMBER_KIT_LIBS="$dir${EMBER_KIT_LIBS:+:$EMBER_KIT_LIBS}"
      say "found $lib in $dir"
    fi
  done
  [ -z "$(missing_libs "$bin")" ]
}

say "started $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), $(nproc) CPUs"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1 |
  sed 's/^/GPU /' | while read -r line; do say "$line"; done

build_from_source() {
  step build bash -c "cmake -S . -B '$build' -DCMAKE_BUILD_TYPE=Release -DEMBER_CUDA=ON \
    -DEMBER_TEST_CUDA_EMULATED=OFF && cmake --build '$build' -j\$(nproc) --target ember_tests ember_bench ember_cli"
}
# A kit carries the PyTorch side too (the device machine gets the checkout only).
[ -f "$build/reference/torch_workloads.py" ] && export EMBER_TORCH_WORKLOADS=${EMBER_TORCH_WORKLOADS:-$PWD/$build/reference/torch_workloads.py}
if [ -f "$build/KIT" ]; then
  sed 's/^/kit: /' "$build/KIT" | while read -r line; do say "$line"; done
  if ! find_libs "$build/bin/ember_tests" || ! find_libs "$build/bin/ember_bench" ||
      ! "$build/tests/ember_tests" --gtest_list_tests > /dev/null 2> "$logs/kit_start.log"; then
    say "the kit's binaries cannot start here (missing: $(missing_libs "$build/bin/ember_tests" | tr '\n' ' ')$(head -c 300 "$logs/kit_start.log")); building from source in build-gpu"
    build=build-gpu
    build_from_source
  fi
else
  build_from_source
fi

tests=$build/tests/ember_tests
for s in $steps; do
  case $s in
    tests)
      step tests "$tests" --gtest_filter='Cuda*:UNetCuda*' --gtest_output="json:$logs/gpu_tests.json"
      counts=$(python3 - "$logs/gpu_tests.json" 2> /dev/null <<'PY'
import json, sys
cases = [t for s in json.load(open(sys.argv[1]))["testsuites"] for t in s["testsuite"]]
skipped = [t for t in cases if t.get("result") == "SKIPPED"]
failed = [t for t in cases if t.get("failures")]
print(f"{len(cases)} GPU tests: {len(cases) - len(skipped) - len(failed)} passed, {len(failed)} failed, {len(skipped)} skipped"
      + "".join(f"\n  failed: {t['classname']}.{t['name']}" for t in failed))
PY
)
      [ -n "$counts" ] && say "$counts"
      grep -qs ": Skipped" "$logs/tests.log" && say "  the first skip says: $(grep -m1 -A1 ": Skipped" "$logs/tests.log" | tail -n1)" ;;
    sanitize)
      step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 "$tests" \
        --gtest_filter='CudaGpu*:CudaConvIgemm*:UNetCuda*'
      step racecheck compute-sanitizer --tool racecheck --error-exitcode 1 "$tests" \
        --gtest_filter='CudaGpu.Flash*:CudaGpu.FusedGroupNorm*:CudaGpu.Softmax*:CudaGpu.Reductions*:CudaConvIgemm*' ;;
    bench)
      step bench env EMBER_SIDE_BY_SIDE_OUT="$logs/side_by_side" bench/side_by_side.sh "$build" all
      if [ -d "$logs/side_by_side" ]; then
        bench/side_by_side.sh --table "$logs/side_by_side" > "$logs/bench_table.txt" 2>&1
        pack
      fi ;;
    *) say "unknown step '$s' (tests, bench, sanitize)"; failures=$((failures + 1)) ;;
  esac
done
[ -f "$logs/bench_table.txt" ] && cat "$logs/bench_table.txt"
pack
say "$failures step(s) failed; in $out: $(cd "$out" && ls | tr '\n' ' ')(logs.tar.gz: every log and raw result)"
cp "$logs/summary.txt" "$out/summary.txt"
exit "$failures"
