#!/usr/bin/env bash
# The quickstart: install what is missing, build, generate the synthetic data set, train a tiny
# MoE and a tiny Chain-of-Experts model on CPU, evaluate both, and print a comparison table.
#   tools/quickstart.sh [--out DIR] [--bin DIR] [coe-sweep arguments ...]
# --out DIR  everything it makes goes under DIR (default: runs/quickstart-demo in the checkout):
#            DIR/synth.json (the synthetic data), DIR/prepared/ (tokenized), DIR/sweep/ (the two
#            runs, summary.md, the plots). Run it again to retrain from scratch: the data are
#            reused and DIR/sweep/ is replaced, only when it is a coe sweep directory.
# --bin DIR  use the coe tools built in DIR (e.g. build/bin): nothing is installed or built, and
#            the checkout is only read.
# Other arguments go to coe-sweep (e.g. --only coe-c2-k2, --set trainer.total_steps=50).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/runs/quickstart-demo"
bin=""
sweep_args=()
while (($#)); do
  case "$1" in
    --out | --bin)
      [[ $# -ge 2 && -n "$2" ]] || {
        echo "error: $1 needs a directory" >&2
        exit 2
      }
      if [[ "$1" == --out ]]; then out="$2"; else bin="$2"; fi
      shift 2
      ;;
    -h | --help)
      sed -n '2,11p' "$0"
      exit 0
      ;;
    *)
      sweep_args+=("$1")
      shift
      ;;
  esac
done

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [[ -z "$bin" ]]; then
  step "dependencies (Debian packages)"
  "$root/tools/install-deps.sh"
  step "build (build/bin)"
  cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$root/build" -j"$(nproc)" --target coe-prepare coe-train coe-eval coe-sweep coe-plot
  bin="$root/build/bin"
fi
bin="$(cd "$bin" && pwd)"
for tool in coe-prepare coe-train coe-eval coe-sweep coe-plot; do
  [[ -x "$bin/$tool" ]] || {
    echo "error: $bin/$tool not found: build it first (or leave out --bin)" >&2
    exit 1
  }
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"
sweep="$out/sweep"

step "synthetic data (SYNTHETIC arithmetic word problems, MetaMathQA format): $out/synth.json"
[[ -f "$out/synth.json" ]] || "$bin/coe-prepare" synth --records 5000 --seed 1 --out "$out/synth.json"

step "train and evaluate MoE (C=1, K=4) and CoE (C=2, K=2) on CPU"
# Only a directory coe-sweep made (it holds its lock file) is removed; anything else stays.
if [[ -e "$sweep" || -L "$sweep" ]]; then
  if [[ -f "$sweep/.coe-lock" && ! -L "$sweep" && ! -L "$sweep/.coe-lock" ]]; then
    rm -rf "$sweep"
  else
    echo "error: $sweep exists and is not a coe sweep directory; choose another --out" >&2
    exit 1
  fi
fi
# A value as a single-quoted YAML scalar: the paths may hold any character.
yaml_quote() { printf "'%s'" "${1//\'/\'\'}"; }
start=$(date +%s)
"$bin/coe-sweep" "$root/configs/sweeps/quickstart.yaml" --out "$sweep" \
  --set "data.train_files=[$(yaml_quote "$out/synth.json")]" --set "data.prepared_dir=$(yaml_quote "$out/prepared")" \
  "${sweep_args[@]}"
end=$(date +%s)

step "result (synthetic data, CPU, $((end - start)) s for both runs): $sweep/summary.md"
sed -n '/^| variant/,/^$/{/^$/q;p}' "$sweep/summary.md"

step "curves of the runs (coe-plot): $sweep/run-plots/"
runs=()
for v in moe-c1-k4 coe-c2-k2; do
  if [[ -f "$sweep/$v/metrics.jsonl" ]]; then runs+=("$sweep/$v"); fi
done
"$bin/coe-plot" "${runs[@]}" --out "$sweep/run-plots"
