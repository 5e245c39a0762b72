#!/usr/bin/env bash
# The GPU test suite without a GPU: builds the CUDA backend under tools/cuda_emu (EMBER_CUDA=EMULATE,
# the kernels run as fibers on the CPU) and runs the GPU tests there.
#
#   scripts/cuda_emulate.sh [build dir, default build-emu] [gtest filter, default the GPU tests]
#
# It checks the kernels' logic and the host code that drives them, not their speed; the GPU
# checks in scripts/gpu_check.sh are still owed on a GPU (tools/cuda_emu/README.md).
#
# EMBER_EMU_BRIEF=0: gtest's full output (every test's name and time) instead of failures only.
#
# EMBER_EMU_SANITIZE=address: the build under AddressSanitizer, run with EMBER_CUDA_NO_CACHING=1
# (each tensor its own exact-size allocation), so a kernel reading or writing past a tensor's
# end is reported. Several times slower (about 45 minutes on 2 cores).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build-emu}
filter=${2:-Cuda*:UNetCuda*}
mkdir -p "$build"
sanitize=${EMBER_EMU_SANITIZE:-}
if [ -n "$sanitize" ]; then
  export EMBER_CUDA_NO_CACHING=1 ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DEMBER_CUDA=EMULATE -DEMBER_BUILD_BENCH=OFF \
  -DEMBER_SANITIZE="$sanitize" > "$build/configure.log" 2>&1 ||
  { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" --target ember_tests cuda_emu_selftest_runtime cuda_emu_selftest_device
# The emulator's own checks first (its runtime, cuBLAS, fibers, shuffles, WMMA, cp.async), quietly
"$build/cuda_emu_selftest_runtime" > "$build/selftest_runtime.log" 2>&1 || { cat "$build/selftest_runtime.log"; exit 1; }
"$build/cuda_emu_selftest_device" > "$build/selftest_device.log" 2>&1 || { cat "$build/selftest_device.log"; exit 1; }
echo "cuda_emulate: the emulator's self-tests passed; the GPU tests ($filter), with two devices:"
# Two emulated devices, so the tests of a second GPU run too (the rest use cuda:0).
EMBER_EMU_DEVICES=${EMBER_EMU_DEVICES:-2} "$build/tests/ember_tests" --gtest_filter="$filter" --gtest_brief=${EMBER_EMU_BRIEF:-1}
