#!/usr/bin/env bash
# Decode's plan settings swept on the device: bench_kernels once a setting (environment
# variables of the decoder, src/attention/decode_cuda.cu and decode_cuda_cluster_plan.cu),
# dense rows unless SWEEP_KERNELS names others (routed rows: one a skip rate, kernel@skip%),
# then one table of every (shape, batch, context) under every setting, with each row's plan
# (CTAs, cluster size x clusters a head, dynamic splits).
#
# Usage, on the device, from the repository root (binaries as run_on_device.sh stages them):
#   SWEEP="default: dyn:SINKROUTER_DECODE_DYNAMIC=on g2:SINKROUTER_DECODE_CLUSTER_GROUPS=2" \
#   [SWEEP_CONTEXTS=4096,...] [SWEEP_KERNELS=dense,dense_splitk,dense_cluster,dense_fixed] \
#   [SWEEP_ROUNDS=1] [SWEEP_ARGS="--shapes smollm2-135m --batches 1"] bash bench/gpu/sweep_plans.sh
# A setting `name@dir:VARS` runs the binaries staged in dir (relative to the root; default
# STAGE) instead: an A/B of two builds, round by round in one call.
# Writes $OUT/sweep_<name>_r<round>.json and $OUT/sweep.txt (the table).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/sweep_out}
mkdir -p "$out"
stage=${STAGE:-$root/.stage/cuda}
ctx=${SWEEP_CONTEXTS:-4096,8192,16384,65536,131072,262144,524288}
kernels=${SWEEP_KERNELS:-dense,dense_splitk,dense_cluster,dense_fixed}
rounds=${SWEEP_ROUNDS:-1}
ld=${LD_LIBRARY_PATH:-}
for r in $(seq 1 "$rounds"); do
  for setting in ${SWEEP:-default:}; do
    name=${setting%%:*}
    vars=$(echo "${setting#*:}" | tr ',' ' ')
    dir=$stage
    if [[ $name == *@* ]]; then
      dir=$root/${name#*@}
      name=${name%%@*}
    fi
    start=$(date +%s)
    # shellcheck disable=SC2086  # vars: NAME=value words for env
    env LD_LIBRARY_PATH="$dir/lib${ld:+:$ld}" $vars timeout "${SWEEP_TIMEOUT:-120}" "$dir/bin/bench_kernels" \
      --out "$out/sweep_${name}_r$r.json" \
      --contexts "$ctx" --kernels "$kernels" ${SWEEP_ARGS:-} >"$out/sweep_${name}_r$r.log" 2>&1
    echo "sweep $name round $r: rc=$? in $(($(date +%s) - start)) s"
  done
done
python3 - "$out" >"$out/sweep.txt" <<'EOF'
import glob, json, os, re, statistics, sys
out = sys.argv[1]
times, plans, names = {}, {}, []
for f in sorted(glob.glob(os.path.join(out, "sweep_*_r*.json"))):
    name = re.match(r"sweep_(.*)_r\d+\.json", os.path.basename(f)).group(1)
    if name not in names:
        names.append(name)
    for r in json.load(open(f))["rows"]:
        skip = r.get("skip_target_pct", 0)  # routed rows: one a planted skip rate
        key = (r["shape"], r["batch"], r["context"], r["kernel"] + (f"@{skip}%" if skip else ""))
        times.setdefault(key, {}).setdefault(name, []).append(r["time_us"])
        plans[(key, name)] = (f'{r["ctas"]}:{r["cluster_ctas"]}x{r["cluster_groups"]}'
                              f'{"d" if r["dynamic_splits"] else ""}{"w" if r.get("wide_ctas") else ""}')
print("median us over rounds [CTAs:cluster CTAs x clusters a head, d = dynamic splits, w = wide CTAs]")
print(f'{"shape":13} {"B":>2} {"ctx":>7} {"kernel":14}' + "".join(f" {n:>22}" for n in names))
for key in sorted(times, key=lambda k: (k[0], k[1], k[2], k[3])):
    cells = []
    for n in names:
        v = times[key].get(n)
        cells.append(f"{statistics.median(v):9.2f} [{plans[(key, n)]:>10}]" if v else " " * 22)
    print(f"{key[0]:13} {key[1]:>2} {key[2]:>7} {key[3]:14}" + "".join(f" {c:>22}" for c in cells))
EOF
cat "$out/sweep.txt"
