#!/usr/bin/env python3
"""Plots the CUDA kernel benchmark: time per decode call against context, one panel per
(shape, batch), for our dense and routed kernels, the routing pass, the bandwidth floor of
dense, the read probe (a pure read of dense's bytes, timed the same way, when the run has it),
and the baselines (SDPA cuDNN / flash, FlashInfer) when their JSON is given.

    python3 bench/gpu/plot_kernels.py bench/results/kernels.json [bench/results/baselines.json] -o plot.png
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kernels")
    ap.add_argument("baselines", nargs="?")
    ap.add_argument("-o", "--out", default="kernels.png")
    args = ap.parse_args()
    k = json.load(open(args.kernels))
    rows = k["rows"]
    base = json.load(open(args.baselines))["rows"] if args.baselines else []
    panels = sorted({(r["shape"], r["batch"]) for r in rows})
    # Routed rows: fast mode when the run has it (its planted quiet blocks are exactly the
    # skipped ones), else the certified rows (whose skip can fall short of the target).
    fast = any(r["kernel"] == "sinkrouter_fast" for r in rows)
    routed, routing = ("sinkrouter_fast", "routing_pass_fast") if fast else ("sinkrouter", "routing_pass")
    cols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.4 * cols, 4.8 * nrows), squeeze=False)
    for ax, (shape, batch) in zip(axes.flat, panels):
        def series(source, kernel, skip=None, key="time_us"):
            pts = sorted((r["context"], r[key]) for r in source
                         if r["shape"] == shape and r["batch"] == batch and r["kernel"] == kernel
                         and key in r and (skip is None or r.get("skip_target_pct") == skip))
            return [p[0] for p in pts], [p[1] for p in pts]
        x, y = series(rows, "dense", key="floor_us")
        ax.plot(x, y, "k:", label="dense floor (bytes / read BW)")
        x, y = series(rows, "read_probe")
        if x:
            ax.plot(x, y, "k--", linewidth=0.8, label="read probe (pure read of dense's bytes, same clock)")
        x, y = series(rows, "dense")
        ax.plot(x, y, "k-o", label="ours dense")
        for skip, color in ((25, "tab:blue"), (50, "tab:green"), (75, "tab:orange"), (90, "tab:red")):
            x, y = series(rows, routed, skip)
            ax.plot(x, y, "-s", color=color, markersize=3, label=f"ours routed ({routed}), {skip}% planted")
        x, y = series(rows, routing, 50)
        ax.plot(x, y, "--", color="gray", label="routing pass alone")
        for kernel, style in (("sdpa_cudnn", "m-^"), ("sdpa_flash", "c-v"), ("flashinfer", "y-D")):
            x, y = series(base, kernel)
            if x:
                ax.plot(x, y, style, markersize=4, label=kernel)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("time per decode call (us)")
        ax.set_title(f"{shape}, batch {batch}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{k['device']}: read {k['read_gbps']:.0f} GB/s, copy {k['copy_gbps']:.0f} GB/s (same run)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
