#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into OUT/<target>/ from the repository's configs and
fuzz/seeds/ and the shared test data (../shared, or $COE_SHARED): fixtures' config.json, their
safetensors headers (cut to the header plus a little data, and small valid files in their image),
trimmed tokenizer.json files, GSM8K records. Nothing of ../shared goes into the repository: the
corpus lives in the build folder. Standard library only.

Usage: fuzz/make_corpus.py OUT
"""
import hashlib
import json
import os
import re
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("COE_SHARED", REPO.parent / "shared"))
SEP = "\n#--next-file--\n"  # fuzz/fuzz_files.h's split_files


def put(out: Path, target: str, data, name: str = "") -> None:
    if isinstance(data, str):
        data = data.encode()
    folder = out / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (name or hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds(out: Path) -> None:
    sizes = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
    for f in sorted(SHARED.glob("fixtures/*/*.safetensors")):
        raw = f.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        put(out, "safetensors", raw[: 8 + n + 64])  # the real header, data cut short
        header = json.loads(raw[8 : 8 + n])
        # The same header in a small valid file: the first tensors, each shrunk to two elements.
        small, offset = {"__metadata__": header.get("__metadata__", {"format": "pt"})}, 0
        for name, e in [kv for kv in header.items() if kv[0] != "__metadata__"][:6]:
            nbytes = 2 * sizes[e["dtype"]]
            shape = [2] if len(e["shape"]) <= 1 else [1, 2]
            small[name] = {"dtype": e["dtype"], "shape": shape, "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        put(out, "safetensors", safetensors_bytes(small, bytes(range(offset))))
        names = [k for k in header if k != "__metadata__"]
        index = {"metadata": {"total_size": offset},
                 "weight_map": {k: f"model-0000{i % 2 + 1}-of-00002.safetensors" for i, k in enumerate(names[:40])}}
        put(out, "safetensors", json.dumps(index, indent=2))
    dtypes = list(sizes)
    header, offset = {}, 0
    for i, dt in enumerate(dtypes):
        header[f"t.{dt.lower()}"] = {"dtype": dt, "shape": [i % 3 + 1, 2], "data_offsets": [offset, offset + (i % 3 + 1) * 2 * sizes[dt]]}
        offset += (i % 3 + 1) * 2 * sizes[dt]
    put(out, "safetensors", safetensors_bytes(header, b"\x01" * offset))
    put(out, "safetensors", safetensors_bytes({"empty": {"dtype": "F32", "shape": [0, 4], "data_offsets": [0, 0]}}, b""))


def config_seeds(out: Path) -> list:
    found = []
    for f in sorted(SHARED.glob("fixtures/*/config.json")):
        put(out, "hf_config", f.read_bytes())
        found.append(f.read_text())
    return found


# ---- run configs: a file and its base: / config: references as f0.yaml .. f3.yaml --------------
REF = re.compile(r"^(\s*(?:-\s+)?(?:base|config|from):\s*)(\S+\.(?:ya?ml|json))\s*$", re.M)


def bundle(main: Path) -> str:
    files, order = {}, [main.resolve()]

    def name_of(path: Path) -> str:
        path = path.resolve()
        if path not in order:
            order.append(path)
        return f"f{order.index(path)}.yaml"

    i = 0
    while i < len(order) and i < 4:
        path = order[i]
        text = path.read_text()

        def rewrite(m):
            ref = (path.parent / m.group(2))
            if not ref.exists():
                return m.group(0)
            if len(order) >= 4 and ref.resolve() not in order:  # four files at most: reuse the first base
                return m.group(1) + "f1.yaml"
            return m.group(1) + name_of(ref)

        files[i] = REF.sub(rewrite, text)
        i += 1
    return SEP.join(files[k] for k in sorted(files))


def run_config_seeds(out: Path, hf_configs: list) -> None:
    for f in sorted((REPO / "configs").rglob("*.yaml")):
        put(out, "run_config", bundle(f))
    quickstart = (REPO / "configs/quickstart.yaml").read_text()
    if hf_configs:  # model.from: an HF config.json beside the run config
        model_from = re.sub(r"^model:\n(?:[ ]+.*\n)+", "model:\n  from: f1.yaml\n  num_hidden_layers: 1\n", quickstart,
                            count=1, flags=re.M)
        put(out, "run_config", model_from + SEP + hf_configs[0])
    for f in sorted((REPO / "fuzz/seeds").glob("run_config*")):
        put(out, "run_config", f.read_bytes())


def trim_tokenizer(tok: dict, keep: int = 600) -> dict:
    """The same normalizer, pre-tokenizer and decoder over the first `keep` ids of the vocabulary,
    the merges among them, and the added tokens renumbered after them."""
    model = tok.get("model", {})
    vocab = {t: i for t, i in model.get("vocab", {}).items() if i < keep}
    merges = []
    for m in model.get("merges", []):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    added = []
    for k, t in enumerate(tok.get("added_tokens", [])[:8]):
        t = dict(t)
        t["id"] = keep + k
        added.append(t)
    trimmed = dict(tok)
    trimmed["model"] = dict(model, vocab=vocab, merges=merges)
    trimmed["added_tokens"] = added
    return trimmed


def tokenizer_seeds(out: Path) -> None:
    texts = []
    for g in sorted(SHARED.glob("data/tokenizers/golden*/*.jsonl")):
        with open(g) as lines:
            for k, line in enumerate(lines):
                if k % 150 == 0 and len(texts) < 12:
                    texts.append(json.loads(line)["text"][:300])
    for f in sorted(SHARED.glob("data/tokenizers/*.json")):
        small = json.dumps(trim_tokenizer(json.loads(f.read_text())), ensure_ascii=False)
        put(out, "tokenizer", small)
        for text in texts[:3]:
            put(out, "tokenizer", small + SEP + text)
    for f in sorted((REPO / "fuzz/seeds").glob("tokenizer*")):
        put(out, "tokenizer", f.read_bytes())


def records_seeds(out: Path) -> None:
    for f in sorted(SHARED.glob("data/gsm8k/*.jsonl")):
        lines = f.read_text().splitlines()
        put(out, "records", "\n".join(lines[:3]) + "\n")
        put(out, "records", "[\n" + ",\n".join(lines[3:5]) + "\n]\n")
        put(out, "records", "\n".join(lines[5:7]) + "\n" + SEP + "Question: {question}\nAnswer: {{{answer}}}")
    for f in sorted((REPO / "fuzz/seeds").glob("records*")):
        put(out, "records", f.read_bytes())


def state_seeds(out: Path) -> None:
    for f in sorted((REPO / "fuzz/seeds").glob("state*.json")):
        put(out, "state_json", f.read_bytes())


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    if not SHARED.is_dir():
        print(f"make_corpus: {SHARED} not found: seeds from the repository only", file=sys.stderr)
    safetensors_seeds(out)
    run_config_seeds(out, config_seeds(out))
    tokenizer_seeds(out)
    records_seeds(out)
    state_seeds(out)
    for target in sorted(p.name for p in out.iterdir() if p.is_dir()):
        print(f"make_corpus: {target}: {len(list((out / target).iterdir()))} seeds")


if __name__ == "__main__":
    main()
