#!/usr/bin/env bash
# `sinkrouter eval` on the GPU engine (issue 7, long evaluation on the GPU), as a third call
# after bench/gpu/run_engine_on_device.sh has left the binaries and the joined model in
# /root/stage. Carry ["data", ".stage/engine"] (data/: `make data` here; git-ignored), plus
# the model's last part (.stage/model/<n>, with the checksum) on a machine where only the
# others were stashed.
#   bash bench/gpu/run_eval_on_device.sh [SUITE ...]   (default: the two GPU suites)
# Writes $OUT/<suite name>/ (report.md, results.json, samples.jsonl) and $OUT/eval.log.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
OUT=${OUT:-/tmp/sr_eval_out}
mkdir -p "$OUT" models
. bench/gpu/device_stage.sh
# Not through a pipe: device_stage exports LD_LIBRARY_PATH into this shell.
device_stage >>"$OUT/eval.log" 2>&1 || { tail -1 "$OUT/eval.log"; exit 1; }
[ -f "models/$name" ] || ln -sf "$stash/$name" "models/$name"
[ -f "models/$name.sha256" ] || cp "$stash/$name.sha256" "models/" 2>/dev/null
suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=(eval/suites/tasks_8k_gpu.json eval/suites/frontier_8k_gpu.json)
t0=$(date +%s)
for s in "${suites[@]}"; do
  n=$(basename "$s" .json)
  timeout $(( 540 - ($(date +%s) - t0) )) "$stash/bin/sinkrouter" eval --suite "$s" --device cuda --no-progress \
    --out "$OUT/$n" >>"$OUT/eval.log" 2>&1
  echo "$n: rc=$? $(( $(date +%s) - t0 ))s" | tee -a "$OUT/eval.log"
  [ -f "$OUT/$n/report.md" ] && head -40 "$OUT/$n/report.md"
done
