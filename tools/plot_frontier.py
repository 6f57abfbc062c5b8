#!/usr/bin/env python3
"""The bytes-read-versus-fidelity frontier (docs/RESULTS.md): every policy on the same
axes, one line per policy family through its swept setting (streaming's window, quest's
budget, blasst's threshold, sinkrouter's epsilon or tau), dense as the reference point.

usage: plot_frontier.py OUT_DIR RESULTS_JSON [RESULTS_JSON ...]
Reads the results.json files written by `sinkrouter eval --suite` and writes into OUT_DIR:
  frontier_top1.png  frontier_kl.png  frontier_ppl.png   (fidelity cells)
  frontier_<task>.png                                      (task cells: accuracy)
  frontier.md                                              (the numbers, as tables)
x is always the fraction of KV bytes read over every decode step, summaries included.
Needs matplotlib.
"""
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The setting each family sweeps: its key in the policy's name.
SWEPT = {"streaming": "window", "quest": "budget", "blasst": "threshold", "sinkrouter": "(?:eps|tau)"}


def family(cell):
    """The policy's name with its swept setting replaced by '*'."""
    kind = cell["policy_kind"]
    key = SWEPT.get(kind)
    if key is None:
        return cell["policy"]
    return re.sub(rf"({key})=[-+0-9.eE]+", r"\1=*", cell["policy"], count=1)


def setting(cell):
    key = SWEPT.get(cell["policy_kind"])
    m = re.search(rf"{key}=([-+0-9.eE]+)", cell["policy"]) if key else None
    return m.group(1) if m else ""


def fmt_delta(d):
    # JSON has no infinity: an unbounded delta (no certificate: quest, streaming) is null.
    return "none" if d is None else f"{d:.2e}"


def ppl_ratio(c):
    f = c["fidelity"]
    return f["ppl_policy"] / f["ppl_dense"] if f["ppl_dense"] > 0 else float("nan")


METRICS = {
    "top1": ("top-1 agreement with dense", lambda c: c["fidelity"]["top1_agreement"], False),
    "kl": ("mean KL(dense || policy), nats", lambda c: max(c["fidelity"]["kl_mean"], 1e-7), True),
    "ppl": ("perplexity / dense perplexity", ppl_ratio, False),
}


def draw(cells, ylabel, value, log, title, path):
    fig, ax = plt.subplots(figsize=(8, 5))
    fams = list(dict.fromkeys(family(c) for c in cells))
    for fam in fams:
        pts = sorted((c for c in cells if family(c) == fam), key=lambda c: c["kv_read_fraction"])
        dense = pts[0]["policy_kind"] == "dense"
        ax.plot([c["kv_read_fraction"] for c in pts], [value(c) for c in pts],
                marker="*" if dense else "o", markersize=12 if dense else 5,
                linestyle="none" if dense else "-", color="black" if dense else None, label=fam)
        for c in pts:
            if not dense:
                ax.annotate(setting(c), (c["kv_read_fraction"], value(c)), fontsize=6,
                            textcoords="offset points", xytext=(3, 3))
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("fraction of KV bytes read (all decode steps, layers, heads; summaries included)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    cells = []
    for path in sys.argv[2:]:
        with open(path) as f:
            cells += json.load(f)["cells"]
    md = []
    written = []
    fid = [c for c in cells if c.get("fidelity")]
    for ctx in sorted({c["context"] for c in fid}):
        mine = [c for c in fid if c["context"] == ctx]
        for name, (ylabel, value, log) in METRICS.items():
            fname = f"frontier_{name}_{ctx}.png"
            draw(mine, ylabel, value, log, f"teacher-forced fidelity to dense at {ctx} tokens", os.path.join(out_dir, fname))
            written.append(fname)
        md.append(f"### Fidelity at {ctx} tokens\n")
        md.append("| policy | KV read | top-1 | KL mean | KL max | ppl / dense | max delta |")
        md.append("|---|---:|---:|---:|---:|---:|---:|")
        for c in sorted(mine, key=lambda c: (family(c), c["kv_read_fraction"])):
            f = c["fidelity"]
            md.append(f"| `{c['policy']}` | {100 * c['kv_read_fraction']:.1f}% | {100 * f['top1_agreement']:.1f}% | "
                      f"{f['kl_mean']:.2e} | {f['kl_max']:.2e} | {ppl_ratio(c):.3f} | {fmt_delta(c['delta_max'])} |")
        md.append("")
    tasks = [c for c in cells if not c.get("fidelity")]
    for task in dict.fromkeys(c["task"] for c in tasks):
        for ctx in sorted({c["context"] for c in tasks if c["task"] == task}):
            mine = [c for c in tasks if c["task"] == task and c["context"] == ctx]
            fname = f"frontier_{re.sub(r'[^A-Za-z0-9_.-]+', '_', task)}_{ctx}.png"
            draw(mine, "accuracy", lambda c: c["score"], False, f"{task} at {ctx} tokens (n = {mine[0]['samples']} each)",
                 os.path.join(out_dir, fname))
            written.append(fname)
            md.append(f"### {task} at {ctx} tokens\n")
            md.append("| policy | KV read | accuracy | dense |")
            md.append("|---|---:|---:|---:|")
            for c in sorted(mine, key=lambda c: (family(c), c["kv_read_fraction"])):
                md.append(f"| `{c['policy']}` | {100 * c['kv_read_fraction']:.1f}% | {c['score']:.3f} | {c['dense_score']:.3f} |")
            md.append("")
    with open(os.path.join(out_dir, "frontier.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    written.append("frontier.md")
    for name in written:
        print(name)


if __name__ == "__main__":
    main()
