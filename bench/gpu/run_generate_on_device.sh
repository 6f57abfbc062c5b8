#!/usr/bin/env bash
# End-to-end decode speed of chosen policies through `sinkrouter generate --device cuda
# --json` on a ~7K-token prompt (the start of Sherlock Holmes), after
# `run_engine_on_device.sh stash` for every part of the model but the last (in /root/stage).
# Carry [".stage/model/<last>", ".stage/engine", "data"]. Writes $OUT/generate_<n>.json, one per policy.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
OUT=${OUT:-/tmp/sr_gen_out}
mkdir -p "$OUT"
. bench/gpu/device_stage.sh
device_stage || exit 1
head -c 28000 data/texts/sherlock.txt >/tmp/prompt.txt
i=0
for p in "--policy dense" "--policy sinkrouter --mode fast --estimate gauss --tau 0.001" \
         "--policy sinkrouter --mode fast --estimate gauss --tau 0.03" "--policy sinkrouter --mode certified --epsilon 0.001"; do
  i=$((i + 1))
  # shellcheck disable=SC2086
  "$stash/bin/sinkrouter" generate -m "$stash/$name" -f /tmp/prompt.txt --device cuda -n 512 $p --json \
    >"$OUT/generate_$i.json" 2>"$OUT/generate_$i.err"
  echo "$p: rc=$? $(python3 -c "import json,sys; d=json.load(open('$OUT/generate_$i.json')); print({k: d[k] for k in d if 'tok' in k or 'second' in k}, d.get('attention', d.get('stats', ''))) " 2>&1 | head -c 600)"
done
