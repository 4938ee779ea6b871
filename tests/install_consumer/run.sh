#!/usr/bin/env bash
# coe as an installed package (docs/install.md), checked from outside its tree:
#   tests/install_consumer/run.sh [BUILD_DIR]      (default: the checkout's build/)
# installs BUILD_DIR into a temporary prefix; builds this folder's project against it with
# find_package(coe) and runs it on a reference fixture (its logits within 1e-4 of the reference
# implementation's); runs the installed coe-train --version (libtorch found through the installed
# RPATH) and the installed coe-plot, which must draw with the installed share/coe/plot_run.gp.
set -euo pipefail
src="$(cd "$(dirname "$0")/../.." && pwd)"
build="$(cd "${1:-$src/build}" && pwd)"
shared="${COE_SHARED:-$src/../shared}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
# Each step's output is shown only when it fails.
quiet() { "$@" > "$tmp/step.log" 2>&1 || { cat "$tmp/step.log"; echo "install_consumer: failed: $*" >&2; exit 1; }; }

quiet cmake --install "$build" --prefix "$prefix"
quiet cmake -S "$src/tests/install_consumer" -B "$tmp/consumer" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix"
quiet cmake --build "$tmp/consumer"
out="$("$tmp/consumer/coe-consumer" "$shared/fixtures/coe_c2_igate_inner_yarn")"
echo "install_consumer: coe-consumer: $out"
diff="${out##*max_abs_diff=}"
awk -v d="$diff" 'BEGIN { exit !(d + 0 <= 1e-4 && d != "") }' ||
  { echo "install_consumer: the logits differ from the reference by $diff (more than 1e-4)" >&2; exit 1; }

version="$("$prefix/bin/coe-train" --version)"
echo "install_consumer: $version"
[[ "$version" == "coe-train "* ]] || { echo "install_consumer: unexpected --version: $version" >&2; exit 1; }

if command -v gnuplot > /dev/null; then
  # A gnuplot print at the top of the installed script marks it in gnuplot's log.
  script="$prefix/share/coe/plot_run.gp"
  chmod u+w "$script"
  { echo 'print "installed plot_run.gp"'; cat "$script"; } > "$tmp/plot_run.gp" && mv "$tmp/plot_run.gp" "$script"
  mkdir -p "$tmp/run"
  for step in 1 2 3 4; do
    echo "{\"step\": $step, \"loss\": $((10 - step)).5, \"lr\": 0.00$step, \"grad_norm\": $step.25, \"tokens_per_s\": 100$step}"
  done > "$tmp/run/metrics.jsonl"
  quiet "$prefix/bin/coe-plot" "$tmp/run" --out "$tmp/plots"
  grep -q "installed plot_run.gp" "$tmp/plots/gnuplot.log" ||
    { echo "install_consumer: the installed coe-plot did not run the installed plot_run.gp" >&2; exit 1; }
  [[ -s "$tmp/plots/loss.png" ]] || { echo "install_consumer: the installed coe-plot drew no loss.png" >&2; exit 1; }
  echo "install_consumer: the installed coe-plot drew with the installed plot_run.gp"
else
  echo "install_consumer: gnuplot is not installed: the installed coe-plot is not checked"
fi
echo "install_consumer: ok"
