#!/usr/bin/env python3
"""Stamps a device run's JSON files with what ran where and when: the binaries' commit (the
COMMIT file written when they were staged), the UTC date, and the GPU (nvidia-smi's name and
driver). Files that do not exist are skipped; the others are rewritten in place.

    python3 bench/gpu/stamp_json.py COMMIT_FILE OUT_DIR name.json [name.json ...]
"""
import datetime
import json
import os
import subprocess
import sys


def gpu():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
        return out[0] if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main():
    commit_file, out_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    try:
        commit = open(commit_file).read().strip() or "unknown"
    except OSError:
        commit = "unknown"
    stamp = {"commit": commit,
             "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "gpu": gpu()}
    for name in names:
        path = os.path.join(out_dir, name)
        if not os.path.exists(path):
            continue
        doc = json.load(open(path))
        doc.update(stamp)
        json.dump(doc, open(path, "w"), indent=1)
        print(f"stamped {name}: {stamp['commit'][:12]} {stamp['date_utc']} {stamp['gpu']}")


if __name__ == "__main__":
    main()
