#!/usr/bin/env python3
"""The same model in Hugging Face transformers on the same GPU: the baseline for
bench_engine (bench/gpu/bench_engine.cpp).

Loads the same GGUF file (transformers dequantises it through the `gguf` package) in bf16
with SDPA attention, then measures
  - prefill tokens/s: one forward over n tokens (logits of the last position only);
  - decode tokens/s at a context: prefill n tokens into a DynamicCache, then time `steps`
    greedy steps of one token each (after 3 warm-up steps).
Token ids are random (speed does not depend on them). Contexts that run out of time or
memory are reported as skipped with the reason.

Usage: python3 bench/gpu/transformers_baseline.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
           --out transformers.json [--prefill 32768,131072] [--decode 8192,32768,131072] [--steps 32]
"""
import argparse
import json
import os
import time

import torch


def load(path):
    from transformers import AutoModelForCausalLM

    folder, name = os.path.split(os.path.abspath(path))
    kwargs = dict(gguf_file=name, attn_implementation="sdpa")
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, **kwargs)
    except TypeError:  # transformers 4.x spells it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.bfloat16, **kwargs)
    return model.to("cuda").eval()


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--out", default="transformers.json")
    p.add_argument("--prefill", default="32768,131072")
    p.add_argument("--decode", default="8192,32768,131072")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--time-budget", type=float, default=150)
    a = p.parse_args()
    start = time.perf_counter()
    import transformers

    res = {"transformers": transformers.__version__, "torch": torch.__version__,
           "device": torch.cuda.get_device_name(0), "model": a.model, "rows": [], "skipped": []}

    def save():
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)

    t0 = time.perf_counter()
    model = load(a.model)
    res["load_seconds"] = time.perf_counter() - t0
    res["attn_implementation"] = model.config._attn_implementation
    vocab = model.config.vocab_size
    gen = torch.Generator(device="cuda").manual_seed(0)

    def tokens(n):
        return torch.randint(0, vocab, (1, n), device="cuda", generator=gen)

    with torch.inference_mode():
        model(tokens(1024), use_cache=False, logits_to_keep=1)  # warm-up: kernels, handles
        for n in [int(x) for x in a.prefill.split(",") if x]:
            left = a.time_budget - (time.perf_counter() - start)
            if left < 20:
                res["skipped"].append({"kind": "prefill", "context": n, "reason": f"{left:.0f} s left"})
                continue
            try:
                ids = tokens(n)
                _, s = timed(lambda: model(ids, use_cache=False, logits_to_keep=1))
                res["rows"].append({"kind": "prefill", "context": n, "seconds": s, "tokens_per_s": n / s})
                print(f"prefill {n}: {s:.3f} s ({n / s:.0f} tok/s)", flush=True)
            except torch.OutOfMemoryError as e:
                res["skipped"].append({"kind": "prefill", "context": n, "reason": f"out of memory: {e}"[:200]})
            torch.cuda.empty_cache()
            save()
        for n in [int(x) for x in a.decode.split(",") if x]:
            left = a.time_budget - (time.perf_counter() - start)
            if left < 30:
                res["skipped"].append({"kind": "decode", "context": n, "reason": f"{left:.0f} s left"})
                continue
            try:
                out, s = timed(lambda: model(tokens(n), use_cache=True, logits_to_keep=1))
                cache = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                for _ in range(3):
                    out = model(nxt, past_key_values=cache, use_cache=True)
                    nxt = out.logits[:, -1].argmax(-1, keepdim=True)

                def steps():
                    t = nxt
                    for _ in range(a.steps):
                        o = model(t, past_key_values=cache, use_cache=True)
                        t = o.logits[:, -1].argmax(-1, keepdim=True)
                    return t

                _, d = timed(steps)
                res["rows"].append({"kind": "decode", "context": n, "steps": a.steps, "ms_per_step": 1e3 * d / a.steps,
                                    "tokens_per_s": a.steps / d, "prefill_seconds": s})
                print(f"decode {n}: {1e3 * d / a.steps:.2f} ms/step ({a.steps / d:.1f} tok/s)", flush=True)
                del cache, out
            except torch.OutOfMemoryError as e:
                res["skipped"].append({"kind": "decode", "context": n, "reason": f"out of memory: {e}"[:200]})
            torch.cuda.empty_cache()
            save()
    res["total_seconds"] = time.perf_counter() - start
    save()


if __name__ == "__main__":
    main()
