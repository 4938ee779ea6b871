#!/usr/bin/env bash
# Fetches the data the shipped configs name as $COE_DATA/... into a data root (needs internet; the
# tests run only --dry-run). Usage:
#   tools/download-data.sh [DEST] [--only gsm8k|metamathqa] [--force] [--dry-run]
# DEST: $COE_DATA when it is set, else the checkout's data/ (what $COE_DATA means when unset).
#   gsm8k       DEST/gsm8k/{train,test}.jsonl                    GSM8K (github openai/grade-school-math)
#               DEST/tokenizers/gpt-neox-tokenizer.json          EleutherAI/gpt-neox-20b
#   metamathqa  DEST/metamathqa/MetaMathQA-395K.json             meta-math/MetaMathQA (HF dataset)
#               DEST/tokenizers/deepseek-v2-lite-tokenizer.json  deepseek-ai/DeepSeek-V2-Lite
# The layout is ../shared/data's, so COE_DATA=../shared/data and a download are interchangeable: the
# GSM8K files are written byte for byte as there (one JSON object per line, as Python's json.dumps
# writes it) and checked by sha256. HF_ENDPOINT selects a Hugging Face mirror; HF_TOKEN adds
# authentication (sent to it only). Existing files are kept unless --force is given. --dry-run
# prints "URL -> FILE" for each file and fetches nothing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${COE_DATA:-$root/data}"
force=0
dry_run=0
only=""
while (($#)); do
  case "$1" in
    --force) force=1 ;;
    --dry-run) dry_run=1 ;;
    --only)
      [[ $# -ge 2 && ($2 == gsm8k || $2 == metamathqa) ]] || {
        echo "error: --only takes gsm8k or metamathqa" >&2
        exit 2
      }
      only="$2"
      shift
      ;;
    -h | --help)
      sed -n '2,14p' "$0"
      exit 0
      ;;
    -*)
      echo "error: unknown option $1 (see --help)" >&2
      exit 2
      ;;
    *) dest="$1" ;;
  esac
  shift
done
endpoint="${HF_ENDPOINT:-https://huggingface.co}"
# GSM8K's original JSONL files (the HF dataset openai/gsm8k holds the same records as parquet),
# pinned to a commit, and the sha256 of each file as written here (= ../shared/data's).
gsm8k_commit=3101c7d5072418e28b9008a6636bde82a006892c
gsm8k_url="https://raw.githubusercontent.com/openai/grade-school-math/$gsm8k_commit/grade_school_math/data"
declare -A gsm8k_sha256=(
  [train]=6043ef64147b59871f4fd3adf669c306fe0a4c27e5a5c4bfb761f3f084895a13
  [test]=752adc99f23132275139f1f7be57126b08735a55daf0c56859ee6df70abafbac
)

# fetch URL FILE [SHA256]: downloads URL to FILE (complete downloads only get the final name).
fetch() {
  local url="$1" out="$2" sha="${3:-}"
  if ((dry_run)); then
    echo "$url -> $out${sha:+ (sha256 $sha)}"
    return
  fi
  if [[ -s "$out" && "$force" -eq 0 ]]; then
    echo "keeping $out (use --force to download again)"
    return
  fi
  mkdir -p "$(dirname "$out")"
  local tmp="$out.part"
  echo "downloading $url"
  # HF_TOKEN goes to the Hugging Face endpoint only, and never on a command line (other users can
  # read those in ps / /proc): curl reads the header from stdin, wget from a private config file.
  local token=""
  [[ "$url" == "$endpoint/"* ]] && token="${HF_TOKEN:-}"
  if command -v curl >/dev/null 2>&1; then
    if [[ -n "$token" ]]; then
      printf 'Authorization: Bearer %s\n' "$token" | curl -fL --retry 3 --progress-bar -H @- -o "$tmp" "$url"
    else
      curl -fL --retry 3 --progress-bar -o "$tmp" "$url"
    fi
  elif command -v wget >/dev/null 2>&1; then
    if [[ -n "$token" ]]; then
      local rc=0 wgetrc
      wgetrc=$(mktemp) # mode 0600
      printf 'header = Authorization: Bearer %s\n' "$token" >"$wgetrc"
      WGETRC="$wgetrc" wget -q --show-progress --tries=3 -O "$tmp" "$url" || rc=$?
      rm -f "$wgetrc"
      ((rc == 0)) || exit "$rc"
    else
      wget -q --show-progress --tries=3 -O "$tmp" "$url"
    fi
  else
    echo "error: neither curl nor wget is installed" >&2
    exit 1
  fi
  if [[ -n "$sha" ]]; then
    # One JSON object per line as json.dumps(ensure_ascii=False) writes it: ../shared/data's bytes.
    python3 -c 'import json, sys
with open(sys.argv[1], encoding="utf-8") as src, open(sys.argv[2], "w", encoding="utf-8", newline="\n") as out:
    for line in src:
        if line.strip():
            out.write(json.dumps(json.loads(line), ensure_ascii=False) + "\n")' "$tmp" "$tmp.jsonl"
    mv "$tmp.jsonl" "$tmp"
    if ! echo "$sha  $tmp" | sha256sum --check --status; then
      rm -f "$tmp"
      echo "error: $url: the file differs from the GSM8K release coe expects (sha256 $sha)" >&2
      exit 1
    fi
  fi
  mv "$tmp" "$out"
  echo "  -> $out ($(wc -c <"$out") bytes)"
}

if [[ -z "$only" || "$only" == gsm8k ]]; then
  for split in train test; do
    fetch "$gsm8k_url/$split.jsonl" "$dest/gsm8k/$split.jsonl" "${gsm8k_sha256[$split]}"
  done
  fetch "$endpoint/EleutherAI/gpt-neox-20b/resolve/main/tokenizer.json" "$dest/tokenizers/gpt-neox-tokenizer.json"
fi
if [[ -z "$only" || "$only" == metamathqa ]]; then
  fetch "$endpoint/datasets/meta-math/MetaMathQA/resolve/main/MetaMathQA-395K.json" \
    "$dest/metamathqa/MetaMathQA-395K.json"
  fetch "$endpoint/deepseek-ai/DeepSeek-V2-Lite/resolve/main/tokenizer.json" \
    "$dest/tokenizers/deepseek-v2-lite-tokenizer.json"
fi
((dry_run)) && exit 0
if [[ "$dest" != "${COE_DATA:-$root/data}" ]]; then
  echo "done. The shipped configs read it with COE_DATA=$dest"
else
  echo "done."
fi
