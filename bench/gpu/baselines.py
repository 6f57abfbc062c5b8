#!/usr/bin/env python3
"""Times the baselines of the CUDA decode benchmark on the same shapes, in the same device
session: PyTorch SDPA (cuDNN and flash backends, via torch.nn.attention.sdpa_kernel) and
FlashInfer's BatchDecodeWithPagedKVCacheWrapper (flashinfer-python; skipped cleanly, with
the reason recorded, when it cannot be imported). Writes JSON.

    python3 bench/gpu/baselines.py --out baselines.json [--contexts 4096,16384] [--batches 1,8]

Method, as bench_kernels: CUDA graphs of `copies` calls over distinct copies of the KV
(>= 256 MB in total, so that small caches do not sit in the 60 MB L2), CUDA events,
median over replays divided by copies. A backend that cannot be captured in a graph is
timed eagerly (back-to-back calls between two events) and the row says so.
"""
import argparse
import json
import math
import os
import sys
import traceback

import torch

SHAPES = [("llama-3.1-8b", 32, 8, 128), ("smollm2-135m", 9, 3, 64)]
PAGE = 16
FI_PLAN_FAILED = {}  # head_dim -> message: a failed FlashInfer JIT build is not retried per row


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def time_calls(calls, reps):
    """Median milliseconds per call of the list `calls` (each a no-argument function)."""
    stream = torch.cuda.Stream()
    mode = "graph"
    try:
        with torch.cuda.stream(stream):
            for c in calls:  # warm-up outside the capture (workspace, autotuning)
                c()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            for c in calls:
                c()
        run = graph.replay
    except Exception as e:  # noqa: BLE001 - any capture failure falls back to eager timing
        mode = f"eager ({type(e).__name__})"
        torch.cuda.synchronize()

        def run():
            for c in calls:
                c()
    for _ in range(2):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return median(times) / len(calls), mode


def sdpa_rows(shape, batch, ctx, copies, reps):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    name, qh, kvh, d = shape
    gen = torch.Generator(device="cuda").manual_seed(ctx * 7 + batch)
    qs = [torch.randn(batch, qh, 1, d, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(copies)]
    ks = [torch.randn(batch, kvh, ctx, d, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(copies)]
    vs = [torch.randn(batch, kvh, ctx, d, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(copies)]
    rows = []
    for label, backend in (("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION), ("sdpa_flash", SDPBackend.FLASH_ATTENTION)):
        row = {"shape": name, "batch": batch, "context": ctx, "kernel": label, "copies": copies}
        try:
            def make(i, backend=backend):
                def call():
                    with sdpa_kernel(backend):
                        torch.nn.functional.scaled_dot_product_attention(qs[i], ks[i], vs[i], enable_gqa=True)
                return call
            ms, mode = time_calls([make(i) for i in range(copies)], reps)
            row.update(time_us=ms * 1e3, timing=mode)
        except Exception as e:  # noqa: BLE001 - record why a backend did not run
            row.update(error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
        rows.append(row)
    del qs, ks, vs
    torch.cuda.empty_cache()
    return rows


def flashinfer_rows(flashinfer, shape, batch, ctx, copies, reps):
    name, qh, kvh, d = shape
    row = {"shape": name, "batch": batch, "context": ctx, "kernel": "flashinfer", "copies": copies}
    try:
        if d in FI_PLAN_FAILED:
            raise RuntimeError(FI_PLAN_FAILED[d])
        pages_per_seq = math.ceil(ctx / PAGE)
        gen = torch.Generator(device="cuda").manual_seed(ctx * 11 + batch)
        caches = [torch.randn(batch * pages_per_seq, 2, PAGE, kvh, d, device="cuda", dtype=torch.bfloat16,
                              generator=gen) for _ in range(copies)]
        qs = [torch.randn(batch, qh, d, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(copies)]
        indptr = torch.arange(batch + 1, device="cuda", dtype=torch.int32) * pages_per_seq
        indices = torch.arange(batch * pages_per_seq, device="cuda", dtype=torch.int32)
        last = torch.full((batch,), ctx - (pages_per_seq - 1) * PAGE, device="cuda", dtype=torch.int32)
        workspace = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
        wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
        try:  # the first plan() of a head_dim JIT-compiles the decode kernel with nvcc
            wrapper.plan(indptr, indices, last, qh, kvh, d, PAGE, pos_encoding_mode="NONE",
                         q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
        except Exception as e:  # noqa: BLE001
            first = str(e).splitlines()[0][:200] if str(e) else ""
            FI_PLAN_FAILED[d] = f"FlashInfer JIT/plan failed (head_dim={d}): {type(e).__name__}: {first}"
            print(FI_PLAN_FAILED[d], flush=True)
            raise

        def make(i):
            return lambda: wrapper.run(qs[i], caches[i])
        ms, mode = time_calls([make(i) for i in range(copies)], reps)
        row.update(time_us=ms * 1e3, timing=mode, version=getattr(flashinfer, "__version__", "?"))
        del caches, qs, workspace
        torch.cuda.empty_cache()
    except Exception as e:  # noqa: BLE001
        row.update(error=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
        traceback.print_exc()
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="baselines.json")
    ap.add_argument("--contexts", default="4096,16384,65536,131072,262144,524288")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    contexts = [int(x) for x in args.contexts.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    doc = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": []}
    # FlashInfer reads these at import: JIT cache under a writable /tmp, parallel ninja.
    # (Do not set FLASHINFER_JIT_VERBOSE=1: in this version it builds with -O0 -G.)
    os.environ.setdefault("FLASHINFER_WORKSPACE_BASE", "/tmp")
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 16))
    os.environ.setdefault("TVM_FFI_CACHE_DIR", "/tmp/tvm-ffi")
    try:
        import flashinfer  # noqa: F401
        doc["flashinfer"] = getattr(flashinfer, "__version__", "?")
    except Exception as e:  # noqa: BLE001 - FlashInfer is optional
        flashinfer = None
        doc["flashinfer"] = f"not available: {type(e).__name__}: {e}"
        print("FlashInfer skipped:", doc["flashinfer"], flush=True)
    for shape in SHAPES:
        for batch in batches:
            for ctx in contexts:
                kv_bytes = batch * ctx * shape[2] * shape[3] * 4
                copies = max(1, math.ceil((256 << 20) / kv_bytes))
                rows = sdpa_rows(shape, batch, ctx, copies, args.reps)
                if flashinfer is not None:
                    rows.append(flashinfer_rows(flashinfer, shape, batch, ctx, copies, args.reps))
                for r in rows:
                    r["bytes_read"] = kv_bytes
                    t = r.get("time_us")
                    print(f"{r['shape']:13s} B={batch} ctx={ctx:7d} {r['kernel']:11s} "
                          + (f"{t:9.2f} us ({r['timing']})" if t is not None else r.get("error", "")), flush=True)
                doc["rows"].extend(rows)
                with open(args.out, "w") as f:  # after every configuration: a cut-short run keeps its rows
                    json.dump(doc, f, indent=1)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
