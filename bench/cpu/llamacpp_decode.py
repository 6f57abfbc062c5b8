#!/usr/bin/env python3
"""Decode speed of llama.cpp (through the llama-cpp-python package) on a GGUF model, with
the protocol of `sinkrouter bench-decode` so that the two are measured alike:

  for each context C: the first C - warmup - steps tokens of the text (tokenised by
  llama.cpp itself) are evaluated as the prompt in batches of n_batch (timed: prefill),
  then `warmup` untimed and `steps` timed greedy decode steps, one token per llama_decode,
  so that the timed steps end with exactly C tokens in the KV cache. End-of-text tokens
  do not stop the run. The decode is repeated `repeats` times from the same prompt (the
  KV cache is cut back to the prompt between repeats); the figure is the median step.

Greedy: the argmax of the last logits (numpy), no sampler. Each configuration of
flash attention (--flash-attn off,on) gets its own context and prefill.

Needs llama-cpp-python (docs/PERF.md gives the pip command that builds it for this CPU).
Prints one JSON object.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

try:
    import llama_cpp
except ImportError:
    sys.exit("llamacpp_decode.py: llama_cpp is not installed (see docs/PERF.md, 'CPU engine')")
import llama_cpp.llama_cpp as llama_cpp_c


def without_extra_buffer_types():
    """Model parameters with llama.cpp's extra buffer types off (use_extra_bufts = false,
    as llama-cli's --no-extra-bufts). On a CPU with AMX, a native build puts Q4_1 weights in
    its AMX buffer; where the virtual machine does not let a process use the tile registers
    (this one: tileloadd raises SIGILL although cpuid lists amx), that path cannot run.
    Without it, Q4_1 goes through ggml's AVX-512 VNNI dot products (Q4_1 has no other
    repacked layout), the path of a build without AMX."""
    default = llama_cpp_c.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p
    llama_cpp_c.llama_model_default_params = params

BUILT_IN_PARAGRAPH = (  # the same fallback text as apps/cmd_bench_decode.cpp
    "The harbour town woke slowly. Fishermen hauled their nets along the stone quay while gulls "
    "argued over scraps, and the baker on Mill Street pulled the first loaves from an oven older "
    "than anyone could remember. By nine the market square was full: farmers with crates of "
    "apples, a tinker mending pots, children chasing a dog that had stolen a sausage. Nobody "
    "noticed the stranger who stepped off the morning coach, a tall woman in a grey travelling "
    "cloak, carrying a single leather case and a letter addressed to a man who had died ten "
    "years before.\n\n")


EXTRA_BUFTS = False


def first_tokens(llm, text, n):
    """The first n tokens of the text (repeated if too short), tokenised as one string."""
    want = n * 8 + 1024
    s = text
    while len(s) < want:
        s += text
    ids = llm.tokenize(s[:want].encode("utf-8", errors="ignore"), add_bos=True, special=False)
    if len(ids) < n:
        raise SystemExit(f"llamacpp_decode.py: could not make {n} tokens from the text (got {len(ids)})")
    return ids[:n]


def bench_context(llm, tokens, context, args):
    n_vocab = llm.n_vocab()
    prompt = tokens[: context - args.warmup - args.steps]
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    prefill_s = time.perf_counter() - t0
    prompt_logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,)).copy()
    steps_s, generated = [], []
    for r in range(args.repeats):
        llm.n_tokens = len(prompt)  # eval() cuts the KV cache back to n_tokens
        logits = prompt_logits
        out = []
        for i in range(args.warmup + args.steps):
            tok = int(np.argmax(logits))
            out.append(tok)
            t = time.perf_counter()
            llm.eval([tok])
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
            dt = time.perf_counter() - t
            if i >= args.warmup:
                steps_s.append(dt)
        if r == 0:
            generated = out
    med = statistics.median(steps_s)
    return {
        "context": context,
        "prompt_tokens": len(prompt),
        "prefill_seconds": prefill_s,
        "prefill_tokens_per_second": len(prompt) / prefill_s,
        "decode_tokens_per_second": 1.0 / med,
        "decode_tokens_per_second_total": len(steps_s) / sum(steps_s),
        "step_ms_median": 1e3 * med,
        "step_ms_min": 1e3 * min(steps_s),
        "step_ms_max": 1e3 * max(steps_s),
        "timed_steps": len(steps_s),
        "generated_text": llm.detokenize(generated).decode("utf-8", errors="replace"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--context", default="512,4096,8192", help="comma-separated KV lengths")
    ap.add_argument("--text", default="data/texts/sherlock.txt")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--flash-attn", default="off,on", help="comma-separated: off, on")
    ap.add_argument("--extra-bufts", action="store_true",
                    help="keep llama.cpp's extra buffer types (AMX, repacking); off by default, see above")
    args = ap.parse_args()
    global EXTRA_BUFTS
    EXTRA_BUFTS = args.extra_bufts
    if not args.extra_bufts:
        without_extra_buffer_types()
    contexts = [int(c) for c in args.context.split(",")]
    for c in contexts:
        if c <= args.warmup + args.steps:
            sys.exit(f"llamacpp_decode.py: context {c} must exceed warmup + steps ({args.warmup + args.steps})")
    if os.path.exists(args.text):
        with open(args.text, encoding="utf-8", errors="ignore") as f:
            text, text_source = f.read(), args.text
    else:
        text, text_source = BUILT_IN_PARAGRAPH, "built-in paragraph (data/texts not fetched)"
    configs = []
    for fa in args.flash_attn.split(","):
        if fa not in ("off", "on"):
            sys.exit(f"llamacpp_decode.py: --flash-attn takes off and/or on, not '{fa}'")
        llm = llama_cpp.Llama(model_path=args.model, n_ctx=max(contexts), n_threads=args.threads,
                              n_threads_batch=args.threads, n_batch=args.n_batch, n_ubatch=args.n_batch,
                              flash_attn=(fa == "on"), verbose=False)
        tokens = first_tokens(llm, text, max(contexts))
        runs = []
        for c in contexts:
            runs.append(bench_context(llm, tokens, c, args))
            print(f"llama.cpp flash_attn={fa} context {c}: {runs[-1]['decode_tokens_per_second']:.1f} tok/s, "
                  f"prefill {runs[-1]['prefill_tokens_per_second']:.0f} tok/s", file=sys.stderr, flush=True)
        configs.append({"flash_attn": fa == "on", "runs": runs})
        del llm
    print(json.dumps({
        "engine": "llama.cpp",
        "llama_cpp_python_version": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode(),
        "extra_buffer_types": EXTRA_BUFTS,
        "model": args.model,
        "threads": args.threads,
        "n_batch": args.n_batch,
        "kv_type": "f16 (llama.cpp default)",
        "text": text_source,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "configs": configs,
    }, indent=2))


if __name__ == "__main__":
    main()
