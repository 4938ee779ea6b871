#!/usr/bin/env python3
"""The transformers side of coe's Hugging Face interop test (tests/test_tools_hf_interop.cpp).

  python hf_interop.py MANIFEST.json

The manifest (written by the test) names:
  "home":      a scratch HF_HOME (remote code's module cache); everything runs offline;
  "inputs":    a safetensors file with "input_ids" [N, S] (int64): the rows whose logits are compared;
  "prompts":   token-id lists: the prompts of the greedy generations;
  "max_new_tokens";
  "make":      models to create with transformers itself, each {"out", "class" (DeepseekV2ForCausalLM |
               DeepseekV3ForCausalLM), "config" (the config class's keyword arguments), "seed",
               "bias_scale" (random e_score_correction_bias in [-s, s]; 0: zeros), "dtype",
               "max_shard_size"}: random init, saved with save_pretrained;
  "run":       folders to load with AutoModelForCausalLM (trust_remote_code=True), each {"dir", "out",
               "tokenizer_texts" (optional)}: writes <out>.safetensors with "logits" [N, S, V] (float32)
               of the input rows, and <out>.json with the class transformers built, the generations
               of every prompt with and without the KV cache (batched, left padding), and, for a
               folder with a tokenizer, AutoTokenizer's ids of each text.
Greedy decoding never stops early: the EOS id is unset, every generation has max_new_tokens.
"""
import json
import os
import sys
import time


def main():
    manifest = json.load(open(sys.argv[1], encoding="utf-8"))
    os.environ["HF_HOME"] = manifest["home"]
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[key] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"

    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    # One thread: tiny models, and a busy 2-core machine makes torch's spinning threads crawl.
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    for spec in manifest.get("make", []):
        torch.manual_seed(spec["seed"])
        cls = getattr(transformers, spec["class"])
        config_cls = getattr(transformers, spec["class"].replace("ForCausalLM", "Config"))
        model = cls(config_cls(**spec["config"])).eval()
        with torch.no_grad():
            for module in model.modules():
                bias = getattr(module, "e_score_correction_bias", None)
                if bias is not None and spec.get("bias_scale", 0):
                    bias.uniform_(-spec["bias_scale"], spec["bias_scale"])
        model = model.to(getattr(torch, spec.get("dtype", "float32")))
        model.save_pretrained(spec["out"], max_shard_size=spec.get("max_shard_size", "5GB"))

    input_ids = load_file(manifest["inputs"])["input_ids"]
    prompts = manifest["prompts"]
    width = max(len(p) for p in prompts)
    padded = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        padded[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1

    for job in manifest["run"]:
        start = time.perf_counter()
        model = transformers.AutoModelForCausalLM.from_pretrained(
            job["dir"], trust_remote_code=True, dtype=torch.float32
        ).eval()
        result = {"class": type(model).__name__, "module": type(model).__module__}
        with torch.no_grad():
            logits = model(input_ids).logits.float()
        save_file({"logits": logits.contiguous()}, job["out"] + ".safetensors")
        config = model.generation_config
        config.eos_token_id = None
        config.pad_token_id = 0
        config.do_sample = False
        for use_cache in (True, False):
            out = model.generate(
                input_ids=padded,
                attention_mask=mask,
                generation_config=config,
                max_new_tokens=manifest["max_new_tokens"],
                use_cache=use_cache,
            )
            result["cache" if use_cache else "no_cache"] = out[:, width:].tolist()
        if job.get("tokenizer_texts"):
            tokenizer = transformers.AutoTokenizer.from_pretrained(job["dir"], trust_remote_code=True)
            result["tokenizer_class"] = type(tokenizer).__name__
            result["tokenized"] = [tokenizer(t)["input_ids"] for t in job["tokenizer_texts"]]
        with open(job["out"] + ".json", "w", encoding="utf-8") as f:
            json.dump(result, f)
        print(f"{job['dir']}: {result['class']}, {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
