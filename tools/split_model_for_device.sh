#!/usr/bin/env bash
# Splits the model into parts for the device tool, whose calls carry at most 64 MiB each with
# the working tree (the 98 MB GGUF does not fit one; the tree's benchmark results are ~32 MiB
# since 2026-12-01, and a 32 MiB part beside them was refused): .stage/model/<i>/<name>.part<i>
# of PART_MIB MiB each (default 24, so four parts), the checksum file beside the last part.
# The device scripts stash each part in /root/stage in calls made back to back and join them
# once the last part (with the checksum) has arrived (device_stage.sh, join_model_parts),
# checking the checksum. Usage: [PART_MIB=24] bash tools/split_model_for_device.sh [model.gguf]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || { echo "no model at $model (make model fetches it)" >&2; exit 1; }
name=$(basename "$model")
out=$root/.stage/model
part_mib=${PART_MIB:-24}
rm -rf "$out"
size=$(stat -c %s "$model")
parts=$(( (size + part_mib * 1048576 - 1) / (part_mib * 1048576) ))
for i in $(seq 1 "$parts"); do
  mkdir -p "$out/$i"
  dd if="$model" of="$out/$i/$name.part$i" bs=1M skip=$(( (i - 1) * part_mib )) count="$part_mib" status=none
done
if [ -f "$model.sha256" ]; then
  cp "$model.sha256" "$out/$parts/$name.sha256"
else
  (cd "$(dirname "$model")" && sha256sum "$name") >"$out/$parts/$name.sha256"
fi
for i in $(seq 1 "$parts"); do cat "$out/$i/$name.part$i"; done | cmp - "$model"  # the parts join back
du -sh "$out"/*
