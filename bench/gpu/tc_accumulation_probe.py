#!/usr/bin/env python3
"""How exactly do the H200's tensor cores add bf16 products into float32? A probe for the routing
pass's next step (docs/PERF.md, kernel run 34j): its box bound u = q+ . hi + q- . lo would run as
mma.sync.m16n8k16 (bf16 in, float32 accumulate) only with a rounding allowance that covers the
tensor cores' accumulation, which NVIDIA does not document.

One warp a trial runs D = A B + C (A 16x16, B 16x8, bf16; C, D float32) with inline PTX, and a
chain of 16 such steps (K = 256, the routing pass's 2 x 128 dimensions). The reference is exact
(float64 sums of bf16 products, which are exact in float64). For every output element the error
is reported in units of u = 2^-24 of sum |a_k b_k| + |c| (the scale a float32 summation's error
bound takes), with its sign against the exact value's: truncation shows as errors toward zero.

Usage, on the device (CuPy and numpy): python3 bench/gpu/tc_accumulation_probe.py OUT.json
"""
import json
import sys

import cupy as cp
import numpy as np

KERNEL = r"""
extern "C" __global__ void mma_chain(const unsigned* a, const unsigned* b, const float* c, float* d, int steps) {
  // Warp w: `steps` fragments of A (4 words a lane) and B (2 words a lane), one C (4 floats a lane).
  const int w = blockIdx.x, lane = threadIdx.x;
  float acc[4];
  for (int i = 0; i < 4; ++i) acc[i] = c[(w * 32 + lane) * 4 + i];
  for (int s = 0; s < steps; ++s) {
    const unsigned* fa = a + ((size_t(w) * steps + s) * 32 + lane) * 4;
    const unsigned* fb = b + ((size_t(w) * steps + s) * 32 + lane) * 2;
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(fa[0]), "r"(fa[1]), "r"(fa[2]), "r"(fa[3]), "r"(fb[0]), "r"(fb[1]));
  }
  for (int i = 0; i < 4; ++i) d[(w * 32 + lane) * 4 + i] = acc[i];
}
"""


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns, round to nearest even; returns (bits, exact float64 values)."""
    f = x.astype(np.float32).view(np.uint32)
    bits = ((f + 0x7FFF + ((f >> 16) & 1)) >> 16).astype(np.uint32)
    return bits.astype(np.uint16), (bits << 16).view(np.float32).astype(np.float64)


def pair(M: np.ndarray, r: int, c: int) -> np.ndarray:
    """The word of bf16 bits M[..., r, c] (low half) and M[..., r, c + 1] (high half)."""
    return M[..., r, c].astype(np.uint32) | (M[..., r, c + 1].astype(np.uint32) << 16)


def fragments(A: np.ndarray, B: np.ndarray):
    """A [W, S, 16, 16], B [W, S, 16, 8] bf16 bits -> the lanes' registers (PTX ISA's
    m16n8k16 .bf16 layouts): a lane g*4+t holds A rows g, g+8 at columns 2t, 2t+1, 2t+8,
    2t+9 and B rows 2t, 2t+1, 2t+8, 2t+9 at column g (pairs along B's rows: B^T's columns)."""
    W, S = A.shape[:2]
    BT = np.swapaxes(B, -1, -2)
    fa = np.zeros((W, S, 32, 4), np.uint32)
    fb = np.zeros((W, S, 32, 2), np.uint32)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        fa[:, :, lane] = np.stack([pair(A, g, 2 * t), pair(A, g + 8, 2 * t), pair(A, g, 2 * t + 8),
                                   pair(A, g + 8, 2 * t + 8)], -1)
        fb[:, :, lane] = np.stack([pair(BT, g, 2 * t), pair(BT, g, 2 * t + 8)], -1)
    return fa, fb


# The (row, column) of C and D that each lane g*4+t holds, [32, 4]: rows g, g+8 at columns 2t, 2t+1.
ACC_ROWS = np.array([[l // 4, l // 4, l // 4 + 8, l // 4 + 8] for l in range(32)])
ACC_COLS = np.array([[2 * (l % 4), 2 * (l % 4) + 1] * 2 for l in range(32)])


def c_layout(C: np.ndarray) -> np.ndarray:
    """C [W, 16, 8] float32 -> [W, 32, 4] lanes."""
    return C[:, ACC_ROWS, ACC_COLS].astype(np.float32)


def from_d(Dl: np.ndarray) -> np.ndarray:
    """[W, 32, 4] lanes -> D [W, 16, 8] float64."""
    D = np.zeros((Dl.shape[0], 16, 8), np.float64)
    D[:, ACC_ROWS, ACC_COLS] = Dl
    return D


def trial(kernel, kind: str, steps: int, warps: int, rng) -> dict:
    shape_a, shape_b = (warps, steps, 16, 16), (warps, steps, 16, 8)
    if kind == "normal":  # the routing pass's scale: q ~ N(0, 1) / sqrt(128), summaries ~ N(0, 2)
        a, b = rng.normal(0, 2, shape_a), rng.normal(0, 1 / np.sqrt(128), shape_b)
        c = np.zeros((warps, 16, 8))
    elif kind == "spread":  # magnitudes over 2^-20 .. 2^20, random signs
        a = rng.choice([-1, 1], shape_a) * np.exp2(rng.uniform(-20, 20, shape_a))
        b = rng.choice([-1, 1], shape_b) * np.exp2(rng.uniform(-20, 20, shape_b))
        c = rng.normal(0, 1, (warps, 16, 8)) * np.exp2(rng.uniform(-20, 20, (warps, 16, 8)))
    else:  # "cancel": large products that cancel, small ones that remain
        a = rng.normal(0, 1, shape_a)
        b = rng.normal(0, 1, shape_b)
        a[..., :, 0] = 2.0**12
        a[..., :, 1] = -(2.0**12)
        b[..., 1, :] = b[..., 0, :]
        c = rng.normal(0, 1e-3, (warps, 16, 8))
    abits, av = to_bf16_bits(a)
    bbits, bv = to_bf16_bits(b)
    c32 = c.astype(np.float32)
    fa, fb = fragments(abits, bbits)
    d = cp.zeros((warps, 32, 4), cp.float32)
    kernel((warps,), (32,), (cp.asarray(fa), cp.asarray(fb), cp.asarray(c_layout(c32)), d, np.int32(steps)))
    got = from_d(cp.asnumpy(d))
    prods = np.einsum("wsik,wskj->wsijk", av, bv)  # exact in float64
    exact = prods.sum(axis=(1, 4)) + c32.astype(np.float64)
    scale = np.abs(prods).sum(axis=(1, 4)) + np.abs(c32.astype(np.float64))
    err_u = (got - exact) / scale / 2.0**-24
    toward_zero = np.sign(got - exact) == -np.sign(exact)
    nonzero = got != exact
    return {
        "kind": kind,
        "steps": steps,
        "elements": int(err_u.size),
        "max_abs_err_u": float(np.abs(err_u).max()),
        "p99_abs_err_u": float(np.percentile(np.abs(err_u), 99)),
        "inexact_fraction": float(nonzero.mean()),
        "toward_zero_fraction_of_inexact": float(toward_zero[nonzero].mean()) if nonzero.any() else None,
    }


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "tc_accumulation.json"
    rng = np.random.default_rng(20261201)
    kernel = cp.RawKernel(KERNEL, "mma_chain", options=("-arch=sm_90a",))
    rows = [trial(kernel, kind, steps, 2048, rng) for kind in ("normal", "spread", "cancel") for steps in (1, 16)]
    dev = cp.cuda.runtime.getDeviceProperties(0)
    json.dump({"device": dev["name"].decode(), "rows": rows}, open(out, "w"), indent=1)
    print(f"{'kind':8s} {'steps':>5s} {'max |err| (u of sum|p|)':>24s} {'p99':>8s} {'inexact':>8s} {'toward 0':>9s}")
    for r in rows:
        tz = r["toward_zero_fraction_of_inexact"]
        print(f"{r['kind']:8s} {r['steps']:5d} {r['max_abs_err_u']:24.3f} {r['p99_abs_err_u']:8.3f} "
              f"{r['inexact_fraction']:8.3f} {'-' if tz is None else f'{tz:9.3f}'}")


if __name__ == "__main__":
    main()
