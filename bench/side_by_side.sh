#!/usr/bin/env bash
# The side-by-side runner: ember's bench and ../shared/reference/torch_workloads.py on the same
# workloads, in one run on one machine, and the ratio of the medians.
#   bench/side_by_side.sh [build dir] [workload group: dde]
# Needs python3 with torch for the PyTorch side (on the GPU machine it uses CUDA, here the CPU).
set -euo pipefail
BUILD=${1:-build}
GROUP=${2:-dde}
REF=${EMBER_TORCH_WORKLOADS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/reference/torch_workloads.py}
OUT=$(mktemp -d)
"$BUILD/bench/ember_bench" --benchmark_filter="^${GROUP}_" --benchmark_repetitions=5 \
  --benchmark_report_aggregates_only=true --benchmark_format=json --benchmark_out="$OUT/ember.json" \
  --benchmark_out_format=json > /dev/null
EMBER_BENCH_OUT="$OUT" python3 "$REF" "$GROUP" > "$OUT/torch.txt"
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
ember = {}
for b in json.load(open(os.path.join(out, "ember.json")))["benchmarks"]:
    if b.get("aggregate_name") == "median":
        ember[b["run_name"].split("/")[0]] = b["real_time"]  # ms (benchmarks use kMillisecond)
torch = {r["name"]: r["median_ms"] for r in json.load(open(os.path.join(out, "torch_anchors.json")))}
print(open(os.path.join(out, "torch.txt")).readline().strip())
print(f"{'workload':42s} {'ember ms':>10s} {'torch ms':>10s} {'torch/ember':>12s}")
for name, t in torch.items():
    if name in ember:
        print(f"{name:42s} {ember[name]:10.2f} {t:10.2f} {t / ember[name]:12.2f}")
PY
