#!/usr/bin/env bash
# `sinkrouter eval` on the GPU engine (issue 7, long evaluation on the GPU), as a third call
# after bench/gpu/run_engine_on_device.sh has left the binaries and the joined model in
# /root/stage. Carry ["data", ".stage/engine"] (data/: `make data` here; git-ignored), plus
# ".stage/model/2" on a machine where only part 1 was stashed.
#   bash bench/gpu/run_eval_on_device.sh [SUITE ...]   (default: the two GPU suites)
# Writes $OUT/<suite name>/ (report.md, results.json, samples.jsonl) and $OUT/eval.log.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
OUT=${OUT:-/tmp/sr_eval_out}
stash=/root/stage
name=SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$OUT" models
mkdir -p "$stash"
[ -x "$stash/bin/sinkrouter" ] || tar -xJf .stage/engine/bin.tar.xz -C "$stash"
# On a fresh machine: part 1 stashed by a first call (`run_engine_on_device.sh stash`), part
# 2 carried now in .stage/model/2 (add it to the carry).
if [ ! -f "$stash/$name" ] && [ -f "$stash/$name.part1" ] && [ -f ".stage/model/2/$name.part2" ]; then
  cat "$stash/$name.part1" ".stage/model/2/$name.part2" >"$stash/$name"
  cp ".stage/model/2/$name.sha256" "$stash/"
fi
want=$(awk '{print $1}' "$stash/$name.sha256" 2>/dev/null); got=$(sha256sum "$stash/$name" 2>/dev/null | awk '{print $1}')
[ -n "$want" ] && [ "$want" = "$got" ] || { echo "model missing or checksum mismatch in $stash" | tee -a "$OUT/eval.log"; exit 1; }
[ -f "models/$name" ] || ln -sf "$stash/$name" "models/$name"
[ -f "models/$name.sha256" ] || cp "$stash/$name.sha256" "models/" 2>/dev/null
cublas=$(find -L /usr/local/cuda/lib64 $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) \
  -maxdepth 5 -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
export LD_LIBRARY_PATH=$stash/lib:/usr/local/cuda/lib64:$(dirname "${cublas:-/x/x}"):${LD_LIBRARY_PATH:-}
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
