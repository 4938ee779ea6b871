#!/usr/bin/env python3
"""coe against PyTorch 2.x on the CPU, in one run: coe-bench and ../shared/peers/cpu_peer.py (eager,
torch.compile, and the peer's torch._grouped_mm expert path) on the same models, threads and tokens.

    .venv/bin/python3 tools/bench-cpu.py [--threads 2] [--steps 10] [--warmup 2] [--models quickstart,...]
                                         [--json OUT.jsonl]

Models (coe config : peer config): quickstart : quickstart, quickstart-coe : quickstart-coe,
bench/cpu-mid : mid, bench/cpu-mid-coe : mid-coe (39M parameters, vocabulary 50,277). Each system
runs W warm-up and N timed optimizer steps (float32, AdamW, random tokens, batch 8 x 256); the
figure is tokens per second of the mean timed step for every system (coe-bench's per-step times
are averaged the way the peer averages). Prints a markdown table (docs/performance.md).
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


def run(argv, env=None):
    p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} exited {p.returncode}: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--models", default="quickstart,quickstart-coe,mid,mid-coe")
    ap.add_argument("--dispatch", default="segmented,grouped", help="coe expert dispatches to run")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
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
        for dispatch in a.dispatch.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "bench.json")
                run([os.path.join(a.bin, "coe-bench"), config, "--steps", str(a.steps), "--warmup", str(a.warmup),
                     "--set", f"trainer.threads={a.threads}", "--set", f"trainer.expert_dispatch={dispatch}",
                     "--json", out], env)
                j = json.load(open(out))
            mean_ms = sum(j["step_ms_all"]) / len(j["step_ms_all"])
            rows.append(dict(model=name, system=f"coe ({dispatch})", tokens_per_s=j["global_batch"] * j["seq_len"] /
                             (mean_ms / 1000), step_ms=mean_ms, peak_gib=j["peak_bytes"] / 2**30))
        for flags in ([], ["--compile"], ["--experts", "grouped"], ["--experts", "grouped", "--compile"]):
            line = run([sys.executable, "-W", "ignore", peer, "--config", peer_config, "--threads", str(a.threads),
                        "--steps", str(a.steps), "--warmup", str(a.warmup)] + flags, env).strip().splitlines()[-1]
            j = json.loads(line)
            rows.append(dict(model=name, system=f"PyTorch {j['torch']} {j['system'][len('pytorch-'):]}",
                             tokens_per_s=j["tokens_per_s"], step_ms=j["step_ms"], peak_gib=None))
        print(f"done: {name}", file=sys.stderr, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(f"| model | system | tokens/s | step ms | coe (best) / this |\n| --- | --- | --- | --- | --- |")
    for name in a.models.split(","):
        mine = [r for r in rows if r["model"] == name]
        best = max(r["tokens_per_s"] for r in mine if r["system"].startswith("coe"))
        for r in mine:
            ratio = "" if r["system"].startswith("coe") else f"{best / r['tokens_per_s']:.2f}x"
            print(f"| {name} | {r['system']} | {r['tokens_per_s']:,.0f} | {r['step_ms']:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
