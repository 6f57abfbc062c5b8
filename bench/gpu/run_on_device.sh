#!/usr/bin/env bash
# One call on the H200 (the device tool's `run`), from the repository root:
#   bash bench/gpu/run_on_device.sh            (QUICK=1: fewer contexts (QUICK_CONTEXTS) and cases;
#                                               SKIP_BASELINES=1, SKIP_NCU=1, SKIP_SANITIZER=1:
#                                               leave those out)
# carrying .stage/cuda (bench/gpu/stage_for_device.sh makes it; xz it to .stage/cudaxz and
# unpack it there first, as the calls of runs 4a-4c did) and, for FlashInfer, .whl: the
# newest release whose wheels fit one call (35 MiB; it JIT-compiles its decode kernels with
# the device's nvcc, ~40 s, in the baselines step: give it BASELINES_TIMEOUT=240), fetched
# here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 -d .whl \
#     flashinfer-python==0.7.0.post1 apache-tvm-ffi==0.1.15.post2
#
# Steps, each one's failure visible and none stopping the next; the whole script stays
# under 8 minutes (each step is capped; the sanitizers get what is left of 470 s, or BUDGET):
#   1. binaries: the staged ones if they load here, else configure + build from source
#      (Release, test_cuda and bench_kernels only, -j16, deps from the staged .debs);
#   2. test_cuda: the decode kernels' suites, then the other suites (engine), each capped;
#   3. bench_kernels -> kernels.json (plus KERNEL_VARIANTS, default 4K-16K with
#      SINKROUTER_PDL=0, rows "*_pdl_off");
#      then bench_kernels --trace-phases -> trace.json (TRACE_EXTRA: more flags for it);
#   4. baselines.py (SDPA cuDNN/flash, FlashInfer) -> baselines.json;
#   5. ncu: one dense and one routed (default policy) decode step at Llama-3.1-8B 64K and
#      SmolLM2 8K, batch 1 (the attention kernels and route_bounds; NCU_CASES, NCU_KERNELS and
#      NCU_EXTRA choose others), text sections -> ncu.log;
#   6. compute-sanitizer memcheck and racecheck on a short filtered run (last, capped by
#      the time left, so that a slow sanitizer cannot cost the benchmark data);
#   7. a short table.
# Everything goes to $OUT (8 files): summary.txt test_cuda.log (with the build log, if
# one was built) bench.log (bench_kernels and baselines output) kernels.json trace.json
# baselines.json ncu.log sanitizer.log
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
OUT=${OUT:-/tmp/sr_out}
mkdir -p "$OUT"
QUICK=${QUICK:-0}
stage=$root/.stage/cuda
export PATH=$PATH:/usr/local/cuda/bin
summary=$OUT/summary.txt
: >"$summary"
: >"$OUT/test_cuda.log"
: >"$OUT/bench.log"
note() { echo "$*" | tee -a "$summary"; }
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 ))s; }
budget=${BUDGET:-470}  # seconds the steps may use in all (BUDGET: fewer, where the call runs more after)

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv,noheader 2>&1 | tee -a "$summary"
note "binaries of commit $(cat "$stage/COMMIT" 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%M:%SZ)"

# ---- 1. binaries ----
# Library path for our binaries only (python must keep its own CUDA runtime).
bin=""
bin_ld=${LD_LIBRARY_PATH:-}
buildlog=/tmp/sr_build.log
: >"$buildlog"
if [ -x "$stage/bin/test_cuda" ]; then
  bin_ld=$stage/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
  if env LD_LIBRARY_PATH="$bin_ld" "$stage/bin/test_cuda" --gtest_list_tests >/dev/null 2>"$buildlog"; then
    bin=$stage/bin
    note "binaries: staged (.stage/cuda/bin) $(elapsed)"
  else
    note "binaries: staged ones do not load here (see test_cuda.log); building from source"
  fi
fi
if [ -z "$bin" ]; then
  deps=/tmp/sr_deps
  mkdir -p "$deps"
  for f in "$stage"/debs/*.deb; do [ -f "$f" ] && dpkg -x "$f" "$deps"; done
  bin_ld=$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  build=/tmp/sr_build
  if cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_DISABLE_FIND_PACKAGE_BLAS=ON \
       -DCMAKE_PREFIX_PATH="$deps/usr" -DCMAKE_INCLUDE_PATH="$deps/usr/include" >>"$buildlog" 2>&1 &&
     cmake --build "$build" --target test_cuda bench_kernels -j16 >>"$buildlog" 2>&1; then
    mkdir -p /tmp/sr_bin && cp "$build/tests/test_cuda" "$build/bench/gpu/bench_kernels" /tmp/sr_bin/
    bin=/tmp/sr_bin
    note "binaries: built here $(elapsed)"
  else
    note "BUILD FAILED (test_cuda.log) $(elapsed)"
    tail -20 "$buildlog"
  fi
fi
if [ -s "$buildlog" ]; then
  { echo "==== build ===="; tail -c 200000 "$buildlog"; echo "==== test_cuda ===="; } >>"$OUT/test_cuda.log"
fi

# ---- 2. tests: the decode kernels' suites first, then the rest of test_cuda (engine) ----
mine='CudaDenseDecode.*:Grid/CudaDenseDecode.*:CudaRoutedDecode.*:CudaRouteSelect.*:CudaRouteBounds.*:CudaGraph.*:CudaDecodeErrors.*:DeviceCache.*:Grid/DeviceCacheAppend.*'
if [ -n "$bin" ]; then
  routed_cases=240
  [ "$QUICK" = 1 ] && routed_cases=60
  env LD_LIBRARY_PATH="$bin_ld" SR_CUDA_ROUTED_CASES=$routed_cases timeout 120 "$bin/test_cuda" \
    --gtest_filter="$mine" >>"$OUT/test_cuda.log" 2>&1
  rc=$?
  note "test_cuda (decode kernels): rc=$rc, $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]|^\[  SKIPPED \] [0-9]' "$OUT/test_cuda.log" | tr '\n' ' ') $(elapsed)"
  grep -E '^\[  FAILED  \]' "$OUT/test_cuda.log" | head -20 | tee -a "$summary"
  grep -E 'decisions:' "$OUT/test_cuda.log" | tee -a "$summary"
  echo "==== test_cuda, other suites ====" >>"$OUT/test_cuda.log"
  rest=/tmp/sr_test_rest.log
  env LD_LIBRARY_PATH="$bin_ld" timeout 60 "$bin/test_cuda" --gtest_filter="-$mine" >"$rest" 2>&1
  rc=$?
  cat "$rest" >>"$OUT/test_cuda.log"
  note "test_cuda (other suites): rc=$rc, $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]|^\[  SKIPPED \] [0-9]' "$rest" | tr '\n' ' ') $(elapsed)"

  # ---- 3. kernel benchmark ----
  ctx=4096,8192,16384,65536,131072,262144,524288
  [ "$QUICK" = 1 ] && ctx=${QUICK_CONTEXTS:-4096,8192,65536,524288}
  echo "==== bench_kernels ====" >>"$OUT/bench.log"
  env LD_LIBRARY_PATH="$bin_ld" timeout 120 "$bin/bench_kernels" --out "$OUT/kernels.json" --contexts $ctx \
    >>"$OUT/bench.log" 2>&1
  note "bench_kernels: rc=$? $(elapsed)"

  # ---- 3a. variants: bench_kernels again under other settings, at VARIANT_CONTEXTS,
  # merged into kernels.json as kernel "<name>_<variant>" (a call returns 8 files).
  # KERNEL_VARIANTS="name:ENV=value[,ENV=value...] ..." (default: PDL off at 4K-16K, for its effect).
  variant_ctx=${VARIANT_CONTEXTS:-4096,8192,16384}
  for variant in ${KERNEL_VARIANTS-pdl_off:SINKROUTER_PDL=0}; do
    vname=${variant%%:*}
    # shellcheck disable=SC2046  # one word per ENV=value
    env LD_LIBRARY_PATH="$bin_ld" $(echo "${variant#*:}" | tr ',' ' ') timeout 90 "$bin/bench_kernels" --out "/tmp/sr_$vname.json" \
      --contexts "$variant_ctx" >"/tmp/sr_$vname.log" 2>&1
    note "bench_kernels with ${variant#*:} ($variant_ctx): rc=$? $(elapsed)"
    { echo "==== bench_kernels, ${variant#*:} ===="; cat "/tmp/sr_$vname.log"; } >>"$OUT/bench.log"
    python3 - "$OUT/kernels.json" "/tmp/sr_$vname.json" "$vname" <<'PY' || note "$vname rows: not merged"
import json, sys
main, var = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
for r in var["rows"]:
    r["kernel"] += "_" + sys.argv[3]
    main["rows"].append(r)
json.dump(main, open(sys.argv[1], "w"), indent=1)
PY
  done

  # ---- 3b. where the time of a small call goes: per-CTA phase stamps ----
  echo "==== bench_kernels --trace-phases ====" >>"$OUT/bench.log"
  # TRACE_EXTRA: more bench_kernels flags for it (e.g. --probe-policy fast).
  env LD_LIBRARY_PATH="$bin_ld" timeout 60 "$bin/bench_kernels" --trace-phases --out "$OUT/trace.json" \
    --contexts 4096,8192,16384,65536,524288 --batches 1,8 ${TRACE_EXTRA:-} >/tmp/sr_trace.log 2>&1
  note "trace phases: rc=$? $(elapsed)"
  cat /tmp/sr_trace.log >>"$OUT/bench.log"
  grep -E '^trace(-route|-spread)? ' /tmp/sr_trace.log | sed 's/  */ /g' >>"$summary"
  # TRACE_VARIANT="name:ENV=value": the dense trace again under that setting, its rows merged
  # into trace.json as kernel "trace_dense_<name>" (e.g. cluster:SINKROUTER_DECODE_CLUSTER=on).
  if [ -n "${TRACE_VARIANT:-}" ]; then
    tname=${TRACE_VARIANT%%:*}
    env LD_LIBRARY_PATH="$bin_ld" "${TRACE_VARIANT#*:}" timeout 60 "$bin/bench_kernels" --trace-phases \
      --out "/tmp/sr_trace_$tname.json" --contexts 4096,8192,16384,65536,524288 --batches 1,8 \
      >"/tmp/sr_trace_$tname.log" 2>&1
    note "trace phases with ${TRACE_VARIANT#*:}: rc=$? $(elapsed)"
    { echo "==== trace, ${TRACE_VARIANT#*:} ===="; cat "/tmp/sr_trace_$tname.log"; } >>"$OUT/bench.log"
    grep -E '^trace(-spread)? .* dense' "/tmp/sr_trace_$tname.log" | sed "s/  */ /g; s/^/[$tname] /" >>"$summary"
    python3 - "$OUT/trace.json" "/tmp/sr_trace_$tname.json" "$tname" <<'PY' || note "$tname trace rows: not merged"
import json, sys
main, var = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
for r in var["rows"]:
    if r["kernel"] == "trace_dense":
        r["kernel"] += "_" + sys.argv[3]
        main["rows"].append(r)
json.dump(main, open(sys.argv[1], "w"), indent=1)
PY
  fi
fi

# ---- 4. baselines (SKIP_BASELINES=1: not this time) ----
echo "==== baselines ====" >>"$OUT/bench.log"
if [ "${SKIP_BASELINES:-0}" = 1 ]; then
  note "baselines: skipped (SKIP_BASELINES=1)"
else
if ls "$root"/.whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$root"/.whl/*.whl >>"$OUT/bench.log" 2>&1 && export PYTHONPATH=/tmp/site
fi
ctx=${ctx:-4096,8192,16384,65536,131072,262144,524288}
PYTHONUNBUFFERED=1 timeout ${BASELINES_TIMEOUT:-90} python3 bench/gpu/baselines.py --out "$OUT/baselines.json" \
  --contexts "$ctx" >>"$OUT/bench.log" 2>&1
note "baselines: rc=$? $(elapsed)"
fi

# ---- 5. ncu: where the time of one decode step goes (Llama-3.1-8B, 64K, batch 1) ----
: >"$OUT/ncu.log"
if [ "${SKIP_NCU:-0}" = 1 ]; then
  note "ncu: skipped (SKIP_NCU=1)"
elif [ -n "$bin" ] && command -v ncu >/dev/null 2>&1; then
  # NCU_CASES: shape:context:batch cases; NCU_KERNELS: the kernel-name regex; NCU_EXTRA:
  # further ncu arguments (e.g. "--section SourceCounters" for the stall sampling by line).
  for case in ${NCU_CASES:-llama-3.1-8b:65536:1 smollm2-135m:8192:1}; do
    IFS=: read -r shape ctx batch <<<"$case"
    # shellcheck disable=SC2086
    env LD_LIBRARY_PATH="$bin_ld" timeout 120 ncu --clock-control none --kernel-name-base function \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section LaunchStats \
      --section Occupancy ${NCU_EXTRA:-} -k regex:"${NCU_KERNELS:-attention|route_}" --launch-count 3 \
      --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
      "$bin/bench_kernels" --profile-once --shapes "$shape" --contexts "$ctx" --batches "${batch:-1}" \
      >>"$OUT/ncu.log" 2>&1
    note "ncu ${case}: rc=$? $(elapsed)"
  done
  note "ncu: $(grep -c 'Context 1, Stream' "$OUT/ncu.log") kernels profiled"
else
  note "ncu: skipped (no binaries or no ncu)"
fi

# ---- 6. compute-sanitizer (last: the slowest step; capped by what is left) ----
filter='Grid/CudaDenseDecode.MatchesFloat64Exact/h2_g3*:CudaGraph.*:CudaRoutedDecode.*:CudaRouteSelect.*:CudaRouteBounds.*:Grid/DeviceCacheAppend.MatchesHostCacheBitForBit/h2_d128_p3_r7*:CudaDenseDecode.LongAndShortSequencesShareTheGrid:CudaDenseDecode.ClusterModeOverLongAndShortSequences'
: >"$OUT/sanitizer.log"
# racecheck (several times slower) on the page-16 grid cases only: they take every kernel path
# (cp.async and TMA, flat and clusters, fixed and dynamic splits); the full filter ran past its
# cap once the dynamic splits doubled the grid's configurations (run 18a).
race_filter='Grid/CudaDenseDecode.MatchesFloat64Exact/h2_g3*_p16_*:CudaGraph.*:CudaRoutedDecode.*:CudaRouteSelect.*:CudaRouteBounds.*'
for tool in memcheck racecheck; do
  [ -n "$bin" ] || break
  [ "$tool" = racecheck ] && filter="$race_filter"
  if [ "${SKIP_SANITIZER:-0}" = 1 ]; then note "compute-sanitizer: skipped (SKIP_SANITIZER=1)"; break; fi
  left=$(( budget - ($(date +%s) - t0) ))
  if [ "$left" -lt 45 ]; then note "compute-sanitizer $tool: skipped, ${left}s left"; continue; fi
  [ "$left" -gt 200 ] && left=200
  env LD_LIBRARY_PATH="$bin_ld" SR_CUDA_ROUTED_CASES=6 timeout $left compute-sanitizer --tool $tool --error-exitcode 9 \
    "$bin/test_cuda" --gtest_filter="$filter" >>"$OUT/sanitizer.log" 2>&1
  rc=$?
  note "compute-sanitizer $tool: rc=$rc, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer.log" | tail -1) $(elapsed)"
done

# ---- 6b. the JSON files say which binaries ran (.stage/cuda/COMMIT, written when staging), where and when ----
python3 bench/gpu/stamp_json.py "$stage/COMMIT" "$OUT" kernels.json baselines.json trace.json >/dev/null ||
  note "JSON: not stamped"

# ---- 7. table ----
variant_names=""
for variant in ${KERNEL_VARIANTS-pdl_off:SINKROUTER_PDL=0}; do variant_names="$variant_names ${variant%%:*}"; done
python3 - "$OUT" $variant_names <<'PY' 2>&1 | tee -a "$summary"
import json, os, sys
out = sys.argv[1]
try:
    k = json.load(open(os.path.join(out, "kernels.json")))
except Exception as e:
    print("no kernels.json:", e); sys.exit(0)
try:
    base = json.load(open(os.path.join(out, "baselines.json")))["rows"]
except Exception:
    base = []
print(f"read {k['read_gbps']:.0f} GB/s, copy {k['copy_gbps']:.0f} GB/s")
print(f"{'shape':13s} {'B':>2s} {'ctx':>7s} {'dense us':>9s} {'xfloor':>6s} {'probe us':>9s} {'xprobe':>6s} {'cores us':>9s} {'r50 us':>8s} {'r75 us':>8s} {'r90 us':>8s} {'route%':>6s} {'cudnn':>8s} {'flash':>8s} {'finfer':>8s}")
def get(rows, **kw):
    for r in rows:
        if all(r.get(a) == b for a, b in kw.items()): return r
    return {}
for r in k["rows"]:
    if r["kernel"] != "dense": continue
    s, B, c = r["shape"], r["batch"], r["context"]
    cores = get(k["rows"], shape=s, batch=B, context=c, kernel="dense_cuda_cores").get("time_us", float("nan"))
    rr = {p: get(k["rows"], shape=s, batch=B, context=c, kernel="sinkrouter", skip_target_pct=p).get("time_us", float("nan")) for p in (50, 75, 90)}
    rp = get(k["rows"], shape=s, batch=B, context=c, kernel="routing_pass").get("time_us", float("nan"))
    probe = get(k["rows"], shape=s, batch=B, context=c, kernel="read_probe").get("time_us", float("nan"))
    bl = {n: get(base, shape=s, batch=B, context=c, kernel=n).get("time_us", float("nan")) for n in ("sdpa_cudnn", "sdpa_flash", "flashinfer")}
    print(f"{s:13s} {B:2d} {c:7d} {r['time_us']:9.2f} {r['ratio_to_floor']:6.2f} {probe:9.2f} {r['time_us']/probe:6.2f} {cores:9.2f} {rr[50]:8.2f} {rr[75]:8.2f} {rr[90]:8.2f} {100*rp/r['time_us']:6.1f} {bl['sdpa_cudnn']:8.2f} {bl['sdpa_flash']:8.2f} {bl['flashinfer']:8.2f}")
print()
print(f"{'shape':13s} {'B':>2s} {'ctx':>7s} {'dense':>8s} {'fixed':>8s} {'splitk':>8s} {'cluster':>8s} {'CxK':>5s} {'clust1':>8s} {'fast50':>8s} {'fast75':>8s} {'fast90':>8s} {'pass':>7s} {'fast2k50':>8s} {'pass2k':>7s} {'dflt50':>8s} {'passdf':>7s}")
ck = lambda r: f"{r.get('cluster_ctas', 0)}x{r.get('cluster_groups', 0)}" if r.get("cluster_ctas") else "flat"
for r in k["rows"]:
    if r["kernel"] != "dense": continue
    s, B, c = r["shape"], r["batch"], r["context"]
    t = lambda kern, p=None: get(k["rows"], shape=s, batch=B, context=c, kernel=kern, **({} if p is None else {"skip_target_pct": p})).get("time_us", float("nan"))
    print(f"{s:13s} {B:2d} {c:7d} {r['time_us']:8.2f} {t('dense_fixed'):8.2f} {t('dense_splitk'):8.2f} {t('dense_cluster'):8.2f} {ck(get(k['rows'], shape=s, batch=B, context=c, kernel='dense_cluster')):>5s} {t('dense_cluster1'):8.2f} {t('sinkrouter_fast', 50):8.2f} {t('sinkrouter_fast', 75):8.2f} {t('sinkrouter_fast', 90):8.2f} {t('routing_pass_fast'):7.2f} {t('sinkrouter_fast_2k'):8.2f} {t('routing_pass_fast_2k'):7.2f} {t('sinkrouter_default'):8.2f} {t('routing_pass_default'):7.2f}")
# Variant rows (KERNEL_VARIANTS) beside the main run's: dense and fast routed 50 / 75 / 90 %.
for v in sys.argv[2:]:
    print()
    print(f"variant {v}: {'shape':13s} {'B':>2s} {'ctx':>7s} {'dense':>8s} {'var':>8s} {'fast50':>8s} {'var':>8s} {'fast75':>8s} {'var':>8s} {'fast90':>8s} {'var':>8s}")
    for r in k["rows"]:
        if r["kernel"] != "dense_" + v: continue
        s, B, c = r["shape"], r["batch"], r["context"]
        t = lambda kern, p=None: get(k["rows"], shape=s, batch=B, context=c, kernel=kern, **({} if p is None else {"skip_target_pct": p})).get("time_us", float("nan"))
        cols = [t("dense"), r["time_us"]] + [x for p in (50, 75, 90) for x in (t("sinkrouter_fast", p), t("sinkrouter_fast_" + v, p))]
        print(f"variant {v}: {s:13s} {B:2d} {c:7d} " + " ".join(f"{x:8.2f}" for x in cols))
PY
note "done $(elapsed)"
