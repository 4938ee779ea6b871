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
  echo "downloading $url"
  # HF_TOKEN never goes on a command line (other users can read those in ps / /proc): curl reads
  # the header from stdin, wget from a private config file.
  if command -v curl >/dev/null 2>&1; then
    local headers=()
    [[ -n "${HF_TOKEN:-}" ]] && headers=(-H @-)
    printf 'Authorization: Bearer %s\n' "${HF_TOKEN:-}" |
      curl -fL --retry 3 --progress-bar "${headers[@]}" -o "$tmp" "$url"
  elif command -v wget >/dev/null 2>&1; then
    if [[ -n "${HF_TOKEN:-}" ]]; then
      local rc=0 wgetrc
      wgetrc=$(mktemp)  # mode 0600
      printf 'header = Authorization: Bearer %s\n' "$HF_TOKEN" >"$wgetrc"
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
