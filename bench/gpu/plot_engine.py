#!/usr/bin/env python3
"""Plots the GPU engine's benchmark (bench_engine.json) beside the transformers baseline
(transformers.json): prefill tokens/s and decode tokens/s against context, with the decode
floor (weights + KV bytes over the read bandwidth) and the KV fraction the routed policy read.

Usage: python3 bench/gpu/plot_engine.py bench/results/gpu/engine_v1.json \
           bench/results/gpu/transformers_v1.json bench/results/gpu/engine_v1.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def rows(doc, **kw):
    return sorted((r for r in doc.get("rows", []) if all(r.get(k) == v for k, v in kw.items())),
                  key=lambda r: r["context"])


def main():
    engine = json.load(open(sys.argv[1]))
    try:
        hf = json.load(open(sys.argv[2]))
    except (OSError, ValueError):
        hf = {"rows": []}
    out = sys.argv[3]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))

    for doc, label, style in ((engine, "sinkrouter engine (CUDA)", "o-"), (hf, "transformers (bf16, SDPA)", "s--")):
        r = rows(doc, kind="prefill")
        if r:
            ax1.plot([x["context"] for x in r], [x["tokens_per_s"] for x in r], style, label=label)
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("prompt tokens")
    ax1.set_ylabel("prefill tokens/s")
    ax1.set_title("Prefill, SmolLM2-135M on H200")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend()

    dense, routed = rows(engine, kind="decode", policy="dense"), rows(engine, kind="decode", policy="sinkrouter")
    if dense:
        ax2.plot([x["context"] for x in dense], [x["tokens_per_s"] for x in dense], "o-", label="ours, dense")
        ax2.plot([x["context"] for x in dense], [1e3 / x["floor_ms"] for x in dense], ":", color="gray",
                 label="floor (weights + KV bytes / bandwidth)")
    if routed:
        ax2.plot([x["context"] for x in routed], [x["tokens_per_s"] for x in routed], "^-", label="ours, sinkrouter")
        for x in routed:
            ax2.annotate(f"{100 * x['kv_read_fraction']:.0f}% KV", (x["context"], x["tokens_per_s"]),
                         textcoords="offset points", xytext=(4, 6), fontsize=8)
    r = rows(hf, kind="decode")
    if r:
        ax2.plot([x["context"] for x in r], [x["tokens_per_s"] for x in r], "s--", label="transformers")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("context tokens")
    ax2.set_ylabel("decode tokens/s (batch 1)")
    ax2.set_title("Decode")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print("wrote", out)


if __name__ == "__main__":
    main()
