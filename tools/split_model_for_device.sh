#!/usr/bin/env bash
# Splits the model into two parts for the device tool, whose calls carry at most 64 MiB each
# (the 98 MB GGUF does not fit one): .stage/model/1/<name>.part1 (50 MiB) and
# .stage/model/2/<name>.part2 (the rest) with the checksum file beside part 2.
# bench/gpu/run_engine_on_device.sh joins them in /root/stage/ on the device and checks the
# checksum. Usage: bash tools/split_model_for_device.sh [model.gguf]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || { echo "no model at $model (make model fetches it)" >&2; exit 1; }
name=$(basename "$model")
out=$root/.stage/model
rm -rf "$out"
mkdir -p "$out/1" "$out/2"
first=$((50 * 1024 * 1024))
head -c "$first" "$model" >"$out/1/$name.part1"
tail -c +"$((first + 1))" "$model" >"$out/2/$name.part2"
if [ -f "$model.sha256" ]; then
  cp "$model.sha256" "$out/2/$name.sha256"
else
  (cd "$(dirname "$model")" && sha256sum "$name") >"$out/2/$name.sha256"
fi
cat "$out/1/$name.part1" "$out/2/$name.part2" | cmp - "$model"  # the parts join back to the model
du -sh "$out"/*
