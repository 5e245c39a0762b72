#!/usr/bin/env bash
# The side-by-side runner: ember's bench and ../shared/reference/torch_workloads.py on the same
# workloads, in one run on one machine, and the ratio of the medians.
#   bench/side_by_side.sh [build dir] [group: dde | kernels | unet | all]
#   bench/side_by_side.sh --table DIR      (prints the table of an earlier run's folder again)
# `all` runs dde, kernels and unet: every figure of issues 5 and 6 in one command, e.g.
#   bench/side_by_side.sh build-gpu all
# Needs python3 with torch for the PyTorch side; dde runs on the CPU where torch sees no GPU,
# kernels and unet need a GPU (the reference's kernel and autocast code is CUDA-only).
#
# Names. PyTorch reports (name, precision) pairs, precision fp32 | tf32 | bf16; a name may end in
# a " [38.7GF]" note (the work of one call), which is not part of it. ember's benchmark for
# (name, prec) is `<group>_<name>/<prec>` (kernels_conv3x3_fwd(N128,C128,H32)/tf32,
# unet_unet_ddpm_train_step(b128,32x32)/bf16); the DDE benchmarks keep their names, which are
# the reference's (dde_toy_iteration(b2048,25x32), precision fp32). Any other name part that is
# not one of Google Benchmark's own (real_time, min_time:...) is a variant of the workload
# (dde_toy_iteration(b2048,25x32)/cuda_graphs), shown on a row of its own against the same
# PyTorch time. With the kernels group the yardsticks of ember_bench run too
# (yardstick_cudnn_<name>/<prec>, yardstick_cublas_sgemm8192/<prec>, where cuDNN/cuBLAS were
# found at build time), and the cuDNN time is shown beside ember's.
#
# The table: workload, precision, ember's and PyTorch's median ms, torch/ember (above 1: ember
# is faster), and what ember's benchmark reports as counters: TFLOP/s or GB/s with the fraction
# of the roofline PyTorch measured on the same GPU (its sgemm fp32/tf32 rate, its copy
# bandwidth), peak memory for the U-Net beside PyTorch's (measured here in a separate PyTorch
# process: the reference does not report it). Where ember has no benchmark in a precision but
# has its fp32 one (GroupNorm has no bf16 kernel: it runs in f32 in every precision), the fp32
# time is set beside PyTorch's row and marked so.
#
# Environment: EMBER_TORCH_WORKLOADS (the reference script), EMBER_BENCH_REPETITIONS (5),
# EMBER_BENCH_MIN_TIME (Google Benchmark's --benchmark_min_time for ember's entries, e.g. 0.2 to
# fit a short GPU lease; the DDE entries keep their own 3 s),
# EMBER_SIDE_BY_SIDE_OUT (the folder for the raw results; a new temporary one by default: its
# name is printed; it holds ember.json, ember.txt, torch.txt, torch_anchors.json,
# torch_memory.json).
set -euo pipefail

die() { echo "side_by_side.sh: $*" >&2; exit 1; }

table() {
python3 - "$1" <<'PY'
import json, os, re, sys
out = sys.argv[1]
PRECS = ("fp32", "tf32", "bf16")
GROUPS = ("kernels", "unet", "dde", "realnvp", "vae", "ebm")
STANDARD = {"name", "family_index", "per_family_instance_index", "run_name", "run_type", "repetitions",
            "repetition_index", "threads", "iterations", "real_time", "cpu_time", "time_unit", "aggregate_name",
            "aggregate_unit", "label", "error_occurred", "error_message", "skipped", "skip_message"}
# Google Benchmark's own name parts (options), not part of a workload's name
GB_PART = re.compile(r"^(real_time|manual_time|process_time|min_time:.*|min_warmup_time:.*|iterations:.*|repeats:.*|threads:.*)$")


def load_ember(path):
    if not os.path.exists(path):
        return []
    txt = open(path).read()
    try:
        return json.loads(txt).get("benchmarks", [])
    except ValueError:  # a run that died leaves the file open: keep the entries it finished
        i = txt.rfind("\n    }")
        try:
            return json.loads(txt[:i + 6] + "\n  ]\n}").get("benchmarks", []) if i >= 0 else []
        except ValueError:
            return []


def to_ms(b, key):
    return b[key] * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ms")]


def split_name(run_name):
    """'kernels_x(..)/tf32/real_time' -> ('kernels_x(..)', 'tf32', None);
    'dde_toy(..)/cuda_graphs/min_time:3.000' -> ('dde_toy(..)', None, 'cuda_graphs')."""
    parts = run_name.split("/")
    prec = next((p for p in parts[1:] if p in PRECS), None)
    variant = "/".join(p for p in parts[1:] if p not in PRECS and not GB_PART.match(p)) or None
    return parts[0], prec, variant


ember, ember_err, ember_order = {}, {}, []
rows = load_ember(os.path.join(out, "ember.json"))
has_aggregates = any(b.get("run_type") == "aggregate" for b in rows)
for b in rows:
    key = split_name(b.get("run_name", b["name"]))
    if b.get("error_occurred") or b.get("skipped"):
        ember_err[key] = b.get("error_message") or b.get("skip_message") or "skipped"
        continue
    if has_aggregates and b.get("aggregate_name") != "median":
        continue
    if key not in ember:
        ember_order.append(key)
    counters = {k: v for k, v in b.items() if k not in STANDARD and isinstance(v, (int, float))}
    ember[key] = dict(ms=to_ms(b, "real_time"), counters=counters, label=b.get("label", ""))
variants = sorted({k[2] for k in list(ember) + list(ember_err) if k[2]})

torch_rows = []
anchors = os.path.join(out, "torch_anchors.json")
for r in (json.load(open(anchors)) if os.path.exists(anchors) else []):
    m = re.match(r"^(.*?)\s*\[([0-9.]+)GF\]\s*$", r["name"])
    name, gf = (m.group(1), float(m.group(2))) if m else (r["name"], None)
    torch_rows.append(dict(name=name, prec=r["prec"], ms=r["median_ms"], gf=gf))
torch_mem = {}
mem_path = os.path.join(out, "torch_memory.json")
for r in (json.load(open(mem_path)) if os.path.exists(mem_path) else []):
    torch_mem[(r["name"], r["prec"])] = r

torch_txt = open(os.path.join(out, "torch.txt")).read().splitlines() if os.path.exists(os.path.join(out, "torch.txt")) else []
probes = {}
for line in torch_txt:
    m = re.match(r"^sgemm (\w+) ([0-9.]+) TFLOP/s", line)
    if m:
        probes["sgemm " + m.group(1)] = float(m.group(2))
    m = re.match(r"^copy bandwidth ([0-9.]+) GB/s", line)
    if m:
        probes["copy"] = float(m.group(1))


def find(name, prec, variant=None):
    """The ember benchmark standing for the reference's (name, prec), in one variant, or None."""
    keys = [(f"{g}_{name}", prec, variant) for g in GROUPS] + [(name, prec, variant)]
    if prec == "fp32":
        keys.append((name, None, variant))  # the DDE benchmarks carry no precision
    return next((k for k in keys if k in ember or k in ember_err), None)


def achieved(e, prec, gf):
    c, notes = e["counters"], []
    tflops = c.get("TFLOPS", c.get("TFLOP/s"))
    if tflops is None and gf is not None:
        tflops = gf / e["ms"]  # the reference's GFLOP per call over ember's ms
    if tflops is not None:
        s = f"{tflops:.1f} TFLOP/s"
        roof = probes.get("sgemm " + prec)
        if roof:
            s += f" ({100 * tflops / roof:.0f}% of sgemm {prec})"
        notes.append(s)
    gbs = c.get("GB/s", c.get("GBps"))
    if gbs is None and "bytes_per_second" in c:
        gbs = c["bytes_per_second"] / 1e9
    if gbs is not None:
        s = f"{gbs:.0f} GB/s"
        if probes.get("copy"):
            s += f" ({100 * gbs / probes['copy']:.0f}% of copy)"
        notes.append(s)
    return notes


for line in torch_txt[:1]:
    print("torch:", line)
for line in torch_txt:
    if line.startswith(("copy bandwidth", "sgemm", "unet params")):
        print("torch:", line)
for k in ember_order:
    if k[0].startswith("yardstick_cublas_sgemm"):
        e = ember[k]
        t = e["counters"].get("TFLOP/s", e["counters"].get("TFLOPS"))
        print(f"ember_bench yardstick: {k[0][len('yardstick_'):]} {k[1]}: {e['ms']:.3f} ms" + (f", {t:.1f} TFLOP/s" if t else ""))
try:
    ctx = json.load(open(os.path.join(out, "ember.json"))).get("context", {})
    print(f"ember: {ctx.get('date', '?')}, {ctx.get('host_name', '?')}, {ctx.get('num_cpus', '?')} CPUs")
except Exception:
    pass
print()
hdr = f"{'workload':54s} {'prec':14s} {'ember ms':>9s} {'torch ms':>9s} {'torch/ember':>11s}  ember achieved / notes"
print(hdr)
print("-" * len(hdr))
used, footnote = set(), False
for r in torch_rows:
    name, prec = r["name"], r["prec"]
    for variant in [None] + variants:
        k, shown_prec = find(name, prec, variant), prec
        if k is None and prec != "fp32":
            k = find(name, "fp32", variant)
            if k is not None:
                shown_prec, footnote = f"{prec} (e:fp32*)", True
        shown = name + (f" [{variant}]" if variant else "")
        if k is None:
            if variant is None:
                print(f"{shown:54s} {shown_prec:14s} {'-':>9s} {r['ms']:9.3f} {'-':>11s}  no ember benchmark")
            continue
        used.add(k)
        if k not in ember:
            print(f"{shown:54s} {shown_prec:14s} {'-':>9s} {r['ms']:9.3f} {'-':>11s}  ember: {ember_err[k]}")
            continue
        e = ember[k]
        notes = achieved(e, prec if shown_prec == prec else "fp32", r["gf"])
        c = e["counters"]
        if "peak_alloc_MiB" in c:
            s = f"peak {c['peak_alloc_MiB']:.0f} MiB"
            tm = torch_mem.get((name, prec))
            if tm:
                s += (f" vs torch {tm['peak_alloc_MiB']:.0f} MiB (reserved {c.get('peak_reserved_MiB', 0):.0f}"
                      f" vs {tm['peak_reserved_MiB']:.0f})")
            notes.append(s)
        if "activations_MiB" in c:  # what ember's forward and loss leave for the backward
            notes.append(f"activations {c['activations_MiB']:.0f} MiB")
        if "params" in c:
            notes.append(f"{int(c['params'])} params")
        if "host_ms" in c:  # the GPU's eager DDE entries: the host's share of the iteration
            notes.append(f"host {c['host_ms']:.2f} ms for {int(c.get('ops', 0))} ops"
                         f" ({c.get('host_us_per_op', 0):.2f} us/op)")
        y = ("yardstick_cudnn_" + name, prec, None)
        if variant is None and y in ember:
            used.add(y)
            notes.append(f"cuDNN {ember[y]['ms']:.3f} ms (cuDNN/ember {ember[y]['ms'] / e['ms']:.2f})")
        print(f"{shown:54s} {shown_prec:14s} {e['ms']:9.3f} {r['ms']:9.3f} {r['ms'] / e['ms']:11.2f}  " + "; ".join(notes))
extra = [k for k in ember_order if k not in used and not k[0].startswith("yardstick_cublas_sgemm")]
failed = {}
for k, msg in ember_err.items():
    if k not in used and k not in ember:
        failed.setdefault(msg, []).append(k)
label = lambda k: k[0] + "".join(f"/{p}" for p in k[1:] if p)
if extra or failed:
    print("\nember benchmarks without a PyTorch twin in this run:")
    for k in extra:
        e = ember[k]
        print(f"  {label(k):56s} {e['ms']:9.3f} ms  " + "; ".join(achieved(e, k[1] or "fp32", None)))
    for msg, ks in failed.items():
        print(f"  {len(ks)} skipped or failed ({msg}): " + ", ".join(label(k) for k in ks))
if footnote:
    print("\n* ember has no benchmark in that precision (no kernel of it: e.g. GroupNorm runs in f32 in every\n"
          "  precision); its fp32 time is set beside PyTorch's figure.")
if variants:
    print("\n[variant]: the same workload run another way by ember (e.g. cuda_graphs: the whole iteration\n"
          "  captured once and replayed), against the same PyTorch (eager) time.")
print("\nbf16: PyTorch runs bf16 tensors (kernels) or bf16 autocast (unet); ember's bf16 is the `medium`\n"
      "matmul precision: BF16 operands, f32 tensors and accumulation.")
if not torch_rows:
    print("(no PyTorch results in", out, ")")
if not ember and ember_err:
    print("\nevery ember benchmark was skipped or failed; the first reason:", next(iter(ember_err.values())))
PY
}

if [[ ${1:-} == --table ]]; then
  [[ -d ${2:-} ]] || die "--table needs the folder of an earlier run"
  table "$2"
  exit 0
fi

BUILD=${1:-build}
GROUP=${2:-dde}
case "$GROUP" in
  dde | kernels | unet) WHICH=("$GROUP") ;;
  all) WHICH=(dde kernels unet) ;;
  *) die "unknown group '$GROUP' (dde, kernels, unet or all)" ;;
esac
# The reference: $EMBER_TORCH_WORKLOADS, else ../shared/reference beside the checkout, else a
# shared/reference inside it (a device machine gets the checkout only, not what lies beside it).
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REF=${EMBER_TORCH_WORKLOADS:-}
if [[ -z $REF ]]; then
  for c in "$ROOT/../shared/reference/torch_workloads.py" "$ROOT/shared/reference/torch_workloads.py"; do
    if [[ -f $c ]]; then REF=$c; break; fi
  done
fi
REPS=${EMBER_BENCH_REPETITIONS:-5}
BENCH="$BUILD/bench/ember_bench"

[[ -x $BENCH ]] || die "no $BENCH: build it first (cmake --build $BUILD --target ember_bench; needs Google Benchmark)"
[[ -n $REF && -f $REF ]] ||
  die "no PyTorch reference ${REF:-(looked in $ROOT/../shared/reference and $ROOT/shared/reference)}: set EMBER_TORCH_WORKLOADS to torch_workloads.py"
command -v python3 > /dev/null || die "no python3: the PyTorch side needs python3 with torch"
python3 -c "import torch" 2> /dev/null ||
  die "python3 cannot import torch: the PyTorch side needs it (run this on the GPU machine, which has PyTorch)"
needs_gpu=0
for g in "${WHICH[@]}"; do [[ $g == dde ]] || needs_gpu=1; done
if ((needs_gpu)); then
  python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" ||
    die "the '$GROUP' group needs a GPU and PyTorch sees none (torch.cuda.is_available() is False)"
  if [[ ! -d $BUILD/CMakeFiles/ember.dir/kernels/cuda && ! -f $BUILD/KIT ]]; then  # a CUDA build, or a kit (scripts/device_kit.sh)
    echo "side_by_side.sh: warning: $BUILD may be a CPU-only build; ember's GPU benchmarks will then be skipped" >&2
  fi
fi

OUT=${EMBER_SIDE_BY_SIDE_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
echo "side_by_side.sh: groups ${WHICH[*]}, raw results in $OUT" >&2
PATTERNS=("${WHICH[@]}")
[[ " ${WHICH[*]} " == *" kernels "* ]] && PATTERNS+=(yardstick)  # cuDNN / cuBLAS in ember_bench, where built
FILTER="^($(IFS='|'; echo "${PATTERNS[*]}"))_"

# ember first (its GPU benchmarks are skipped with the reason where it sees no GPU).
set +e
EXTRA=()
[[ -n ${EMBER_BENCH_MIN_TIME:-} ]] && EXTRA+=(--benchmark_min_time="$EMBER_BENCH_MIN_TIME")
"$BENCH" --benchmark_filter="$FILTER" --benchmark_repetitions="$REPS" --benchmark_report_aggregates_only=true \
  --benchmark_out="$OUT/ember.json" --benchmark_out_format=json ${EXTRA[@]+"${EXTRA[@]}"} 2>&1 | tee "$OUT/ember.txt" >&2
rc=${PIPESTATUS[0]}
set -e
((rc == 0)) || echo "side_by_side.sh: ember_bench exited with status $rc (see $OUT/ember.txt); the table shows what it finished" >&2

set +e
EMBER_BENCH_OUT="$OUT" python3 "$REF" "${WHICH[@]}" | tee "$OUT/torch.txt" >&2
rc=${PIPESTATUS[0]}
set -e
((rc == 0)) || echo "side_by_side.sh: the PyTorch reference exited with status $rc (see $OUT/torch.txt)" >&2

# PyTorch's peak memory in the U-Net workloads (the reference reports times only): its own
# model, optimizer and batch in a fresh process, two warm-up steps, then the peak over three.
if [[ " ${WHICH[*]} " == *" unet "* ]]; then
  python3 - "$REF" "$OUT/torch_memory.json" <<'PY' >&2 || echo "side_by_side.sh: PyTorch's peak memory was not measured" >&2
import importlib.util, json, sys
import torch
import torch.nn.functional as F
spec = importlib.util.spec_from_file_location("torch_workloads", sys.argv[1])
tw = importlib.util.module_from_spec(spec); spec.loader.exec_module(tw)
torch.manual_seed(0)
net = tw.UNet().cuda(); opt = torch.optim.Adam(net.parameters(), lr=2e-4)
x = torch.randn(128, 3, 32, 32, device="cuda"); t = torch.randint(0, 1000, (128,), device="cuda")
def step(amp=False):
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        loss = F.mse_loss(net(x, t), x)
    loss.backward(); opt.step()
def forward():
    with torch.no_grad():
        net(x, t)
res = []
for name, prec, fn in (("unet_ddpm_train_step(b128,32x32)", "fp32", step),
                       ("unet_ddpm_train_step(b128,32x32)", "tf32", step),
                       ("unet_ddpm_train_step(b128,32x32)", "bf16", lambda: step(True)),
                       ("unet_ddpm_forward(b128,32x32)", "tf32", forward)):
    tf32 = prec == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32; torch.backends.cudnn.allow_tf32 = tf32
    for _ in range(2): fn()
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    for _ in range(3): fn()
    torch.cuda.synchronize()
    r = dict(name=name, prec=prec, peak_alloc_MiB=torch.cuda.max_memory_allocated() / 2**20,
             peak_reserved_MiB=torch.cuda.max_memory_reserved() / 2**20)
    print(f"torch peak memory {name} {prec}: {r['peak_alloc_MiB']:.0f} MiB allocated, {r['peak_reserved_MiB']:.0f} MiB reserved", flush=True)
    res.append(r)
json.dump(res, open(sys.argv[2], "w"), indent=1)
PY
fi

echo
table "$OUT"
