#!/usr/bin/env bash
# Builds the seed corpora and runs each fuzz target for SECONDS (docs/security.md, "Fuzzing"):
#   fuzz/run.sh SECONDS [TARGET...]     (TARGET: safetensors hf_config run_config tokenizer records state_json)
# Expects a COE_FUZZ build in $COE_FUZZ_BUILD (default build-fuzz):
#   CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCOE_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
#   cmake --build build-fuzz
# The corpus each target grows is kept in <build>/fuzz/corpus/<target> (a later run starts from it);
# a crash, leak, timeout (> 1 s) or out-of-memory input lands in <build>/fuzz/artifacts/<target>/ and
# makes the script exit non-zero after the other targets have run. Logs: <build>/fuzz/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
build=${COE_FUZZ_BUILD:-build-fuzz}
targets=("$@")
((${#targets[@]})) || targets=(safetensors hf_config run_config tokenizer records state_json)
work="$build/fuzz"
mkdir -p "$work/logs" "$work/tmp"
python3 fuzz/make_corpus.py "$work/seeds" >/dev/null
export TMPDIR="$PWD/$work/tmp"  # the targets' scratch files (fuzz/fuzz_files.h)
export UBSAN_OPTIONS=print_stacktrace=1

failed=()
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t" "$work/seeds/$t"
  # -max_len: the seeds are at most a few tens of kB (make_corpus.py trims the tokenizers).
  log="$work/logs/$t.log"
  echo "fuzz: $t for ${seconds}s (log: $log)"
  if ! "$build/bin/fuzz_$t" "$work/corpus/$t" "$work/seeds/$t" -max_total_time="$seconds" -timeout=1 \
      -rss_limit_mb=2048 -detect_leaks=1 -max_len=65536 -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/$t/" >"$log" 2>&1; then
    failed+=("$t")
    grep -E "^(==[0-9]+==ERROR|SUMMARY|coe fuzz:)|Test unit written to|runtime error" "$log" | head -5 || true
  fi
  # The figures of docs/security.md: executions, exec/s, corpus, coverage.
  execs=$(grep -oE 'stat::number_of_executed_units: +[0-9]+' "$log" | grep -o '[0-9]*$' || echo "?")
  rate=$(grep -oE 'stat::average_exec_per_sec: +[0-9]+' "$log" | grep -o '[0-9]*$' || echo "?")
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  echo "fuzz: $t: executions $execs, exec/s $rate, $(echo "$last" | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' || true)"
done
rm -rf "${work:?}/tmp"
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (inputs in $work/artifacts/)" >&2
  exit 1
fi
