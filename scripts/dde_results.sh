#!/usr/bin/env bash
# Reproduces the figures of docs/results.md: `ember dde` at its default settings on three 2-D
# toys, and the likelihood check on the 6-D Gaussian. Usage: scripts/dde_results.sh [build dir]
set -euo pipefail
BUILD=${1:-build}
OUT=${OUT:-runs/results}
mkdir -p "$OUT"
for data in checkerboard 8gaussians 2spirals; do
  /usr/bin/time -f "$data: %e s wall" "$BUILD/ember" dde --data "$data" --out "$OUT/$data" 2>&1 | grep -v ETA
done
/usr/bin/time -f "gaussian6d: %e s wall" "$BUILD/ember" dde --data gaussian6d --out "$OUT/gaussian6d" 2>&1 | grep -v ETA
for d in "$OUT"/*/; do echo "$d: $(cat "$d/results.json")"; done
