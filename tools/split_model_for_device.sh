#!/usr/bin/env bash
# Splits the model into three parts for the device tool, whose calls carry at most 64 MiB each
# with the working tree (the 98 MB GGUF does not fit one, and with the tree's benchmark results,
# ~30 MiB since 2026-12-01, 34 MiB no longer fits beside it): .stage/model/{1,2,3}/<name>.part{1,2,3}
# (32, 32 MiB and the rest), the checksum file beside part 3. The device scripts stash parts 1 and 2 in
# /root/stage in two calls and join all three in the third (device_stage.sh, join_model_parts),
# checking the checksum. Usage: bash tools/split_model_for_device.sh [model.gguf]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || { echo "no model at $model (make model fetches it)" >&2; exit 1; }
name=$(basename "$model")
out=$root/.stage/model
rm -rf "$out"
mkdir -p "$out/1" "$out/2" "$out/3"
dd if="$model" of="$out/1/$name.part1" bs=1M count=32 status=none
dd if="$model" of="$out/2/$name.part2" bs=1M skip=32 count=32 status=none
dd if="$model" of="$out/3/$name.part3" bs=1M skip=64 status=none
if [ -f "$model.sha256" ]; then
  cp "$model.sha256" "$out/3/$name.sha256"
else
  (cd "$(dirname "$model")" && sha256sum "$name") >"$out/3/$name.sha256"
fi
cat "$out/1/$name.part1" "$out/2/$name.part2" "$out/3/$name.part3" | cmp - "$model"  # the parts join back
du -sh "$out"/*
