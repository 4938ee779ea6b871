#!/usr/bin/env bash
# Encoding throughput of coe-tokenize and of HF tokenizers (the PyPI package, encode_batch)
# on the same JSONL records, one after the other, with the same number of threads.
#
#   tools/tokenizer-bench-vs-hf.sh TOKENIZER INPUT.jsonl [THREADS] [--field F]...
#
# Needs build/bin/coe-tokenize and the checkout's .venv (tools/install-deps.sh; or PYTHON=...
# with tokenizers installed). HF's thread count is set with RAYON_NUM_THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
if (($# < 2)); then
  echo "usage: $0 TOKENIZER INPUT.jsonl [THREADS] [--field F]..." >&2
  exit 2
fi
tokenizer=$1 input=$2
shift 2
threads=1
if (($#)) && [[ $1 != --* ]]; then
  threads=$1
  shift
fi
python=${PYTHON:-.venv/bin/python3}
echo "== coe ($(git rev-parse --short HEAD 2>/dev/null || echo unknown)), $threads thread(s)"
build/bin/coe-tokenize --tokenizer "$tokenizer" --bench --repeat 5 --threads "$threads" "$@" < "$input"
echo "== HF tokenizers ($("$python" --version)), RAYON_NUM_THREADS=$threads"
RAYON_NUM_THREADS=$threads "$python" tools/hf_oracle.py --tokenizer "$tokenizer" --input "$input" --bench --repeat 5 "$@"
