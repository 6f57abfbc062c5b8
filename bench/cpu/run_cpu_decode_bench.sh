#!/usr/bin/env bash
# Decode speed on the CPU: our engine (dense and sinkrouter) against llama.cpp on the same
# GGUF, same text, same contexts, same thread count, in one run. Writes
# bench/results/cpu_decode_vs_llamacpp.json.
#
# Needs: a Release build of `sinkrouter` (BUILD, default build/), the model
# (tools/fetch_model.sh), the texts (python3 tools/fetch_data.py; else a built-in paragraph
# fills the context), and llama-cpp-python in a virtual environment (LLAMACPP_PYTHON,
# default /work/venv-llamacpp/bin/python; docs/PERF.md gives the pip command).
#
# Each context runs ours, then llama.cpp, so that both see about the same machine load;
# the load average is recorded around every run. Knobs (environment):
#   CONTEXTS=512,4096,8192  THREADS=2  STEPS=32  WARMUP=2  REPEATS=3  OUT=...  MODEL=...
#   LLAMACPP_FLASH_ATTN=off,on (llama.cpp is measured both ways; the faster one is compared)
#   OMP_WAIT_POLICY for llama.cpp's OpenMP threads (default PASSIVE: on a machine shared with
#   other work its spinning threads lose the cores; ACTIVE is llama.cpp's own default,
#   measure both on an idle machine).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
MODEL="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
BUILD="${BUILD:-build}"
CONTEXTS="${CONTEXTS:-512,4096,8192}"
THREADS="${THREADS:-2}"
STEPS="${STEPS:-32}"
WARMUP="${WARMUP:-2}"
REPEATS="${REPEATS:-3}"
OUT="${OUT:-bench/results/cpu_decode_vs_llamacpp.json}"
LLAMACPP_PYTHON="${LLAMACPP_PYTHON:-/work/venv-llamacpp/bin/python}"
LLAMACPP_FLASH_ATTN="${LLAMACPP_FLASH_ATTN:-off,on}"
LLAMACPP_OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
SR="$BUILD/apps/sinkrouter"

[[ -x "$SR" ]] || { echo "no $SR: build first (cmake --build $BUILD --target sinkrouter)" >&2; exit 1; }
[[ -f "$MODEL" ]] || { echo "no $MODEL: run tools/fetch_model.sh" >&2; exit 1; }
"$LLAMACPP_PYTHON" -c "import llama_cpp" 2>/dev/null ||
  { echo "no llama_cpp in $LLAMACPP_PYTHON: see docs/PERF.md ('CPU engine') for the pip command" >&2; exit 1; }

# OpenBLAS 0.3.21 (Debian 12) does not know newer Xeon models and falls back to its
# Prescott (SSE3) kernels, which makes our prefill ~5x slower; name the core it should use.
if [[ -z "${OPENBLAS_CORETYPE:-}" ]]; then
  if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell; fi
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
echo "load at start: $(loadavg)" >&2
echo "$(loadavg)" > "$TMP/load_start"

# Bandwidth first (a copy and a read over 1 GiB, THREADS threads), within a tiny run.
"$SR" bench-decode -m "$MODEL" -t "$THREADS" --context 64 --steps 1 --warmup 0 --repeats 1 --policy dense \
  --bandwidth-mib 1024 --json > "$TMP/bandwidth.json"

IFS=',' read -ra CTX <<< "$CONTEXTS"
for c in "${CTX[@]}"; do
  echo "context $c: sinkrouter engine (load $(loadavg))" >&2
  echo "$(loadavg)" > "$TMP/load_ours_$c"
  "$SR" bench-decode -m "$MODEL" -t "$THREADS" --context "$c" --steps "$STEPS" --warmup "$WARMUP" \
    --repeats "$REPEATS" --policy dense,sinkrouter --json > "$TMP/ours_$c.json"
  echo "context $c: llama.cpp (load $(loadavg))" >&2
  echo "$(loadavg)" > "$TMP/load_llama_$c"
  OMP_WAIT_POLICY="$LLAMACPP_OMP_WAIT_POLICY" "$LLAMACPP_PYTHON" bench/cpu/llamacpp_decode.py -m "$MODEL" \
    -t "$THREADS" --context "$c" --steps "$STEPS" --warmup "$WARMUP" --repeats "$REPEATS" \
    --flash-attn "$LLAMACPP_FLASH_ATTN" > "$TMP/llama_$c.json"
done
echo "$(loadavg)" > "$TMP/load_end"
echo "load at end: $(loadavg)" >&2

COMMIT="$(git rev-parse HEAD)$(git diff --quiet HEAD -- src apps include bench/cpu || echo '+uncommitted')"
python3 - "$TMP" "$OUT" "$CONTEXTS" "$COMMIT" "$LLAMACPP_OMP_WAIT_POLICY" <<'EOF'
import datetime, json, os, subprocess, sys
tmp, out, contexts, commit, omp_wait = sys.argv[1:6]
contexts = [int(c) for c in contexts.split(",")]
load = lambda name: [float(x) for x in open(os.path.join(tmp, name)).read().split()]
lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
field = lambda key: next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith(key + ":")), "")
flags = field("Flags").split()
bw = json.load(open(os.path.join(tmp, "bandwidth.json")))["memory_bandwidth"]
ours, llama, summary = {}, {}, []
for c in contexts:
    o = json.load(open(os.path.join(tmp, f"ours_{c}.json")))
    l = json.load(open(os.path.join(tmp, f"llama_{c}.json")))
    o["load_average_before"] = load(f"load_ours_{c}")
    l["load_average_before"] = load(f"load_llama_{c}")
    ours[str(c)], llama[str(c)] = o, l
    run = o["runs"][0]
    pol = {p["policy"]: p for p in run["policies"]}
    ll = {("on" if cfg["flash_attn"] else "off"): cfg["runs"][0] for cfg in l["configs"]}
    best_fa = max(ll, key=lambda k: ll[k]["decode_tokens_per_second"])
    best = ll[best_fa]
    row = {
        "context": c,
        "ours_dense_tok_s": pol["dense"]["decode_tokens_per_second"],
        "ours_sinkrouter_tok_s": pol["sinkrouter"]["decode_tokens_per_second"],
        "ours_sinkrouter_kv_read_fraction": pol["sinkrouter"]["kv_read_fraction"],
        "ours_dense_step_ms": pol["dense"]["step_ms_median"],
        "ours_sinkrouter_step_ms": pol["sinkrouter"]["step_ms_median"],
        "ours_prefill_tok_s": run["prefill_tokens_per_second"],
        "llamacpp_tok_s": best["decode_tokens_per_second"],
        "llamacpp_best_flash_attn": best_fa,
        "llamacpp_step_ms": best["step_ms_median"],
        "llamacpp_prefill_tok_s": max(r["prefill_tokens_per_second"] for r in ll.values()),
    }
    for fa, r in ll.items():
        row[f"llamacpp_flash_attn_{fa}_tok_s"] = r["decode_tokens_per_second"]
    row["dense_vs_llamacpp"] = row["ours_dense_tok_s"] / row["llamacpp_tok_s"]
    row["sinkrouter_vs_llamacpp"] = row["ours_sinkrouter_tok_s"] / row["llamacpp_tok_s"]
    summary.append(row)
doc = {
    "what": "decode tokens/s on the CPU: sinkrouter engine (dense, sinkrouter certified default) vs llama.cpp, "
            "same GGUF, text, contexts and threads; median step over steps x repeats",
    "machine": {"cpu": field("Model name"), "cpus": int(field("CPU(s)") or 0),
                "threads_per_core": field("Thread(s) per core"), "l3": field("L3 cache"),
                "avx512_vnni": "avx512_vnni" in flags, "amx_in_cpuid": "amx_int8" in flags,
                "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
                "memory_bandwidth": bw},
    "commit": commit,
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "load_average": {"start": load("load_start"), "end": load("load_end")},
    "llamacpp_omp_wait_policy": omp_wait,
    "summary": summary,
    "goals": {
        "dense_not_slower_than_llamacpp": {str(r["context"]): r["dense_vs_llamacpp"] >= 1 for r in summary},
        "sinkrouter_faster_than_llamacpp_at_largest_context": summary[-1]["sinkrouter_vs_llamacpp"] > 1,
    },
    "sinkrouter_engine": ours,
    "llama_cpp": llama,
}
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
print(f"{'context':>8} {'dense':>8} {'sinkrtr':>8} {'KV read':>8} {'llama.cpp':>10} {'dense/llama':>12} {'sr/llama':>9}")
for r in summary:
    print(f"{r['context']:>8} {r['ours_dense_tok_s']:>8.1f} {r['ours_sinkrouter_tok_s']:>8.1f} "
          f"{100 * r['ours_sinkrouter_kv_read_fraction']:>7.1f}% {r['llamacpp_tok_s']:>10.1f} "
          f"{r['dense_vs_llamacpp']:>12.2f} {r['sinkrouter_vs_llamacpp']:>9.2f}")
print(f"wrote {out}")
EOF
