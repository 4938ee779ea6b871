#!/usr/bin/env bash
# The quickstart: install what is missing, build, generate the synthetic data set, train a tiny
# MoE and a tiny Chain-of-Experts model on CPU, evaluate both, and print a comparison table.
# Extra arguments go to coe-sweep (e.g. --only coe-c2-k2). Run it again to retrain from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "dependencies (Debian packages)"
./tools/install-deps.sh

step "build (build/bin)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"$(nproc)" --target coe-prepare coe-train coe-eval coe-sweep coe-plot

step "synthetic data (SYNTHETIC arithmetic word problems, MetaMathQA format)"
mkdir -p data/synth
[ -f data/synth/synth.json ] || build/bin/coe-prepare synth --records 5000 --seed 1 --out data/synth/synth.json

step "train and evaluate MoE (C=1, K=4) and CoE (C=2, K=2) on CPU"
rm -rf runs/sweeps/quickstart
start=$(date +%s)
build/bin/coe-sweep configs/sweeps/quickstart.yaml "$@"
end=$(date +%s)

step "result (synthetic data, CPU, $((end - start)) s for both runs): runs/sweeps/quickstart/summary.md"
sed -n '/^| variant/,/^$/p' runs/sweeps/quickstart/summary.md | head -n 4

step "curves of the runs (coe-plot): runs/sweeps/quickstart/run-plots/"
runs=()
for v in moe-c1-k4 coe-c2-k2; do
  if [ -f "runs/sweeps/quickstart/$v/metrics.jsonl" ]; then runs+=("runs/sweeps/quickstart/$v"); fi
done
build/bin/coe-plot "${runs[@]}" --out runs/sweeps/quickstart/run-plots
