#!/usr/bin/env bash
# Builds here, without a GPU, what scripts/gpu_check.sh runs on a lent GPU machine, so that the
# machine's short lease goes to the checks and not to compiling (nvcc on its 16 cores would take
# minutes of it), and so that the run does not depend on that machine having GoogleTest and
# Google Benchmark installed (its image has the CUDA toolkit and PyTorch, not Debian's -dev
# packages).
#
#   scripts/device_kit.sh [kit dir, default .device-kit] [build dir, default build-kit]
#
# The kit is laid out like a build folder, so gpu_check.sh and bench/side_by_side.sh take it as
# one: tests/ember_tests, bench/ember_bench and ember (the CLI) are wrappers of the binaries in
# bin/; lib/ holds the shared libraries they need that a CUDA machine may lack (Google
# Benchmark's); reference/torch_workloads.py is the PyTorch side, which the device machine does
# not get otherwise; KIT says what was built, from which commit, with which nvcc. The binaries
# are built for sm_90 (H100 and H200) with libstdc++ and libgcc linked in statically, the CUDA
# runtime statically as always; cuBLAS, cuBLASLt and cuDNN (the benchmark's yardstick) stay
# shared (hundreds of MiB static) and come from the machine: gpu_check.sh finds them in its
# CUDA toolkit or PyTorch's wheels. Symbols are stripped to keep the kit under the device tool's
# 64 MiB limit on what travels.
#
# Then, in one device call: carry [".device-kit"], command `scripts/gpu_check.sh .device-kit`.
# .device-kit is ignored by git (.gitignore).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
kit=${1:-.device-kit}
build=${2:-build-kit}
limit_mib=56  # leaves the working tree room under the tool's 64 MiB

die() { echo "device_kit.sh: $*" >&2; exit 1; }
command -v nvcc > /dev/null || [ -x /usr/local/cuda/bin/nvcc ] || die "no nvcc: the kit is a CUDA build"

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DEMBER_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DEMBER_TEST_CUDA_EMULATED=OFF "-DCMAKE_EXE_LINKER_FLAGS=-static-libstdc++ -static-libgcc" > /dev/null
cmake --build "$build" -j"$(nproc)" --target ember_tests ember_bench ember_cli

rm -rf "$kit"
mkdir -p "$kit/tests" "$kit/bench" "$kit/bin" "$kit/lib" "$kit/reference"
# Each program is a small wrapper beside its binary (bin/): the wrapper puts the kit's lib/ and
# $EMBER_KIT_LIBS (where gpu_check.sh found cuBLAS and cuDNN on the machine) on the loader's
# path for that program alone, so that python3 and PyTorch, run by the same scripts, keep
# their own libraries.
wrap() {  # wrap BUILT_BINARY KIT_PATH
  local name
  name=$(basename "$2")
  cp "$1" "$kit/bin/$name"
  strip --strip-unneeded "$kit/bin/$name"
  cat > "$kit/$2" <<'SH'
#!/bin/sh
kit=$(cd "$(dirname "$0")" && while [ ! -f KIT ] && [ "$PWD" != / ]; do cd ..; done && pwd)
LD_LIBRARY_PATH="$kit/lib${EMBER_KIT_LIBS:+:$EMBER_KIT_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  exec "$kit/bin/NAME" "$@"
SH
  sed -i "s|NAME|$name|" "$kit/$2"
  chmod +x "$kit/$2"
}
wrap "$build/tests/ember_tests" tests/ember_tests
wrap "$build/bench/ember_bench" bench/ember_bench
wrap "$build/ember" ember

# Shared libraries a CUDA machine may lack travel with the kit: Google Benchmark's. Not glibc,
# zlib, libstdc++ or libgcc (every such machine has them, newer), nor the CUDA libraries, which
# must match the machine's driver and PyTorch's (cuDNN 9 also loads its engines from beside
# itself at run time).
for bin in "$kit"/bin/*; do
  ldd "$bin" | awk '$3 ~ /^\// { print $3 }' | while read -r lib; do
    case $(basename "$lib") in
      libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | libz.so* | libstdc++* | libgcc_s*) ;;
      libcublas* | libcudart* | libcudnn*) ;;
      *) cp -L "$lib" "$kit/lib/" ;;
    esac
  done
done

ref=${EMBER_TORCH_WORKLOADS:-../shared/reference/torch_workloads.py}
if [ -f "$ref" ]; then
  cp "$ref" "$kit/reference/torch_workloads.py"
else
  echo "device_kit.sh: warning: no $ref: set EMBER_TORCH_WORKLOADS; the kit has no PyTorch side" >&2
fi

{
  echo "ember device kit"
  echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!.device-kit' || echo ' (with uncommitted changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(g++ --version | head -n1)"
  echo "nvcc: $( (command -v nvcc > /dev/null && nvcc --version || /usr/local/cuda/bin/nvcc --version) | tail -n2 | head -n1)"
  echo "architectures: sm_90"
  echo "needs on the machine: glibc, zlib, libstdc++, cuBLAS and cuBLASLt 13 (the CUDA toolkit's or PyTorch's), cuDNN 9 for the yardsticks, a driver for CUDA 13"
} > "$kit/KIT"

size_mib=$(( $(du -sk "$kit" | cut -f1) / 1024 ))
cat "$kit/KIT"
echo "device_kit.sh: $kit holds $size_mib MiB: $(ls "$kit/lib" | tr '\n' ' ')"
[ "$size_mib" -le "$limit_mib" ] || die "$kit is $size_mib MiB, over the $limit_mib MiB that fit one device call"
