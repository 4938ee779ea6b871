#!/usr/bin/env bash
# The GPU checks of issues 5 and 6 in one run on a CUDA machine (docs/performance.md#gpu):
#   1. build with the CUDA libtorch of the machine's pip torch;
#   2. model parity on CUDA: the reference fixtures in float32 with the segmented and the grouped
#      expert dispatch, and bf16 autocast logits (test_model_parity), plus the dispatch tests;
#   3. coe-bench on the paper's MoE(K=8, N=64) and CoE(C=2, K=4, N=64), batch 64 x 512, bf16,
#      with each dispatch;
#   4. coe-memory --measure under the paper's memory protocol (micro-batch 1, activation
#      checkpointing) for MoE 8/64 and CoE 4/48, beside the analytic estimate.
# Logs and JSON go to OUT_DIR; a summary table is printed last.
#
# The fixtures do not travel with the repository to the GPU machine: copy them into the ignored
# folder .shared first and carry it (COE_SHARED points the tests at it):
#   mkdir -p .shared && cp -r ../shared/fixtures .shared/
#   device tool: run(command="./tools/gpu-check.sh $OUT", carry=[".shared"])
# Options (environment): MICRO_BATCH (coe-bench, default 16), STEPS (default 10), WARMUP (default 3),
# DISPATCHES (default "grouped segmented"), SKIP_BUILD=1 (reuse build-cuda/).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/gpu-check.sh OUT_DIR}
mkdir -p "$out"
micro=${MICRO_BATCH:-16}
steps=${STEPS:-10}
warmup=${WARMUP:-3}
dispatches=${DISPATCHES:-grouped segmented}
export COE_SHARED=${COE_SHARED:-$PWD/.shared}
status=0

{
  date -u +"%Y-%m-%dT%H:%MZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  git log -1 --format='commit %H' 2>/dev/null || true
} | tee "$out/env.txt"

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" >"$out/build.log" 2>&1
  cmake --build build-cuda -j"$(nproc)" --target coe-bench coe-memory coe-train test_model_parity \
    test_model_components >>"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
fi
bin=build-cuda/bin

echo "== parity and dispatch tests (COE_SHARED=$COE_SHARED)"
"$bin/test_model_parity" >"$out/parity.log" 2>&1 || status=1
grep -E "^\[ parity \]|FAILED|SKIPPED" "$out/parity.log" || true
"$bin/test_model_components" --gtest_filter='ExpertDispatch*:Model.*' >"$out/components.log" 2>&1 || status=1
tail -3 "$out/components.log"

echo "== coe-bench (micro-batch $micro, $steps steps after $warmup warm-up)"
for cfg in moe-k8 coe-c2-k4; do
  for d in $dispatches; do
    "$bin/coe-bench" "configs/paper/$cfg.yaml" --set "trainer.expert_dispatch=$d" --micro-batch "$micro" \
      --steps "$steps" --warmup "$warmup" --json "$out/bench-$cfg-$d.json" >"$out/bench-$cfg-$d.log" 2>&1 ||
      { status=1; tail -5 "$out/bench-$cfg-$d.log"; }
  done
done

echo "== coe-memory: paper protocol (micro-batch 1, checkpointing)"
for cfg in moe-k8 coe-c2-k4-n48; do
  "$bin/coe-memory" "configs/paper/$cfg.yaml" --micro-batch 1 --checkpointing --measure \
    --json "$out/memory-$cfg.json" >"$out/memory-$cfg.log" 2>&1 || { status=1; tail -5 "$out/memory-$cfg.log"; }
done

python3 - "$out" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
print("\n| run | dispatch | tokens/s | step ms | MFU | peak GiB |\n| --- | --- | --- | --- | --- | --- |")
for f in sorted(glob.glob(os.path.join(out, "bench-*.json"))):
    j = json.load(open(f))
    name = os.path.basename(f)[len("bench-"):-len(".json")].rsplit("-", 1)[0]
    print(f"| {name} | {j.get('expert_dispatch')} | {j['tokens_per_s']:,.0f} | {j['step_ms']:.1f} | "
          f"{j['mfu']:.3f} | {j['peak_bytes'] / 2**30:.2f} |")
print("\n| config (micro-batch 1, checkpointing) | estimate GiB | measured peak GiB |\n| --- | --- | --- |")
mem = {}
for f in sorted(glob.glob(os.path.join(out, "memory-*.json"))):
    j = json.load(open(f))
    name = os.path.basename(f)[len("memory-"):-len(".json")]
    mem[name] = j.get("measured_peak_bytes", 0)
    print(f"| {name} | {j['estimate_bytes'] / 2**30:.2f} | {mem[name] / 2**30:.2f} |")
if mem.get("moe-k8") and mem.get("coe-c2-k4-n48"):
    print(f"\nCoE 4/48 vs MoE 8/64 measured: {100 * (mem['coe-c2-k4-n48'] / mem['moe-k8'] - 1):+.1f}% (paper: -17.6%)")
EOF
exit $status
