#!/usr/bin/env bash
# Prepares .stage/engine/ (git-ignored) for bench/gpu/run_engine_on_device.sh, on a machine
# with nvcc but no GPU:
#   bin.tar.xz  test_cuda, bench_engine and the sinkrouter program (Release, sm_90a + sm_80,
#               stripped; xz keeps the three near-identical fatbins in ~5 MB), built from a
#               clean export of HEAD (so that they are a commit's, whatever else is being
#               edited in the checkout), and the shared libraries the device image lacks;
#   whl/        the gguf wheel for the transformers baseline (pure Python);
#   text.txt    a public-domain book from data/texts to prefill (when data/ is there).
# The model travels separately: tools/split_model_for_device.sh.
# Usage: bash bench/gpu/stage_engine_for_device.sh [build-dir]   (default build-gpuengine/stage)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-gpuengine/stage}
stage=$root/.stage/engine
src=$build/src
mkdir -p "$build"
rm -rf "$src.new" && mkdir -p "$src.new"
head=$(git -C "$root" rev-parse HEAD)  # the commit built (others may commit meanwhile)
git -C "$root" archive "$head" | tar -x -C "$src.new"
# Refresh only changed files, so that make rebuilds only what changed; drop removed ones.
mkdir -p "$src"
(cd "$src.new" && find . -type f | while read -r f; do
  cmp -s "$f" "$src/$f" || { mkdir -p "$src/$(dirname "$f")"; cp -p "$f" "$src/$f"; }
done)
(cd "$src" && find . -type f | while read -r f; do [ -e "$src.new/$f" ] || rm -f "$f"; done)
cmake -S "$src" -B "$build/obj" -DCMAKE_BUILD_TYPE=Release -DCMAKE_DISABLE_FIND_PACKAGE_BLAS=ON \
  -DCMAKE_EXE_LINKER_FLAGS=-Wl,--as-needed >/dev/null
cmake --build "$build/obj" --target test_cuda bench_engine bench_prefill_attention sinkrouter -j"$(nproc)"
rm -rf "$stage/bin" "$stage/lib" "$stage/bin.tar.xz"
mkdir -p "$stage/bin" "$stage/lib" "$stage/whl"
cp "$build/obj/tests/test_cuda" "$build/obj/bench/gpu/bench_engine" "$build/obj/bench/gpu/bench_prefill_attention" \
  "$build/obj/apps/sinkrouter" "$stage/bin/"
strip "$stage"/bin/*
for lib in $(ldd "$stage"/bin/* | awk '/libfmt|libpcre2-8|libcudart/ {print $3}' | sort -u); do cp -L "$lib" "$stage/lib/"; done
echo "$head" >"$stage/bin/COMMIT"
# A dictionary larger than one binary: the three share most of their fatbins (~4 MB, not ~10).
tar -cf - -C "$stage" bin lib | xz -T2 -6 --lzma2=dict=128MiB >"$stage/bin.tar.xz"
rm -rf "$stage/bin" "$stage/lib"
ls "$stage"/whl/gguf-*.whl >/dev/null 2>&1 ||
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d "$stage/whl" gguf==0.19.0
[ -f "$root/data/texts/mobydick.txt" ] && cp "$root/data/texts/mobydick.txt" "$stage/text.txt"
du -sh "$stage"
ls -l "$stage" "$stage/whl"
