#!/usr/bin/env python3
"""The reference side of coe's tokenizer differential test: Hugging Face `tokenizers` (the Rust
library, PyPI package pinned in tools/requirements.txt) encoding and decoding JSONL records.

  python tools/hf_oracle.py --tokenizer FILE --input IN.jsonl --output OUT.jsonl [--decode] [--batch N]
  python tools/hf_oracle.py --tokenizer FILE --input IN.jsonl --bench [--field F]... [--repeat K]

Encoding (default): {"text": ...} lines -> {"ids": [...], "text": decode(ids, False),
"text_skip": decode(ids, True)} lines, encode(text, add_special_tokens=False) as in coe.
--decode: {"ids": [...]} lines -> {"text": ..., "text_skip": ...} lines.
--bench: encodes the records' fields (joined by a space, as coe-tokenize --bench) K times with
encode_batch and prints tokens/s; reading is not timed.
One line out per line in, in order. A bad line stops the run with its number on stderr, exit 1.
"""
import argparse
import json
import os
import sys
import time


def main():
    p = argparse.ArgumentParser(prog="hf_oracle")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output")
    p.add_argument("--decode", action="store_true")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--bench", action="store_true")
    p.add_argument("--field", action="append", default=[])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    if args.batch <= 0:
        p.error("--batch must be a positive integer")
    if not args.bench and not args.output:
        p.error("--output is required unless --bench")

    import tokenizers

    tok = tokenizers.Tokenizer.from_file(args.tokenizer)
    with open(args.input, encoding="utf-8", newline="\n") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()

    if args.bench:
        fields = args.field or ["text"]
        texts = [" ".join(json.loads(line)[k] for k in fields) for line in lines]
        size = sum(len(t.encode("utf-8")) for t in texts)
        threads = os.environ.get("RAYON_NUM_THREADS", "all cores")
        print(f"bench: {len(texts)} documents, {size} bytes, tokenizer {os.path.basename(args.tokenizer)}, "
              f"HF tokenizers {tokenizers.__version__} encode_batch (RAYON_NUM_THREADS={threads})", flush=True)
        for n in range(1, args.repeat + 1):
            start = time.perf_counter()
            count = 0
            for i in range(0, len(texts), args.batch):
                count += sum(len(e.ids) for e in tok.encode_batch(texts[i:i + args.batch], add_special_tokens=False))
            seconds = time.perf_counter() - start
            print(f"pass {n}: {count} tokens in {seconds:.3f} s = {round(count / seconds)} tokens/s", flush=True)
        return 0

    key = "ids" if args.decode else "text"
    values = []
    for number, line in enumerate(lines, 1):
        try:
            value = json.loads(line)[key]
        except (ValueError, KeyError, TypeError) as e:
            sys.exit(f"hf_oracle: {args.input}:{number}: {e}")
        if args.decode and not (isinstance(value, list) and all(isinstance(i, int) for i in value)):
            sys.exit(f"hf_oracle: {args.input}:{number}: 'ids' is not an array of integers")
        if not args.decode and not isinstance(value, str):
            sys.exit(f"hf_oracle: {args.input}:{number}: 'text' is not a string")
        values.append(value)

    with open(args.output, "w", encoding="utf-8", newline="\n") as out:
        for i in range(0, len(values), args.batch):
            batch = values[i:i + args.batch]
            ids = batch if args.decode else [e.ids for e in tok.encode_batch(batch, add_special_tokens=False)]
            texts = tok.decode_batch(ids, skip_special_tokens=False)
            skipped = tok.decode_batch(ids, skip_special_tokens=True)
            for k in range(len(batch)):
                record = {"text": texts[k], "text_skip": skipped[k]}
                if not args.decode:
                    record = {"ids": ids[k], **record}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
