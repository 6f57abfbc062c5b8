#!/usr/bin/env bash
# Prepares .stage/cuda/ (git-ignored) for bench/gpu/run_on_device.sh, on a machine with
# nvcc but no GPU:
#   .stage/cuda/bin/   test_cuda and bench_kernels built here (Release, sm_90a + sm_80;
#                      .stage/cuda/COMMIT: the commit they were built from),
#                      linked --as-needed, with the one shared library the device image
#                      lacks (libfmt) beside them in .stage/cuda/lib/;
#   .stage/cuda/debs/  the Debian -dev packages of the build's dependencies, so that the
#                      device can also configure and build from source if the staged
#                      binaries do not load there.
# Usage: bash bench/gpu/stage_for_device.sh [build-dir]   (default build-cuda)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-cuda}
stage=$root/.stage/cuda
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_DISABLE_FIND_PACKAGE_BLAS=ON \
  -DCMAKE_EXE_LINKER_FLAGS=-Wl,--as-needed >/dev/null
cmake --build "$build" --target test_cuda bench_kernels -j"$(nproc)"
rm -rf "$stage/bin" "$stage/lib"
mkdir -p "$stage/bin" "$stage/lib" "$stage/debs"
cp "$build/tests/test_cuda" "$build/bench/gpu/bench_kernels" "$stage/bin/"
# The commit the binaries were built from (run_on_device.sh stamps the JSON with it), marked
# "-dirty" where the tree had uncommitted changes.
{ git -C "$root" rev-parse HEAD | tr -d '\n'; git -C "$root" diff --quiet HEAD -- src include bench tests || printf -- -dirty; echo; } \
  >"$stage/COMMIT"
for lib in $(ldd "$stage/bin/test_cuda" "$stage/bin/bench_kernels" | awk '/libfmt|libcudart/ {print $3}' | sort -u); do
  cp -L "$lib" "$stage/lib/"
done
(cd "$stage/debs" && apt-get download libfmt-dev libfmt9 nlohmann-json3-dev libgtest-dev libgmock-dev \
  libbenchmark-dev libbenchmark1debian libcli11-dev >/dev/null)
du -sh "$stage"
ls -l "$stage"/*
