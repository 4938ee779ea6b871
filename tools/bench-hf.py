#!/usr/bin/env python3
"""coe against Hugging Face transformers on the CPU, in one run, on the same exported model:

  decode tokens/s of coe-generate and of transformers' generate() at batch 1 and batch 32, and
  scoring records/s of coe-eval and of transformers' forward (with the shifted cross-entropy).

    .venv/bin/python3 tools/bench-hf.py --checkpoint RUN_OR_STEP [--checkpoint ...] [--threads 2]
                                        [--prompts 32] [--new-tokens 64] [--records 256] [--rounds 3]

Each checkpoint is exported with build/bin/coe-export (float32) into a temporary folder; both
systems run that folder, with the same torch threads (OMP_NUM_THREADS for coe, set_num_threads for
transformers), the same prompts ("question : <q> answer :" of the first GSM8K test records, as
coe-generate renders them with --text-keys question,answer), greedy, EOS ignored (every row makes
--new-tokens tokens). Decode tokens/s leaves out the prefill: coe-generate reports it itself; for
transformers it is (time of N new tokens - time of 1) / ((N - 1) x batch). Scoring: coe-eval's
records/s over --records GSM8K test records (question and answer, batch 32, rows up to 512 tokens);
transformers: the same texts tokenized by AutoTokenizer, right-padded batches of 32, one forward
each and the loss over the real tokens. Figures are medians over --rounds rounds; prints a
markdown table (docs/performance.md).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")
SHARED = os.environ.get("COE_SHARED", os.path.join(ROOT, "..", "shared"))
GSM8K = os.path.join(SHARED, "data", "gsm8k", "test.jsonl")


def run(argv, env):
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench-hf: {' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def main():
    p = argparse.ArgumentParser(prog="bench-hf")
    p.add_argument("--checkpoint", action="append", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--records", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    work = tempfile.mkdtemp(prefix="coe-bench-hf-")
    # Offline, and transformers' module cache (the remote code) inside the temporary folder.
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HOME=os.path.join(work, "hf-home"))
    os.environ.update({k: env[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")})
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    rows = []
    try:
        for checkpoint in args.checkpoint:
            folder = os.path.join(work, f"export-{len(rows)}")
            log = run([os.path.join(BIN, "coe-export"), "--checkpoint", checkpoint, "--out", folder], env)
            model_type = json.load(open(os.path.join(folder, "config.json")))["model_type"]
            model = transformers.AutoModelForCausalLM.from_pretrained(
                folder, trust_remote_code=True, dtype=torch.float32
            ).eval()
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
            figures = {}
            for batch in (1, 32):
                coe_rates, hf_rates = [], []
                for _ in range(args.rounds):
                    out = os.path.join(work, "gen.jsonl")
                    stats = os.path.join(work, "gen.json")
                    n = args.prompts if batch > 1 else min(args.prompts, 8)
                    run([os.path.join(BIN, "coe-generate"), "--checkpoint", folder, "--input", GSM8K,
                         "--text-keys", "question,answer", "--max-records", str(n), "--batch", str(batch),
                         "--max-new-tokens", str(args.new_tokens), "--ignore-eos", "--output", out,
                         "--json", stats], env)
                    coe_rates.append(json.load(open(stats))["decode_tokens_per_s"])
                    prompts = [json.loads(line)["prompt"] for line in open(out)]
                    hf_rates.append(hf_decode_rate(model, tokenizer, prompts, batch, args.new_tokens))
                figures[f"decode_b{batch}"] = (statistics.median(coe_rates), statistics.median(hf_rates))
            coe_rates, hf_rates = [], []
            for _ in range(args.rounds):
                report = os.path.join(work, "eval.json")
                run([os.path.join(BIN, "coe-eval"), "--checkpoint", folder, "--data", GSM8K, "--text-keys",
                     "question,answer", "--max-records", str(args.records), "--batch", "32", "--max-length", "512",
                     "--json", report], env)
                coe_rates.append(json.load(open(report))["records_per_s"])
                texts = [json.loads(line) for _, line in zip(range(args.records), open(GSM8K))]
                hf_rates.append(hf_scoring_rate(model, tokenizer, texts))
            figures["scoring"] = (statistics.median(coe_rates), statistics.median(hf_rates))
            rows.append((checkpoint, model_type, type(model).__name__, figures))
            print(f"{checkpoint}: {log.splitlines()[1]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nthreads {args.threads}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{args.prompts} prompts x {args.new_tokens} new tokens, {args.records} records, median of {args.rounds}\n")
    print("| model | transformers class | measure | coe | transformers | coe / transformers |")
    print("| --- | --- | --- | --- | --- | --- |")
    names = {"decode_b1": "decode tokens/s, batch 1", "decode_b32": "decode tokens/s, batch 32",
             "scoring": "scoring records/s"}
    for checkpoint, model_type, cls, figures in rows:
        for key, (ours, theirs) in figures.items():
            print(f"| {checkpoint} ({model_type}) | {cls} | {names[key]} | {ours:,.1f} | {theirs:,.1f} | "
                  f"{ours / theirs:.2f}x |")
    return 0


def hf_decode_rate(model, tokenizer, prompts, batch, new_tokens):
    import torch

    tokenizer.padding_side = "left"
    config = model.generation_config
    config.eos_token_id = None
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    config.do_sample = False

    def generate(count):
        start = time.perf_counter()
        for i in range(0, len(prompts), batch):
            enc = tokenizer(prompts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                model.generate(**enc, generation_config=config, max_new_tokens=count)
        return time.perf_counter() - start

    return (new_tokens - 1) * len(prompts) / (generate(new_tokens) - generate(1))


def hf_scoring_rate(model, tokenizer, records):
    import torch

    tokenizer.padding_side = "right"
    texts = [f"question : {r['question']} answer : {r['answer']}" for r in records]
    start = time.perf_counter()
    for i in range(0, len(texts), 32):
        enc = tokenizer(texts[i:i + 32], return_tensors="pt", padding=True, truncation=True, max_length=512,
                        add_special_tokens=False)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        with torch.no_grad():
            model(**enc, labels=labels)
    return len(texts) / (time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
