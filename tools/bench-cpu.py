#!/usr/bin/env python3
"""coe against PyTorch 2.x on the CPU, in one run: coe-bench and ../shared/peers/cpu_peer.py (eager,
torch.compile, and the peer's torch._grouped_mm expert path) on the same models, threads and tokens.

    .venv/bin/python3 tools/bench-cpu.py [--threads 2] [--steps 10] [--warmup 2] [--models quickstart,...]
                                         [--rounds 3]
                                         [--json OUT.jsonl]

Models (coe config : peer config): quickstart : quickstart, quickstart-coe : quickstart-coe,
bench/cpu-mid : mid, bench/cpu-mid-coe : mid-coe (39M parameters, vocabulary 50,277). Each system
runs W warm-up and N timed optimizer steps (float32, AdamW, random tokens, batch 8 x 256), R times
in rounds over all systems; the figure is the median over rounds of tokens per second of the mean
timed step (coe-bench's per-step times are averaged the way the peer averages). Prints a markdown
table (docs/performance.md).
The peer is read from ../shared (COE_SHARED overrides), never copied.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"quickstart": ("configs/quickstart.yaml", "quickstart"),
          "quickstart-coe": ("configs/quickstart-coe.yaml", "quickstart-coe"),
          "mid": ("configs/bench/cpu-mid.yaml", "mid"),
          "mid-coe": ("configs/bench/cpu-mid-coe.yaml", "mid-coe")}


def run(argv, env=None, may_fail=False):
    """stdout of argv; a failure ends the run, or with may_fail is returned as (None, its first error line)."""
    p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        lines = (p.stderr or p.stdout).strip().splitlines()
        why = next((l for l in lines if "Error" in l), lines[-1] if lines else f"exit status {p.returncode}")
        if may_fail:
            return None, why.strip()
        sys.exit(f"error: {' '.join(argv)} exited {p.returncode}: {why.strip()}")
    return p.stdout, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--models", default="quickstart,quickstart-coe,mid,mid-coe")
    ap.add_argument("--dispatch", default="segmented,grouped", help="coe expert dispatches to run")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--rounds", type=int, default=3, help="runs of every system; the median is reported")
    ap.add_argument("--json")
    a = ap.parse_args()
    shared = os.environ.get("COE_SHARED", os.path.join(ROOT, "..", "shared"))
    peer = os.path.join(shared, "peers", "cpu_peer.py")
    if not os.path.exists(peer):
        sys.exit(f"error: {peer} not found (set COE_SHARED)")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    rows = []
    for name in a.models.split(","):
        config, peer_config = MODELS[name]
        systems = [(f"coe ({d})", "coe", d) for d in a.dispatch.split(",")]
        systems += [(label, "peer", flags) for label, flags in
                    (("PyTorch eager", []), ("PyTorch compiled", ["--compile"]),
                     ("PyTorch eager grouped", ["--experts", "grouped"]),
                     ("PyTorch compiled grouped", ["--experts", "grouped", "--compile"]))]
        results = {label: [] for label, _, _ in systems}
        failed = {}
        # Rounds over all systems, so that a slower stretch of a shared machine hits each of them.
        for _ in range(a.rounds):
            for label, kind, arg in systems:
                if label in failed:
                    continue
                if kind == "coe":
                    with tempfile.TemporaryDirectory() as tmp:
                        out = os.path.join(tmp, "bench.json")
                        run([os.path.join(a.bin, "coe-bench"), config, "--steps", str(a.steps), "--warmup",
                             str(a.warmup), "--set", f"trainer.threads={a.threads}", "--set",
                             f"trainer.expert_dispatch={arg}", "--json", out], env)
                        j = json.load(open(out))
                    mean_ms = sum(j["step_ms_all"]) / len(j["step_ms_all"])
                    results[label].append(j["global_batch"] * j["seq_len"] / (mean_ms / 1000))
                else:
                    out, why = run([sys.executable, "-W", "ignore", peer, "--config", peer_config, "--threads",
                                    str(a.threads), "--steps", str(a.steps), "--warmup", str(a.warmup)] + arg, env,
                                   may_fail=True)
                    if out is None:
                        failed[label] = why
                        continue
                    j = json.loads(out.strip().splitlines()[-1])
                    results[label].append(j["tokens_per_s"])
        for label, _, _ in systems:
            if label in failed:
                rows.append(dict(model=name, system=label, tokens_per_s=None, failed=failed[label]))
            else:
                runs = sorted(results[label])
                rows.append(dict(model=name, system=label, tokens_per_s=runs[len(runs) // 2], runs=runs))
        print(f"done: {name}", file=sys.stderr, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(f"| model | system | tokens/s (median of {a.rounds}) | runs | coe (best) / this |\n| --- | --- | --- | --- | --- |")
    for name in a.models.split(","):
        mine = [r for r in rows if r["model"] == name]
        best = max(r["tokens_per_s"] for r in mine if r["system"].startswith("coe"))
        for r in mine:
            if r["tokens_per_s"] is None:
                print(f"| {name} | {r['system']} | failed: {r['failed'][:100]} | | |")
                continue
            ratio = "" if r["system"].startswith("coe") else f"{best / r['tokens_per_s']:.2f}x"
            runs = ", ".join(f"{x:,.0f}" for x in r["runs"])
            print(f"| {name} | {r['system']} | {r['tokens_per_s']:,.0f} | {runs} | {ratio} |")


if __name__ == "__main__":
    main()
