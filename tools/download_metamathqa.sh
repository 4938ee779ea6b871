#!/usr/bin/env bash
# Fetches the reference's training data and tokenizer into data/ (needs internet; tests never run
# this). Usage: tools/download_metamathqa.sh [DEST] [--force]
#   DEST/metamathqa/MetaMathQA-395K.json             meta-math/MetaMathQA (dataset repo)
#   DEST/tokenizers/deepseek-v2-lite/tokenizer.json  deepseek-ai/DeepSeek-V2-Lite
# DEST defaults to the repository's data/ folder. Set HF_ENDPOINT to use a mirror, HF_TOKEN if
# your network requires authentication. Existing files are kept unless --force is given.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/data"
force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) dest="$arg" ;;
  esac
done
endpoint="${HF_ENDPOINT:-https://huggingface.co}"

fetch() {
  local url="$1" out="$2"
  if [[ -s "$out" && "$force" -eq 0 ]]; then
    echo "keeping $out (use --force to download again)"
    return
  fi
  mkdir -p "$(dirname "$out")"
  local tmp="$out.part"
  local auth=()
  echo "downloading $url"
  if command -v curl >/dev/null 2>&1; then
    [[ -n "${HF_TOKEN:-}" ]] && auth=(-H "Authorization: Bearer $HF_TOKEN")
    curl -fL --retry 3 --progress-bar "${auth[@]}" -o "$tmp" "$url"
  elif command -v wget >/dev/null 2>&1; then
    [[ -n "${HF_TOKEN:-}" ]] && auth=(--header "Authorization: Bearer $HF_TOKEN")
    wget -q --show-progress --tries=3 "${auth[@]}" -O "$tmp" "$url"
  else
    echo "error: neither curl nor wget is installed" >&2
    exit 1
  fi
  mv "$tmp" "$out"  # only complete downloads get the final name
  echo "  -> $out ($(wc -c <"$out") bytes)"
}

fetch "$endpoint/datasets/meta-math/MetaMathQA/resolve/main/MetaMathQA-395K.json" \
  "$dest/metamathqa/MetaMathQA-395K.json"
fetch "$endpoint/deepseek-ai/DeepSeek-V2-Lite/resolve/main/tokenizer.json" \
  "$dest/tokenizers/deepseek-v2-lite/tokenizer.json"

cat <<NEXT
done. Prepare it as the reference did (1000 random records held out, seed 42, NumPy's draw):
  build/bin/coe-prepare --input $dest/metamathqa/MetaMathQA-395K.json \\
    --tokenizer $dest/tokenizers/deepseek-v2-lite/tokenizer.json --out $dest/prepared/metamathqa \\
    --text-keys query,response --val-count 1000 --seed 42 --split-rng numpy
NEXT
