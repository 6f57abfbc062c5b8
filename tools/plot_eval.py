#!/usr/bin/env python3
"""Plots an evaluation report: for every task, the score (accuracy, or top-1 agreement
for fidelity) against the fraction of KV bytes read, one line per policy through its
contexts, with the dense score at every context drawn beside it.

usage: plot_eval.py RESULTS_JSON OUT_DIR
Reads the results.json written by `sinkrouter eval --out`; writes OUT_DIR/<task>.png
(and fidelity_kl.png when the fidelity task ran) and prints each file name it wrote.
Needs matplotlib (`pip install matplotlib`, done by `make eval`).
"""
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def safe_name(task):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        results = json.load(f)
    out_dir = sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    cells = results["cells"]
    tasks = list(dict.fromkeys(c["task"] for c in cells))
    written = []
    for task in tasks:
        mine = [c for c in cells if c["task"] == task]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        policies = list(dict.fromkeys(c["policy"] for c in mine))
        for policy in policies:
            pts = sorted((c for c in mine if c["policy"] == policy), key=lambda c: c["context"])
            xs = [c["kv_read_fraction"] for c in pts]
            ys = [c["score"] for c in pts]
            dense = pts[0]["policy_kind"] == "dense"
            ax.plot(xs, ys, marker="s" if dense else "o", linestyle="--" if dense else "-",
                    color="black" if dense else None, label=policy)
            for c in pts:
                ax.annotate(f'{c["context"]}', (c["kv_read_fraction"], c["score"]), fontsize=7,
                            textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel("fraction of KV bytes read (decode steps, all layers and heads)")
        ax.set_ylabel("top-1 agreement with dense" if task == "fidelity" else "score")
        ax.set_title(f"{task}: score against KV bytes read (labels: context in tokens)")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        name = f"{safe_name(task)}.png"
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=120)
        plt.close(fig)
        written.append(name)
    fid = [c for c in cells if c.get("fidelity") and c["policy_kind"] != "dense"]
    if fid:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for policy in dict.fromkeys(c["policy"] for c in fid):
            pts = sorted((c for c in fid if c["policy"] == policy), key=lambda c: c["context"])
            ax.plot([c["kv_read_fraction"] for c in pts], [max(c["fidelity"]["kl_mean"], 1e-12) for c in pts],
                    marker="o", label=policy)
        ax.set_yscale("log")
        ax.set_xlabel("fraction of KV bytes read")
        ax.set_ylabel("mean KL(dense || policy), nats")
        ax.set_title("fidelity: KL to dense against KV bytes read")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "fidelity_kl.png"), dpi=120)
        plt.close(fig)
        written.append("fidelity_kl.png")
    for name in written:
        print(name)


if __name__ == "__main__":
    main()
