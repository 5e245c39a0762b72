#!/usr/bin/env bash
# The compiler's resource report for every CUDA kernel, without a GPU: registers, static shared
# memory, stack frame and spills per kernel, from ptxas -v for sm_90 (METHOD.md: "read what costs
# no device time"). A kernel that spills, or keeps an array on the stack, reads local memory in
# its loop; registers and shared memory bound how many blocks share a multiprocessor.
#
#   scripts/ptxas_report.sh [build dir of a CUDA build, default build-kit] [top N per file, default 6]
#
# Prints the kernels that spill or use a stack frame, then the N with the most registers in each
# file. Needs nvcc and a configured CUDA build (for its include flags); compiles to a temporary
# folder and builds nothing else. Where a cuobjdump is found ($CUOBJDUMP, PATH, or the one
# Triton's wheel carries), it also reads the SASS: the elementwise kernels' vectorised
# contiguous paths that lack 16-byte loads (LDG.E.128; the fill kernels, which load nothing,
# aside), and the tensor-core instructions (HMMA) in the conv and attention kernels.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build-kit}
top=${2:-6}
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$nvcc" ] || { echo "ptxas_report.sh: no nvcc" >&2; exit 1; }
rsp="$build/CMakeFiles/ember.dir/includes_CUDA.rsp"
[ -f "$rsp" ] || { echo "ptxas_report.sh: no $rsp: configure a CUDA build there first (scripts/device_kit.sh does)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in kernels/cuda/*.cu; do
  b=$(basename "$f" .cu)
  (cd "$build" && "$nvcc" -DEMBER_WITH_CUDA=1 --options-file CMakeFiles/ember.dir/includes_CUDA.rsp -O3 -DNDEBUG \
    -arch=sm_90 --expt-relaxed-constexpr -std=c++20 -Xptxas -v -c "$OLDPWD/$f" -o "$tmp/$b.o") > "$tmp/$b.txt" 2>&1 ||
    { cat "$tmp/$b.txt" >&2; exit 1; }
done

cuobjdump=${CUOBJDUMP:-$(command -v cuobjdump || true)}
if [ -z "$cuobjdump" ]; then
  cuobjdump=$(python3 -c "import os, triton; print(os.path.join(os.path.dirname(triton.__file__), 'backends/nvidia/bin/cuobjdump'))" 2> /dev/null || true)
fi
if [ -n "$cuobjdump" ] && [ -x "$cuobjdump" ]; then
  for o in "$tmp"/*.o; do "$cuobjdump" --dump-sass "$o" > "${o%.o}.sass"; done
else
  echo "ptxas_report: no cuobjdump (set CUOBJDUMP, or pip install triton): the SASS checks are left out"
fi

python3 - "$tmp" "$top" <<'PY'
import glob, os, re, subprocess, sys
folder, top = sys.argv[1], int(sys.argv[2])
rows = []  # (file, kernel, registers, stack, spill stores, spill loads, static smem)
for path in sorted(glob.glob(os.path.join(folder, "*.txt"))):
    name, usage = None, None
    for line in open(path):
        m = re.search(r"Compiling entry function '(\S+)' for 'sm_90'", line)
        if m:
            name, usage = m.group(1), (0, 0, 0)
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            usage = tuple(map(int, m.groups()))
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            smem = re.search(r"(\d+) bytes smem", line)
            rows.append((os.path.basename(path)[:-4], name, int(m.group(1)), *usage, int(smem.group(1)) if smem else 0))
            name = None
names = subprocess.run(["c++filt"], input="\n".join(r[1] for r in rows), capture_output=True, text=True).stdout.split("\n")
short = lambda n: re.sub(r"ember::kernels::cuda::(\(anonymous namespace\)::)?", "", n)[:120]
fmt = lambda r, n: f"  {r[0]:16s} regs {r[2]:3d}  stack {r[3]:4d}  spills {r[4]}/{r[5]}  smem {r[6]:6d}  {short(n)}"
print(f"ptxas_report: {len(rows)} kernels for sm_90")
bad = [(r, n) for r, n in zip(rows, names) if r[3] or r[4] or r[5]]
print(f"{sum(1 for r, _ in bad if r[4] or r[5])} spill; {len(bad)} use a stack frame:")
for r, n in bad:
    print(fmt(r, n))
sass = sorted(glob.glob(os.path.join(folder, "*.sass")))
if sass:
    print("SASS: vectorised contiguous elementwise kernels (map_contiguous_kernel<V > 1>) and their 16-byte loads:")
    for path in sass:
        kernels = re.split(r"\n\s*Function : ", open(path).read())[1:]
        vec = [k for k in kernels if re.match(r"_ZN5ember7kernels4cuda21map_contiguous_kernelILi([2-9]|1[0-9])E", k)
               and "FillFn" not in k.split("\n", 1)[0]]
        hmma = sum(k.count(" HMMA.") for k in kernels)
        if vec or hmma:
            without = [k.split("\n", 1)[0] for k in vec if "LDG.E.128" not in k]
            print(f"  {os.path.basename(path)[:-5]:16s} {len(vec) - len(without)} of {len(vec)} with LDG.E.128"
                  + (f"; {hmma} HMMA instructions" if hmma else ""))
            for n in without:
                print(f"    without: {short(subprocess.run(['c++filt', n], capture_output=True, text=True).stdout.strip())}")
for f in sorted({r[0] for r in rows}):
    mine = sorted(((r, n) for r, n in zip(rows, names) if r[0] == f), key=lambda x: -x[0][2])
    print(f"{f}: {len(mine)} kernels, the most registers:")
    for r, n in mine[:top]:
        print(fmt(r, n))
PY
