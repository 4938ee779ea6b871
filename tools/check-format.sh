#!/usr/bin/env bash
# Checks that every C++ file of the working tree is formatted as .clang-format says (CI runs it);
# `--fix` reformats them in place. Generated files (first line "// @generated ...") are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "error: clang-format is not installed (apt-get install clang-format)"; exit 1; }
files=()
# The working tree's files: tracked ones still there, and new ones not yet added (not ignored).
while IFS= read -r f; do
  [[ -f "$f" ]] || continue
  head -n 1 "$f" | grep -q '^// @generated' || files+=("$f")
done < <(git ls-files --cached --others --exclude-standard '*.cpp' '*.h' | sort -u)
if [[ "${1:-}" == "--fix" ]]; then
  clang-format -i "${files[@]}"
  exit 0
fi
if ! clang-format --dry-run --Werror "${files[@]}" 2>/tmp/coe-format.$$; then
  grep -E '^[^ ].*: (warning|error):' /tmp/coe-format.$$ | cut -d: -f1 | sort -u | sed 's/^/not formatted: /'
  rm -f /tmp/coe-format.$$
  echo "error: run tools/check-format.sh --fix (clang-format $(clang-format --version | grep -oE '[0-9]+\.[0-9.]+' | head -1))"
  exit 1
fi
rm -f /tmp/coe-format.$$
echo "format: ${#files[@]} files formatted as .clang-format says"
