#!/usr/bin/env bash
# ember's host cost per DDE iteration as an exact count of instructions, for A/B comparisons on a
# machine whose clock is too noisy to show a few percent. Runs bench/tools/dde_iterations under
# valgrind (cachegrind without the cache simulation) for 2 and for 12 iterations and divides the
# difference by 10, so start-up, warm-up and valgrind's own set-up cancel out. One thread
# (EMBER_NUM_THREADS=1), since idle pool workers would add their spinning.
#
#   scripts/host_instructions.sh [build dir, default build-cpu] [workloads, default toy1]
#
# toy1 (the toy iteration on one row, 6-10 million instructions) is nearly all host cost and
# takes seconds. toy and mnist add the CPU's arithmetic, which under valgrind takes tens of
# minutes. On the GPU path, in an EMBER_CUDA=EMULATE build with EMBER_EMU_SKIP_KERNELS=1 and
# EMBER_BENCH_DEVICE=cuda:0, it counts ember's host side plus the emulator's own work per launch.
# Compare builds on one machine with one valgrind: the count depends on the code and compiler,
# not on the machine's load.
set -euo pipefail
build=${1:-build-cpu}
workloads=${2:-toy1}
bin="$build/bench/dde_iterations"
[ -x "$bin" ] || { echo "host_instructions.sh: no $bin; build it: cmake --build $build --target dde_iterations" >&2; exit 1; }
command -v valgrind > /dev/null || { echo "host_instructions.sh: valgrind not found (apt-get install valgrind)" >&2; exit 1; }

# instructions executed by one run of $bin with the given arguments
instructions() {
  local log
  log=$(EMBER_NUM_THREADS=1 valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$bin" "$@" 2>&1) ||
    { echo "$log" >&2; echo "host_instructions.sh: $bin $* failed" >&2; exit 1; }
  sed -n 's/^==[0-9]*== I *refs: *//p' <<< "$log" | tr -d ,
}

for w in $workloads; do
  few=$(instructions "$w" 2)
  many=$(instructions "$w" 12)
  ops=$("$bin" "$w" 0 | sed -n 's/.*: \([0-9]*\) ops per iteration.*/\1/p')
  awk -v w="$w" -v a="$few" -v b="$many" -v ops="$ops" 'BEGIN {
    per = (b - a) / 10
    printf "%s: %.3f million instructions per iteration, %d ops, %.0f per op\n", w, per / 1e6, ops, per / ops }'
done
