#!/usr/bin/env bash
# The test suite under AddressSanitizer (with LeakSanitizer) and UndefinedBehaviorSanitizer.
#
#   scripts/sanitize.sh [extra gtest arguments, e.g. --gtest_filter='Autograd*']
#
# Configures build-asan (RelWithDebInfo: optimised like the real build, with line numbers in
# the reports), builds ember_tests and runs the whole suite once. Any sanitizer report stops
# the run with a stack trace and a non-zero exit. Environment: JOBS (build parallelism,
# default nproc), BUILD_DIR (default build-asan).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${BUILD_DIR:-build-asan}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}

cmake -S . -B "$build" \
  -DEMBER_SANITIZE=address,undefined \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEMBER_CUDA=OFF \
  -DEMBER_BUILD_BENCH=OFF
cmake --build "$build" -j"$jobs" --target ember_tests ember_cli  # the CLI for the kill-and-resume test

# detect_leaks: LeakSanitizer at exit (a reference cycle in the autograd graph shows up here).
# ASan stops at its first report; UBSan too (the build passes -fno-sanitize-recover=all, and
# halt_on_error says it again), print_stacktrace gives the stack. Set either variable to
# override.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Symbolised stacks where llvm-symbolizer is installed (otherwise addr2line is used).
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ]; then
  for s in llvm-symbolizer llvm-symbolizer-{19,18,17,16,15,14}; do
    if command -v "$s" >/dev/null 2>&1; then export ASAN_SYMBOLIZER_PATH=$(command -v "$s"); break; fi
  done
fi

echo "sanitize.sh: ASAN_OPTIONS=$ASAN_OPTIONS UBSAN_OPTIONS=$UBSAN_OPTIONS"
start=$(date +%s)
rc=0
"$build/tests/ember_tests" "$@" || rc=$?
echo "sanitize.sh: ember_tests exited $rc after $(( $(date +%s) - start ))s"
exit "$rc"
