#!/usr/bin/env python3
"""Heatmaps of a sink analysis (layers x heads), from the analysis.json that
`sinkrouter analyze --out DIR` writes.

usage: plot_analysis.py ANALYSIS_JSON OUT_DIR
Writes OUT_DIR/sinks.png (where attention goes, how often the sink dominates, how wrong
the sink route is, how stable the anchor share is), OUT_DIR/bounds.png (median gap of
each bound, the share of blocks each could skip at tau = 1e-3, and the oracle's) and
OUT_DIR/kv_heads.png (value norms of the sinks against the others, prefill sinks, key
anisotropy), and prints each file name. Needs matplotlib (`pip install matplotlib`).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def head_grid(report, get):
    layers = report["layers"]
    n_head = report["config"]["n_head"]
    grid = np.full((len(layers), n_head), np.nan)
    for layer in layers:
        for h in layer["heads"]:
            grid[h["layer"], h["head"]] = get(h)
    return grid


def kv_grid(report, get):
    cfg = report["config"]
    grid = np.full((cfg["n_layers"], cfg["n_head_kv"]), np.nan)
    for k in report["kv_heads"]:
        grid[k["layer"], k["kv_head"]] = get(k)
    return grid


def panel(ax, grid, title, cmap="viridis", vmin=None, vmax=None, xlabel="query head", fmt=None):
    im = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel("layer", fontsize=7)
    ax.tick_params(labelsize=6)
    cb = plt.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cb.ax.tick_params(labelsize=6)
    if fmt and grid.shape[1] <= 4:
        for (i, j), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=4, color="white")


def save(fig, out_dir, name, written):
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=80)
    plt.close(fig)
    written.append(name)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        r = json.load(f)
    out_dir = sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    written = []
    steps = r["summary"]["steps"]
    dom = r["config"]["dormant_share"]

    fig, axes = plt.subplots(2, 4, figsize=(13, 7))
    panel(axes[0, 0], head_grid(r, lambda h: h["share_pos0"]), "share on position 0", vmin=0, vmax=1)
    panel(axes[0, 1], head_grid(r, lambda h: h["anchor_share"] - h["share_pos0"]),
          "share on the other anchors", vmin=0, vmax=1)
    panel(axes[0, 2], head_grid(r, lambda h: h["share_window"]), "share on the window", vmin=0, vmax=1)
    panel(axes[0, 3], head_grid(r, lambda h: h["share_rest"]), "share on the rest (routable)", vmin=0, vmax=1)
    panel(axes[1, 0], head_grid(r, lambda h: h["sink_dominated"]),
          f"steps with anchors >= {dom:g} (sink-dominated)", vmin=0, vmax=1)
    panel(axes[1, 1], head_grid(r, lambda h: min(h["sink_route_rel_error"], 2.0)),
          "sink-route error ||o - o_AW|| / ||o||", cmap="magma", vmin=0, vmax=1)
    panel(axes[1, 2], head_grid(r, lambda h: h["anchor_share_mean_abs_change"]),
          "mean |step-to-step change| of anchor share", cmap="magma")
    panel(axes[1, 3], head_grid(r, lambda h: h["m_a_mean_abs_change"]),
          "mean |step-to-step change| of m_A", cmap="magma")
    fig.suptitle(f"SmolLM2 sink mechanism over {steps} decode steps", fontsize=10)
    save(fig, out_dir, "sinks.png", written)

    fig, axes = plt.subplots(2, 4, figsize=(13, 7))
    gmax = np.nanpercentile(head_grid(r, lambda h: h["gap"]["box"]["p50"]), 95)
    for i, kind in enumerate(["box", "basis", "ball", "min"]):
        panel(axes[0, i], head_grid(r, lambda h, k=kind: h["gap"][k]["p50"]),
              f"median gap, {kind} bound (nats)", cmap="magma", vmin=0, vmax=gmax)
    panel(axes[1, 0], head_grid(r, lambda h: h["skippable"]["true"]["0.001"]),
          "oracle: blocks with mass <= 1e-3 Z_A", vmin=0, vmax=1)
    panel(axes[1, 1], head_grid(r, lambda h: h["certified"]["true"]["0.001"]),
          "oracle certified skip at eps 1e-3", vmin=0, vmax=1)
    panel(axes[1, 2], head_grid(r, lambda h: h["certified"]["min"]["0.01"]),
          "certified skip at eps 1e-2, min bound", vmin=0, vmax=1)
    panel(axes[1, 3], head_grid(r, lambda h: h["top_pos_stable"]),
          "steps whose top token is the usual one", vmin=0, vmax=1)
    fig.suptitle("block-score bounds: gap = bound - true block max (scaled scores)", fontsize=10)
    save(fig, out_dir, "bounds.png", written)

    fig, axes = plt.subplots(1, 4, figsize=(11, 5))
    panel(axes[0], kv_grid(r, lambda k: np.log10(max(k["v_norm_pos0"], 1e-6) / max(k["v_norm_others"], 1e-6))),
          "log10 ||v_0|| / mean ||v|| others", cmap="coolwarm", vmin=-2, vmax=2, xlabel="KV head", fmt="{:.1f}")
    panel(axes[1], kv_grid(r, lambda k: np.log10(max(k["k_norm_pos0"], 1e-6) / max(k["k_norm_others"], 1e-6))),
          "log10 ||k_0|| / mean ||k|| others", cmap="coolwarm", vmin=-1, vmax=1, xlabel="KV head", fmt="{:.1f}")
    panel(axes[2], kv_grid(r, lambda k: len(k["sinks"])), "prefill: keys with >= 2% received",
          cmap="magma", xlabel="KV head", fmt="{:.0f}")
    panel(axes[3], kv_grid(r, lambda k: k["variance_top8"]), "key variance in the top 8 principal dirs",
          vmin=0, vmax=1, xlabel="KV head", fmt="{:.2f}")
    save(fig, out_dir, "kv_heads.png", written)
    if "curves" in r:
        plot_curves(r["curves"], out_dir, written)
    for w in written:
        print(w)


def plot_curves(curves, out_dir, written):
    """Blocks read against the loss, per estimator: threshold routing (solid) and top-k
    routing (dashed), on this exact attention (no model feedback)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    names = list(curves["estimators"].keys())
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        c = colors[i % len(colors)]
        for rule, style in (("threshold", "-"), ("rank", "--")):
            pts = curves["estimators"][name][rule]
            xs = [p["read"] for p in pts]
            for ax, key in zip(axes, ("error_mean", "over_1pct", "missed_mean")):
                ys = [max(p[key], 1e-7) for p in pts]
                ax.plot(xs, ys, style, color=c, label=f"{name} ({rule})" if key == "error_mean" else None,
                        marker="." if rule == "threshold" else None, markersize=3, linewidth=1)
    titles = ("mean relative output error ||o - o_r|| / ||o||", "query-head-steps with error > 1 %",
              "mean skipped attention mass")
    for ax, t in zip(axes, titles):
        ax.set_yscale("log")
        ax.set_xlabel("routable blocks read (fraction)")
        ax.set_title(t, fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_xlim(0, 1)
    axes[0].legend(fontsize=6, ncol=2)
    fig.suptitle("block selection on exact attention: threshold (sinkrouter fast) vs top-k (quest), per estimator",
                 fontsize=10)
    save(fig, out_dir, "curves.png", written)


if __name__ == "__main__":
    main()
