#!/usr/bin/env bash
# The GPU checks in one run on a CUDA machine (docs/performance.md#gpu):
#   1. configure and build through coe's own CMake path (cmake/CoeDependencies.cmake finds the
#      machine's preinstalled pip torch through python3; nothing is installed, no network needed);
#   2. model parity on CUDA: the reference fixtures in float32 with the segmented and the grouped
#      expert dispatch, and bf16 autocast logits (test_model_parity), plus the dispatch tests;
#   3. coe-bench on the paper's MoE(K=8, N=64) and CoE(C=2, K=4, N=64), batch 64 x 512, bf16,
#      with each dispatch;
#   4. coe-memory --measure under the paper's memory protocol (micro-batch 1, activation
#      checkpointing) for MoE 8/64 and CoE 4/48, beside the analytic estimate.
# OUT_DIR receives at most 8 files: env.txt, build.log, tests.log, bench.log, memory.log,
# results.jsonl (one JSON object per bench / memory run) and summary.md. Any failure is printed
# (the last lines of its log) and makes the exit status non-zero; a failed configure or build
# stops the script at once.
#
# The fixtures do not travel with the repository to the GPU machine: copy them into the ignored
# folder .shared first and carry it (COE_SHARED points the tests at it):
#   mkdir -p .shared && cp -r ../shared/fixtures .shared/
#   device tool: run(command="./tools/gpu-check.sh $OUT", carry=[".shared"])
# Options (environment): MICRO_BATCH (coe-bench, default 16), STEPS (default 10), WARMUP (default 3),
# DISPATCHES (default "grouped segmented"), SKIP_BUILD=1 (reuse build-cuda/), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/gpu-check.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
micro=${MICRO_BATCH:-16}
steps=${STEPS:-10}
warmup=${WARMUP:-3}
dispatches=${DISPATCHES:-grouped segmented}
python=${PYTHON:-python3}
export COE_SHARED=${COE_SHARED:-$PWD/.shared}
status=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Runs "$@" with its output appended to LOG under a header; on failure prints the tail and marks
# the run failed.
step() {
  local log=$1 name=$2 rc=0
  shift 2
  echo "== $name: $*" >>"$log"
  "$@" >"$work/step.out" 2>&1 || rc=$?
  cat "$work/step.out" >>"$log"
  if ((rc != 0)); then
    status=1
    echo "FAILED: $name (exit status $rc; its last lines, all in $(basename "$log")):"
    tail -15 "$work/step.out" | sed 's/^/  | /'
    return 1
  fi
}

{
  date -u +"%Y-%m-%dT%H:%MZ"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  else
    echo "nvidia-smi: not found"
  fi
  "$python" -W ignore -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' ||
    echo "error: $python cannot import torch"
  git log -1 --format='commit %H' 2>/dev/null || true
} | tee "$out/env.txt"

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  : >"$out/build.log"
  if ! cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOE_PYTHON="$(command -v "$python")" \
    -DCOE_REQUIRE_CUDA=ON >>"$out/build.log" 2>&1; then
    echo "error: configuring coe failed (build.log):"
    tail -40 "$out/build.log"
    exit 1
  fi
  if ! cmake --build build-cuda -j"$(nproc)" --target coe-bench coe-memory coe-train test_model_parity \
    test_model_components >>"$out/build.log" 2>&1; then
    echo "error: building coe failed (build.log):"
    grep -m 20 -E 'error|Error' "$out/build.log" || tail -40 "$out/build.log"
    exit 1
  fi
fi
bin=build-cuda/bin
"$bin/coe-train" --version | tee -a "$out/env.txt"

echo "== parity and dispatch tests (COE_SHARED=$COE_SHARED)"
: >"$out/tests.log"
step "$out/tests.log" parity "$bin/test_model_parity" || true
step "$out/tests.log" dispatch "$bin/test_model_components" --gtest_filter='ExpertDispatch*:Model.*' || true
grep -E "^\[ parity \]|FAILED|SKIPPED|PASSED" "$out/tests.log" || true

echo "== coe-bench (micro-batch $micro, $steps steps after $warmup warm-up)"
: >"$out/bench.log"
for cfg in moe-k8 coe-c2-k4; do
  for d in $dispatches; do
    step "$out/bench.log" "bench $cfg $d" "$bin/coe-bench" "configs/paper/$cfg.yaml" --set "trainer.expert_dispatch=$d" \
      --micro-batch "$micro" --steps "$steps" --warmup "$warmup" --json "$work/bench-$cfg-$d.json" || true
  done
done

echo "== coe-memory: paper protocol (micro-batch 1, checkpointing)"
: >"$out/memory.log"
for cfg in moe-k8 coe-c2-k4-n48; do
  step "$out/memory.log" "memory $cfg" "$bin/coe-memory" "configs/paper/$cfg.yaml" --micro-batch 1 --checkpointing \
    --measure --json "$work/memory-$cfg.json" || true
done

"$python" - "$work" "$out" <<'PY' | tee "$out/summary.md"
import glob, json, os, sys
work, out = sys.argv[1], sys.argv[2]
with open(os.path.join(out, "results.jsonl"), "w") as results:
    for f in sorted(glob.glob(os.path.join(work, "*.json"))):
        j = json.load(open(f))
        j["run"] = os.path.basename(f)[:-len(".json")]
        results.write(json.dumps(j) + "\n")
print("| run | dispatch | tokens/s | step ms | MFU | peak GiB |\n| --- | --- | --- | --- | --- | --- |")
for f in sorted(glob.glob(os.path.join(work, "bench-*.json"))):
    j = json.load(open(f))
    name = os.path.basename(f)[len("bench-"):-len(".json")].rsplit("-", 1)[0]
    print(f"| {name} | {j.get('expert_dispatch')} | {j['tokens_per_s']:,.0f} | {j['step_ms']:.1f} | "
          f"{j['mfu']:.3f} | {j['peak_bytes'] / 2**30:.2f} |")
print("\n| config (micro-batch 1, checkpointing) | estimate GiB | measured peak GiB |\n| --- | --- | --- |")
mem = {}
for f in sorted(glob.glob(os.path.join(work, "memory-*.json"))):
    j = json.load(open(f))
    name = os.path.basename(f)[len("memory-"):-len(".json")]
    mem[name] = j.get("measured_peak_bytes", 0)
    print(f"| {name} | {j['estimate_bytes'] / 2**30:.2f} | {mem[name] / 2**30:.2f} |")
if mem.get("moe-k8") and mem.get("coe-c2-k4-n48"):
    print(f"\nCoE 4/48 vs MoE 8/64 measured: {100 * (mem['coe-c2-k4-n48'] / mem['moe-k8'] - 1):+.1f}% (paper: -17.6%)")
PY
[[ $status == 0 ]] && echo "gpu-check: every check passed" || echo "gpu-check: some checks FAILED (see above)"
exit $status
