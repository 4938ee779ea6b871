#!/usr/bin/env bash
# The quickstart: install what is missing, build, generate the synthetic data set, train a tiny
# MoE and a tiny Chain-of-Experts model on CPU, evaluate both, and print a comparison table.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "dependencies (Debian packages)"
./tools/install-deps.sh

step "build (build/bin)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"$(nproc)" --target coe-prepare coe-train coe-eval

step "synthetic data (SYNTHETIC arithmetic word problems, MetaMathQA format)"
mkdir -p data/synth
[ -f data/synth/synth.json ] || build/bin/coe-prepare synth --records 5000 --seed 1 --out data/synth/synth.json

start=$(date +%s)
for cfg in quickstart quickstart-coe; do
  step "train configs/$cfg.yaml"
  build/bin/coe-train "configs/$cfg.yaml" "$@"
done

step "evaluate on the held-out synthetic records"
for cfg in quickstart quickstart-coe; do
  build/bin/coe-eval --checkpoint "runs/$cfg" --data data/prepared/quickstart --split val \
    --max-length 256 --json "runs/$cfg/eval.json" > "runs/$cfg/eval.txt"
done
end=$(date +%s)

step "result (synthetic data, CPU, $((end - start)) s for both runs)"
python3 - <<'PY' 2>/dev/null || { for cfg in quickstart quickstart-coe; do cat runs/$cfg/eval.json; done; }
import json
rows = []
for name, label in (("quickstart", "MoE  C=1 K=4"), ("quickstart-coe", "CoE  C=2 K=2")):
    final = json.load(open(f"runs/{name}/final.json"))
    ev = json.load(open(f"runs/{name}/eval.json"))
    rows.append((label, ev["val_loss"], ev["accuracy"], final.get("tokens_per_s", 0), final.get("params", 0)))
print(f"{'model':<14} {'val loss':>9} {'next-tok acc':>13} {'tokens/s':>9} {'params':>9}")
for label, loss, acc, tps, params in rows:
    print(f"{label:<14} {loss:>9.4f} {acc:>13.3f} {tps:>9.0f} {params:>9}")
PY
