#!/usr/bin/env bash
# The GPU engine on the H200 (the device tool's `run`), from the repository root.
#
# The model (98 MB) is more than one call carries (64 MiB with the working tree), so it goes
# in parts (tools/split_model_for_device.sh: four of 24 MiB), in calls made back to back (a
# machine left idle for 30 s is given back, and /root/stage with it):
#   calls 1-4: bash bench/gpu/run_engine_on_device.sh stash    carry [".stage/model/<i>"]
#           each keeps its part in /root/stage (and stops at the binaries, which they lack);
#           the last one (with the checksum) joins the model and checks its SHA-256;
#   call 5: bash bench/gpu/run_engine_on_device.sh             carry [".stage/engine"]
#           runs everything.
# With the model at models/ (or already at /root/stage/SmolLM2-135M-Instruct.Q4_1.gguf) one
# call does it all. Binaries: .stage/engine (bench/gpu/stage_engine_for_device.sh).
#
# Steps (each one's failure shown, none stopping the next; < 9 minutes in all, ~4 expected):
#   1. binaries unpacked and loaded;
#   2. test_cuda, the engine's tests (prefill attention, both decode GEMVs and ops, engine
#      vs CPU and transformers, graph, batch, fork, routed statistics), with fallbacks:
#      flash prefill v4 (tma) or v3 (wgmma) failed -> SINKROUTER_PREFILL_ATTENTION=flash2, v2 failed too -> flash1, all failed -> reference; the GEMV in use (chain
#      or v2, when chosen) failed its own test -> SINKROUTER_GEMV=v1; else the chained-GEMV test under PDL (CudaGemvPdl)
#      failed -> SINKROUTER_PDL=0; engine tests failed with only the kernels passing ->
#      again with SINKROUTER_PDL=0, then with SINKROUTER_GEMV=v1, keeping the first that
#      passes. Everything after runs under the fallbacks taken (summary.txt names them);
#      then the decode kernels' own suites (decode_tests.log), and the engine's tests again on
#      each GEMV version the main run does not use;
#   3. `sinkrouter generate --device cuda` (the command line, end to end);
#   4. bench_engine: prefill and decode tokens/s, dense and sinkrouter, and at 8K the step with
#      each of its parts left out (--ablate) -> bench_engine.json; then short decode runs at 8K
#      and 32K (no batch row, --ablate) on every other GEMV version (bench_engine_gemv_<v>.json)
#      and with PDL off (bench_engine_pdl_off.json);
#   5. transformers_baseline.py: the same GGUF in transformers (bf16, SDPA) -> transformers.json;
#   6. compute-sanitizer memcheck and racecheck on short runs (capped by the time left);
#   7. a short table.
# Knobs (environment, passed through to every binary): SINKROUTER_GEMV=v1|v2|chain (the
# program's default when unset), SINKROUTER_PDL=0 (no programmatic dependent launch),
# SINKROUTER_PREFILL_ATTENTION=flash|tma|wgmma|flash2|flash1|reference. NCU_PREFILL=1: ncu of the prefill
# kernels. TRACE_CHAIN=1: the GEMV chains' stage phases (bench_engine --trace-chain).
# VARIANTS (this script's): the list of step 4's
# variant runs, "name:ENV=value" or "name:--bench-flag" separated by spaces. QUICK=1: no
# decode-kernel suites or other-version engine tests, decode at 8K and 32K only, no
# transformers baseline (a check of a change, ~2 minutes). SKIP_TRANSFORMERS=1: no transformers
# baseline.
# $OUT (a call brings back only a few files): summary.txt tests.log (with the generate and
#                  sanitizer logs appended) decode_tests.log bench_engine.json bench_engine.log
#                  bench_engine_gemv_<v>.json bench_engine_pdl_off.json transformers.json
#                  transformers.log prefill_attention.json prefill_attention.log
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
OUT=${OUT:-/tmp/sr_engine_out}
mkdir -p "$OUT"
mode=${1:-all}
source bench/gpu/device_stage.sh  # stash, name, join_model_parts
export PATH=$PATH:/usr/local/cuda/bin
summary=$OUT/summary.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 ))s; }
left() { echo $(( 530 - ($(date +%s) - t0) )); }

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv,noheader 2>&1 | tee -a "$summary"

# ---- 1. binaries and parts into /root/stage ----
join_model_parts
# The prefill text may travel with part 1 (.stage/text/text.txt) when the tree is near its limit.
cp .stage/text/text.txt "$stash/" 2>/dev/null
if [ -f .stage/engine/bin.tar.xz ]; then
  tar -xJf .stage/engine/bin.tar.xz -C "$stash" && note "binaries: $(cat "$stash/bin/COMMIT" 2>/dev/null) unpacked $(elapsed)"
fi
bin=$stash/bin
# cuBLAS (not staged: hundreds of MB): the CUDA toolkit's, else the one PyTorch's wheels carry.
cublas_dirs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
  f=$(find -L "$d" -maxdepth 5 -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
  [ -n "$f" ] && cublas_dirs="$cublas_dirs:$(dirname "$f")"
done
note "cuBLAS found in: ${cublas_dirs:-nowhere}"
bin_ld=$stash/lib:/usr/local/cuda/lib64${cublas_dirs}:${LD_LIBRARY_PATH:-}
run_bin() { env LD_LIBRARY_PATH="$bin_ld" "$@"; }
if ! run_bin "$bin/test_cuda" --gtest_list_tests >/dev/null 2>"$OUT/tests.log"; then
  note "BINARIES DO NOT LOAD (tests.log): $(head -c 300 "$OUT/tests.log")"
  exit 1
fi
export SINKROUTER_TEST_DATA_DIR=$root/tests/data

kernel_filter='*CudaPrefillAttention*:*CudaGemv*:CudaOps.*'  # CudaGemv: V1/ and V2/ instances
if [ "$mode" = stash ]; then
  # Everything that needs no model: the engine's kernels and the decode kernels' suites too.
  run_bin timeout 200 "$bin/test_cuda" --gtest_filter='-CudaEngine.*' >"$OUT/tests.log" 2>&1
  note "kernel tests: rc=$? $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]' "$OUT/tests.log" | tr '\n' ' ') $(elapsed)"
  grep -E '^\[  FAILED  \]|flash: max' "$OUT/tests.log" | head -30 | tee -a "$summary"
  ls -la "$stash" | tee -a "$summary"
  exit 0
fi

# ---- the model: models/, or /root/stage (joined from its parts above) ----
model=""
for m in "$root/models/$name" "$stash/$name"; do [ -f "$m" ] && model=$m && break; done
if [ -z "$model" ]; then
  note "NO MODEL: neither models/$name nor all its parts in $stash ($(ls "$stash" | tr '\n' ' '))"
  exit 1
fi
[ -f "$model.sha256" ] || cp "$stash/$name.sha256" "$model.sha256" 2>/dev/null
want=$(awk '{print $1}' "$model.sha256" 2>/dev/null)
got=$(sha256sum "$model" | awk '{print $1}')
if [ "$want" != "$got" ]; then note "MODEL CHECKSUM MISMATCH: $got, expected $want"; exit 1; fi
note "model: $model (sha256 ok) $(elapsed)"
export SINKROUTER_MODEL=$model

# ---- 2. tests ----
# A run that crashed or hung (rc other than 0 and 1) prints no FAILED line for the test it
# was in: name that test (the last one started) as failed, so that the fallbacks see it.
mark_unfinished() {  # $1: the run's exit status
  [ "$1" -eq 0 ] || [ "$1" -eq 1 ] && return 1
  local t
  t=$(grep -E '^\[ RUN      \]' "$OUT/tests.log" | tail -1 | sed 's/^\[ RUN      \] //')
  echo "[  FAILED  ] ${t:-unknown} (did not finish: rc=$1, crash or timeout)" >>"$OUT/tests.log"
  note "TEST RUN DID NOT FINISH (rc=$1) in ${t:-unknown}"
  return 0
}
run_bin timeout 240 "$bin/test_cuda" --gtest_filter="$kernel_filter:CudaEngine*" >"$OUT/tests.log" 2>&1
rc=$?
unfinished=0
mark_unfinished $rc && unfinished=1
note "tests: rc=$rc $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]|^\[  SKIPPED \] [0-9]' "$OUT/tests.log" | tr '\n' ' ') $(elapsed)"
grep -E '^\[  FAILED  \]' "$OUT/tests.log" | head -20 | tee -a "$summary"
grep -E 'GPU vs CPU|greedy tokens checked|sinkrouter\(certified' "$OUT/tests.log" | tee -a "$summary"
# The decode kernels' own suites (call 1 cannot carry the binaries next to part 1 of the model).
if [ -z "${QUICK:-}" ]; then
run_bin timeout 150 "$bin/test_cuda" --gtest_filter='-CudaEngine*:*CudaPrefillAttention*:*CudaGemv*:CudaOps.*' \
  >"$OUT/decode_tests.log" 2>&1
note "decode kernel tests: rc=$? $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]' "$OUT/decode_tests.log" | tr '\n' ' ') $(elapsed)"
# The engine's tests again on every GEMV version the main run does not use.
for g in v1 v2 chain; do
  [ "${SINKROUTER_GEMV:-v1}" = "$g" ] && continue
  echo "==== engine tests, SINKROUTER_GEMV=$g ====" >>"$OUT/decode_tests.log"
  run_bin env SINKROUTER_GEMV=$g timeout 150 "$bin/test_cuda" --gtest_filter='CudaEngine*' >>"$OUT/decode_tests.log" 2>&1
  note "engine tests with SINKROUTER_GEMV=$g: rc=$? $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]' "$OUT/decode_tests.log" | tail -1) $(elapsed)"
done
fi
# If the flash prefill kernel or GEMV v2 failed its own test, everything downstream would
# read its output: run the engine again on the plain float32 prefill kernel (slow: shorter
# benchmark) and / or on GEMV v1.
bench_contexts=""
rerun=""
if grep -qE '^\[  FAILED  \] .*CudaPrefillAttention.*/(flash|tma|wgmma)_' "$OUT/tests.log" &&
   ! grep -qE '^\[  FAILED  \] .*CudaPrefillAttention.*/flash2_' "$OUT/tests.log"; then
  export SINKROUTER_PREFILL_ATTENTION=flash2
  rerun="the version 2 flash prefill kernel"
  note "FLASH PREFILL KERNEL V4 (TMA) OR V3 (WGMMA) FAILED ITS TEST (v2 passed): engine tests again, and the benchmark, on v2"
elif grep -qE '^\[  FAILED  \] .*CudaPrefillAttention.*/flash2_' "$OUT/tests.log" &&
   ! grep -qE '^\[  FAILED  \] .*CudaPrefillAttention.*/flash1_' "$OUT/tests.log"; then
  export SINKROUTER_PREFILL_ATTENTION=flash1
  rerun="the version 1 flash prefill kernel"
  note "FLASH PREFILL KERNELS V2 / V3 / V4 FAILED THEIR TESTS (v1 passed): engine tests again, and the benchmark, on v1"
elif grep -qE '^\[  FAILED  \] .*CudaPrefillAttention' "$OUT/tests.log"; then
  export SINKROUTER_PREFILL_ATTENTION=reference
  bench_contexts="--decode-contexts 8192,32768"
  rerun="the reference prefill kernel"
  note "FLASH PREFILL KERNEL FAILED ITS TEST: engine tests again, and the benchmark, on the reference kernel"
fi
if [ "${SINKROUTER_GEMV:-v1}" = chain ] && grep -qE '^\[  FAILED  \] (Chain/CudaGemv|CudaGemvChain)' "$OUT/tests.log"; then
  export SINKROUTER_GEMV=v1
  rerun="${rerun:+$rerun and }GEMV v1"
  note "GEMV CHAIN FAILED ITS TEST: engine tests again, and the benchmark, on GEMV v1 (SINKROUTER_GEMV=v1)"
elif [ "${SINKROUTER_GEMV:-v1}" = v2 ] && grep -qE '^\[  FAILED  \] V2/CudaGemv' "$OUT/tests.log"; then
  export SINKROUTER_GEMV=v1
  rerun="${rerun:+$rerun and }GEMV v1"
  note "GEMV V2 FAILED ITS TEST: engine tests again, and the benchmark, on GEMV v1 (SINKROUTER_GEMV=v1)"
elif grep -qE '^\[  FAILED  \] CudaGemvPdl' "$OUT/tests.log"; then
  export SINKROUTER_PDL=0
  rerun="${rerun:+$rerun and }GEMV ${SINKROUTER_GEMV:-v1} without PDL"
  note "A GEMV PASSED ALONE BUT FAILED CHAINED UNDER PDL: engine tests again, and the benchmark, with SINKROUTER_PDL=0"
fi
engine_tests() {  # $1: a label; the environment decides the kernels
  run_bin timeout 200 "$bin/test_cuda" --gtest_filter='CudaEngine*' >>"$OUT/tests.log" 2>&1
  local rc=$?
  mark_unfinished $rc
  note "engine tests on $1: rc=$rc $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]' "$OUT/tests.log" | tail -2 | tr '\n' ' ') $(elapsed)"
  return $rc
}
if [ -n "$rerun" ]; then
  echo "==== engine tests again on $rerun ====" >>"$OUT/tests.log"
  engine_tests "$rerun"
elif grep -qE '^\[  FAILED  \] CudaEngine' "$OUT/tests.log" && [ "${SINKROUTER_PDL:-1}" != 0 ]; then
  # The kernels passed alone but the engine failed: programmatic dependent launch (the
  # one thing the kernel tests do not exercise) or the GEMV version inside the engine? Isolate.
  note "ENGINE TESTS FAILED ON GEMV ${SINKROUTER_GEMV:-v1} WITH PDL: again with SINKROUTER_PDL=0"
  echo "==== engine tests again with SINKROUTER_PDL=0 ====" >>"$OUT/tests.log"
  if SINKROUTER_PDL=0 engine_tests "GEMV ${SINKROUTER_GEMV:-v1} without PDL"; then
    export SINKROUTER_PDL=0
    note "=> PDL BREAKS THE ENGINE: everything below runs with SINKROUTER_PDL=0"
  else
    echo "==== engine tests again with SINKROUTER_GEMV=v1 ====" >>"$OUT/tests.log"
    if SINKROUTER_GEMV=v1 engine_tests "GEMV v1"; then
      export SINKROUTER_GEMV=v1
      note "=> GEMV ${SINKROUTER_GEMV:-v1} BREAKS THE ENGINE: everything below runs with SINKROUTER_GEMV=v1"
    else
      note "=> the engine fails on GEMV v1 as well: not the GEMV; kept GEMV ${SINKROUTER_GEMV:-v1}"
    fi
  fi
elif [ "$unfinished" = 1 ]; then
  echo "==== engine tests again (the first run did not finish) ====" >>"$OUT/tests.log"
  engine_tests "the same kernels (the first run did not finish)"
fi
note "kernels in use: GEMV ${SINKROUTER_GEMV:-v1}, PDL ${SINKROUTER_PDL:-on}, prefill attention ${SINKROUTER_PREFILL_ATTENTION:-flash}"

# ---- 3. the command line ----
run_bin timeout 60 "$bin/sinkrouter" generate -m "$model" --device cuda --chat -n 48 --json \
  -p "What is the capital of France? Answer in one sentence." >"$OUT/generate.log" 2>&1
note "sinkrouter generate --device cuda: rc=$? $(elapsed)"
run_bin timeout 60 "$bin/sinkrouter" generate -m "$model" --device cuda --policy sinkrouter -n 32 \
  -p "The lighthouse keeper climbed the stairs" >>"$OUT/generate.log" 2>&1
note "sinkrouter generate --device cuda --policy sinkrouter: rc=$? $(elapsed)"

# ---- 4. engine benchmark ----
# The prefill attention kernels alone (each flash version, ~10 s), then ncu on one call of
# each (NCU_PREFILL=1: stall reasons and pipe use, ~1 min) -> prefill_attention.{json,log}.
run_bin timeout 90 "$bin/bench_prefill_attention" --out "$OUT/prefill_attention.json" >"$OUT/prefill_attention.log" 2>&1
note "bench_prefill_attention: rc=$? $(elapsed)"
if [ -n "${NCU_PREFILL:-}" ] && command -v ncu >/dev/null; then
  run_bin timeout 150 ncu --kernel-name regex:"flash|wgmma|tma" --launch-count 3 --section SpeedOfLight \
    --section ComputeWorkloadAnalysis --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis \
    "$bin/bench_prefill_attention" --once >>"$OUT/prefill_attention.log" 2>&1
  note "ncu of the prefill kernels: rc=$? $(elapsed)"
fi
text=""
[ -f .stage/engine/text.txt ] && text="--text .stage/engine/text.txt"
[ -z "$text" ] && [ -f "$stash/text.txt" ] && text="--text $stash/text.txt"
# NCU_PREFILL_ENGINE=1: the kernels of one 16K-token prefill (the first ~600 launches of a short
# benchmark) timed one by one by ncu, summed by kernel name -> prefill_attention.log, summary.
if [ -n "${NCU_PREFILL_ENGINE:-}" ] && command -v ncu >/dev/null; then
  run_bin timeout 240 ncu --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function --launch-count 600 \
    "$bin/bench_engine" -m "$model" --out /tmp/ncu_engine.json $text --decode-contexts 16384 --steps 2 --batch 0 \
    --time-budget 60 >/tmp/ncu_prefill_engine.csv 2>>"$OUT/prefill_attention.log"
  note "ncu of a 16K prefill: rc=$? $(elapsed)"
  python3 - /tmp/ncu_prefill_engine.csv <<'PY' 2>&1 | tee -a "$summary"
import csv, re, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head, body = rows[0], rows[1:]
k, v = head.index("Kernel Name"), head.index("Metric Value")
tot, cnt = {}, {}
for r in body:
    name = r[k][:90]
    tot[name] = tot.get(name, 0) + float(r[v].replace(",", "")) / 1e6
    cnt[name] = cnt.get(name, 0) + 1
all_ms = sum(tot.values())
print(f"ncu, the first {len(body)} kernels (a 16K prefill, then decode): {all_ms:.1f} ms in all")
for name, ms in sorted(tot.items(), key=lambda x: -x[1])[:18]:
    print(f"  {ms:9.2f} ms {cnt[name]:5d} x  {name}")
PY
fi
[ -n "${QUICK:-}" ] && [ -z "$bench_contexts" ] && bench_contexts="--decode-contexts 8192,32768"
budget=$(( $(left) - 200 ))  # keep ~200 s for the baseline and the sanitizer
[ "$budget" -gt 300 ] && budget=300
if [ "$budget" -gt 60 ]; then
  run_bin timeout $((budget + 40)) "$bin/bench_engine" -m "$model" --out "$OUT/bench_engine.json" $text \
    --time-budget "$budget" --ablate ${TRACE_CHAIN:+--trace-chain} $bench_contexts >"$OUT/bench_engine.log" 2>&1
  note "bench_engine: rc=$? $(elapsed)"
else
  note "bench_engine: skipped, ${budget}s of budget"
fi
# The other settings against the ones in use: short decode runs (~25 s each) at 8K and 32K,
# the batch row, and the step's parts left out at 8K (--ablate): every other GEMV version,
# PDL off, and the argmax on the host.
variants=""
for g in v1 v2 chain; do
  [ "${SINKROUTER_GEMV:-v1}" = "$g" ] || variants="$variants gemv_$g:SINKROUTER_GEMV=$g"
done
[ "${SINKROUTER_PDL:-1}" != 0 ] && variants="$variants pdl_off:SINKROUTER_PDL=0"
variants="$variants host_argmax:--host-argmax"  # the logits downloaded each step (runs up to v6b)
[ "${SINKROUTER_PREFILL_ATTENTION:-flash}" = flash ] && variants="$variants prefill_wgmma:SINKROUTER_PREFILL_ATTENTION=wgmma"
variants=${VARIANTS-$variants}  # VARIANTS="name:SETTING ..." replaces the list ("" for none)
if [ -n "$variants" ]; then
  for variant in $variants; do
    if [ "$(left)" -lt 230 ]; then note "bench_engine ${variant%%:*}: skipped, $(left)s left"; continue; fi
    echo "==== ${variant#*:} ====" >>"$OUT/bench_engine.log"
    setting=${variant#*:}
    case "$setting" in --*) flag=$setting; setting=SINKROUTER_VARIANT=flag ;; *) flag="" ;; esac
    run_bin env "$setting" timeout 120 "$bin/bench_engine" -m "$model" --out "$OUT/bench_engine_${variant%%:*}.json" \
      $text --decode-contexts 8192,32768 --time-budget 60 --ablate $flag >>"$OUT/bench_engine.log" 2>&1
    note "bench_engine with ${variant#*:}: rc=$? $(elapsed)"
  done
fi

# ---- 5. transformers baseline ----
if ls .stage/engine/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .stage/engine/whl/*.whl >"$OUT/transformers.log" 2>&1 && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
tb=$(( $(left) - 90 ))
[ "$tb" -gt 150 ] && tb=150
if [ -n "${QUICK:-}" ] || [ -n "${SKIP_TRANSFORMERS:-}" ]; then
  note "transformers baseline: skipped (QUICK or SKIP_TRANSFORMERS)"
elif [ "$tb" -gt 40 ]; then
  PYTHONUNBUFFERED=1 timeout $((tb + 30)) python3 bench/gpu/transformers_baseline.py --model "$model" \
    --out "$OUT/transformers.json" --time-budget "$tb" >>"$OUT/transformers.log" 2>&1
  note "transformers baseline: rc=$? $(elapsed)"
else
  note "transformers baseline: skipped, ${tb}s left"
fi

# ---- 6. compute-sanitizer (last, capped by the time left) ----
: >"$OUT/sanitizer.log"
for spec in "memcheck:Small/CudaPrefillAttention.*:*CudaGemv.*:CudaGemvChain.*:CudaEngine.ShortRunForSanitizer" \
            "racecheck:Small/CudaPrefillAttention.*"; do
  tool=${spec%%:*}
  filter=${spec#*:}
  l=$(left)
  if [ "$l" -lt 40 ]; then note "compute-sanitizer $tool: skipped, ${l}s left"; continue; fi
  [ "$l" -gt 150 ] && l=150
  run_bin timeout "$l" compute-sanitizer --tool "$tool" --error-exitcode 9 "$bin/test_cuda" --gtest_filter="$filter" \
    >>"$OUT/sanitizer.log" 2>&1
  note "compute-sanitizer $tool: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer.log" | tail -1) $(elapsed)"
done

# ---- 6b. the JSON files say which binaries ran, where and when ----
python3 bench/gpu/stamp_json.py "$bin/COMMIT" "$OUT" $(cd "$OUT" && ls bench_engine*.json prefill_attention.json \
  transformers.json 2>/dev/null) >/dev/null || note "JSON: not stamped"

# ---- 7. table ----
python3 - "$OUT" <<'PY' 2>&1 | tee -a "$summary"
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception as e:
        print(f"no {name}: {e}")
        return {"rows": [], "skipped": []}
e, t = load("bench_engine.json"), load("transformers.json")
print(f"main run: GEMV {e.get('gemv', '?')}, PDL {e.get('pdl', '?')}")
def find(rows, **kw):
    return next((r for r in rows if all(r.get(k) == v for k, v in kw.items())), {})
print(f"{'row':26s} {'ours':>10s} {'transformers':>13s}  notes")
for n in (8192, 32768, 131072, 524288):
    p, q = find(e["rows"], kind="prefill", context=n), find(t["rows"], kind="prefill", context=n)
    if p or q:
        print(f"prefill {n:>7d} tok/s      {p.get('tokens_per_s', float('nan')):10.0f} {q.get('tokens_per_s', float('nan')):13.0f}")
for n in (8192, 32768, 131072, 524288):
    d, s = find(e["rows"], kind="decode", context=n, policy="dense"), find(e["rows"], kind="decode", context=n, policy="sinkrouter")
    q = find(t["rows"], kind="decode", context=n)
    if d or q:
        print(f"decode {n:>7d} dense tok/s  {d.get('tokens_per_s', float('nan')):9.0f} {q.get('tokens_per_s', float('nan')):13.1f}  x floor {d.get('ratio_to_floor', float('nan')):.2f}")
    if s:
        print(f"decode {n:>7d} sinkr tok/s  {s.get('tokens_per_s', float('nan')):9.0f} {'':13s}  KV read {100 * s.get('kv_read_fraction', 0):.1f}%, "
              f"speedup {s.get('speedup_over_dense', float('nan')):.2f} (floor predicts {s.get('floor_predicted_speedup', float('nan')):.2f})")
for r in e["rows"]:
    if r.get("kind") == "attention_real_kv":
        sp = f", speedup {r['speedup_over_dense']:.2f}" if "speedup_over_dense" in r else ""
        print(f"attention alone, real KV {r['context']:>7d} {r['policy'][:5]}  {r['us_per_layer']:9.2f} us/layer  KV read {100 * r['kv_read_fraction']:.1f}%{sp}")
for r in e["rows"]:
    if r.get("kind") == "chain_trace":
        print(f"chain {r['stage']:7s} {r['phase']:5s} median {r['median_cycles']:7.0f} cycles ({r['median_us_at_peak_clock']:.2f} us), max {r['max_cycles']:7.0f}")
for r in e["rows"]:
    if r.get("kind") == "decode_batch":
        print(f"batch {r['batch']} {r['policy']:10s} seq-steps/s {r['sequence_steps_per_s']:9.0f}  KV read {100 * r['kv_read_fraction']:.1f}%")
for r in e["rows"]:
    if r.get("kind") == "decode_ablation":
        print(f"decode {r['context']:>7d} dense without {r['skipped']:17s} {r['ms_per_step']:7.3f} ms/step  the part {r['part_ms']:7.3f} ms")
pa = load("prefill_attention.json")
for r in pa["rows"]:
    if r.get("kind") == "comparison":
        print(f"prefill attention {r['shape']:13s} p0 {r['p0']:>6d}: {r['kernel']} {r['speedup_over_flash2']:.2f}x flash2, max |diff| {r['max_abs_difference_to_flash2']:.3g}")
    else:
        print(f"prefill attention {r['shape']:13s} p0 {r['p0']:>6d} c {r['c']} {r['kernel']:7s} {r['ms_per_call']:8.3f} ms {r['tflops']:6.1f} TFLOP/s")
for name in ("bench_engine_prefill_flash2.json",):
    if os.path.exists(os.path.join(out, name)):
        for r in load(name)["rows"]:
            if r.get("kind") == "prefill":
                m = find(e["rows"], kind="prefill", context=r["context"])
                print(f"prefill {r['context']:>7d} tok/s with flash2 {r['tokens_per_s']:9.0f}  (main run {m.get('tokens_per_s', float('nan')):.0f})")
for name in ("bench_engine_pdl_off.json", "bench_engine_gemv_v1.json", "bench_engine_gemv_v2.json", "bench_engine_gemv_chain.json",
             "bench_engine_host_argmax.json"):
    if not os.path.exists(os.path.join(out, name)):
        continue
    v = load(name)
    for n in (8192, 32768):
        for pol in ("dense", "sinkrouter"):
            d, m = find(v["rows"], kind="decode", context=n, policy=pol), find(e["rows"], kind="decode", context=n, policy=pol)
            if d:
                print(f"decode {n:>7d} {pol[:5]} tok/s  {d['tokens_per_s']:9.0f}  GEMV {v.get('gemv', '?')}, PDL {v.get('pdl', '?')}, {v.get('greedy_step', '?')[:22]}"
                      f" (main run {m.get('tokens_per_s', float('nan')):.0f}: x{m.get('tokens_per_s', float('nan')) / d['tokens_per_s']:.2f})")
    for r in v["rows"]:
        if r.get("kind") == "decode_batch":
            m = find(e["rows"], kind="decode_batch", policy=r["policy"])
            print(f"batch {r['batch']} {r['policy']:10s} seq-steps/s {r['sequence_steps_per_s']:9.0f}  {name[13:-5]}"
                  f" (main run {m.get('sequence_steps_per_s', float('nan')):.0f})")
        if r.get("kind") == "decode_ablation" and r["skipped"] in ("none", "all_gemvs", "append", "attention", "all_but_embedding"):
            print(f"decode {r['context']:>7d} dense without {r['skipped']:17s} {r['ms_per_step']:7.3f} ms/step  the part {r['part_ms']:7.3f} ms  {name[13:-5]}")
for s in e.get("skipped", []) + t.get("skipped", []):
    print("skipped:", s)
PY
# A call brings back only a few files (8): the other logs go into tests.log.
for f in generate sanitizer decode_tests transformers prefill_attention; do
  [ -f "$OUT/$f.log" ] && { echo "==== $f.log ===="; cat "$OUT/$f.log"; } >>"$OUT/tests.log" && rm -f "$OUT/$f.log"
done
note "done $(elapsed)"
