#!/usr/bin/env python3
"""Packs a sweep_plans.sh output directory (sweep_<setting>_r<round>.json, bench_kernels' JSON
per setting and round) into one compact JSON for bench/results: the run, commit, date and
device once, each setting's environment, and one row per (setting, round, shape, batch,
context, kernel, skip rate) with its time, floor and plan (CTAs:cluster CTAs x clusters a
head, d = dynamic splits, w = wide CTAs, as sweep.txt prints it).

Usage: compact_sweep.py SWEEP_DIR RUN COMMIT DATE OUT.json [setting=ENV ...]
"""
import glob
import json
import os
import re
import sys


def main() -> None:
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    src, run, commit, date, out = sys.argv[1:6]
    settings = dict(a.split("=", 1) for a in sys.argv[6:])
    files = sorted(glob.glob(os.path.join(src, "sweep_*_r*.json")))
    if not files:
        sys.exit(f"compact_sweep: no sweep_*_r*.json in {src}")
    rows, head = [], None
    for f in files:
        m = re.match(r"sweep_(.*)_r(\d+)\.json", os.path.basename(f))
        name, rnd = m.group(1), int(m.group(2))
        d = json.load(open(f))
        head = head or d
        for r in d["rows"]:
            plan = (f'{r["ctas"]}:{r["cluster_ctas"]}x{r["cluster_groups"]}'
                    f'{"d" if r["dynamic_splits"] else ""}{"w" if r.get("wide_ctas") else ""}')
            rows.append({"setting": name, "round": rnd, "shape": r["shape"], "batch": r["batch"],
                         "context": r["context"], "kernel": r["kernel"],
                         "skip_target_pct": r.get("skip_target_pct", 0),
                         "skip_measured_pct": r.get("skip_measured_pct", 0.0), "time_us": r["time_us"],
                         "floor_us": r["floor_us"], "plan": plan})
        settings.setdefault(name, "")
    doc = {"sweep": run, "commit": commit, "date_utc": date, "device": head["device"], "sms": head["sms"],
           "read_gbps": head["read_gbps"], "copy_gbps": head["copy_gbps"], "settings": settings, "rows": rows}
    with open(out, "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))
    print(f"wrote {out}: {len(rows)} rows, settings {sorted(settings)}")


if __name__ == "__main__":
    main()
