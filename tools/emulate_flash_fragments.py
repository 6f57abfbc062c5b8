#!/usr/bin/env python3
"""A lane-level transcription of the flash prefill kernel (src/model/cuda_prefill_attention.cu)
executed in numpy with the PTX semantics of ldmatrix (.trans) and mma.m16n8k16.row.col: every
lane's fragment indices, the causal mask, the online softmax with its quad shuffles, P reused
as the A operand, the final normalisation. It checks the kernel's index arithmetic where no GPU
is at hand (the CUDA tests check the kernel itself). Expected: no unwritten element, max error
~2e-3 (P enters the tensor cores as bf16); swapping .trans or the mask's row/column roles gives
errors ~2. Usage: python3 tools/emulate_flash_fragments.py [head_dim p0 c]
"""
import sys
import numpy as np
rng = np.random.default_rng(1)
def bf(x):
    x = np.asarray(x, np.float32); u = x.view(np.uint32).astype(np.uint64)
    return ((u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000).astype(np.uint32).view(np.float32)
def ldmatrix(smem, addrs, trans):  # addrs[lane] = (row, col); returns regs[lane][i] = (lo, hi)
    out = [[None]*4 for _ in range(32)]
    for i in range(4):
        rows = [addrs[8*i + r] for r in range(8)]
        M = np.array([[smem[rw][c0 + c] for c in range(8)] for (rw, c0) in rows])
        for lane in range(32):
            g, t = lane // 4, lane % 4
            out[lane][i] = (M[2*t][g], M[2*t+1][g]) if trans else (M[g][2*t], M[g][2*t+1])
    return out
def mma(acc, a, b0, b1):  # acc[lane] = [4], a[lane] = 4 pairs, b0/b1[lane] = pair
    A = np.zeros((16, 16)); B = np.zeros((16, 8))
    for lane in range(32):
        g, t = lane // 4, lane % 4
        A[g][2*t:2*t+2] = a[lane][0]; A[g+8][2*t:2*t+2] = a[lane][1]
        A[g][2*t+8:2*t+10] = a[lane][2]; A[g+8][2*t+8:2*t+10] = a[lane][3]
        B[2*t:2*t+2, g] = b0[lane]; B[2*t+8:2*t+10, g] = b1[lane]
    Dm = A @ B
    for lane in range(32):
        g, t = lane // 4, lane % 4
        acc[lane][0] += Dm[g][2*t]; acc[lane][1] += Dm[g][2*t+1]
        acc[lane][2] += Dm[g+8][2*t]; acc[lane][3] += Dm[g+8][2*t+1]
D, p0, c = (int(x) for x in sys.argv[1:4]) if len(sys.argv) > 3 else (64, 70, 90); n = p0 + c; scale = D ** -0.5
q = bf(rng.normal(size=(c, D)) * 2); K = bf(rng.normal(size=(n, D))); V = bf(rng.normal(size=(n, D)))
out = np.full((c, D), np.nan)
L2E = 1.4426950408889634
for qtile in range((c + 63) // 64):
    q0 = qtile * 64
    Qs = np.zeros((64, D)); rows = min(64, c - q0); Qs[:rows] = q[q0:q0+rows]
    last_row = min(q0 + 64, c) - 1; num_tiles = (p0 + last_row) // 64 + 1
    for warp in range(4):
        qf = [ldmatrix(Qs, [(warp*16 + (l & 7) + ((l >> 3) & 1)*8, ks*16 + (l >> 4)*8) for l in range(32)], False) for ks in range(D//16)]
        o = [[np.zeros(4) for _ in range(32)] for _ in range(D//8)]
        m = [[-np.inf, -np.inf] for _ in range(32)]; lsum = [[0.0, 0.0] for _ in range(32)]
        for kt in range(num_tiles):
            key0 = kt * 64
            Ks = np.zeros((64, D)); Vs = np.zeros((64, D)); nv = max(0, min(64, n - key0)); Ks[:nv] = K[key0:key0+nv]; Vs[:nv] = V[key0:key0+nv]
            s = [[np.zeros(4) for _ in range(32)] for _ in range(8)]
            for nt in range(8):
                for kk in range(D // 32):
                    b = ldmatrix(Ks, [(nt*8 + (l & 7), kk*32 + (l >> 3)*8) for l in range(32)], False)
                    mma(s[nt], [qf[2*kk][l] for l in range(32)], [b[l][0] for l in range(32)], [b[l][1] for l in range(32)])
                    mma(s[nt], [qf[2*kk+1][l] for l in range(32)], [b[l][2] for l in range(32)], [b[l][3] for l in range(32)])
            diagonal = key0 + 63 > p0 + q0
            for lane in range(32):
                g, t4 = lane // 4, lane % 4
                row_pos = p0 + q0 + warp*16 + g
                for nt in range(8):
                    for e in range(4):
                        key = key0 + nt*8 + 2*t4 + (e & 1); pos = row_pos + (e >> 1)*8
                        s[nt][lane][e] = -np.inf if (diagonal and key > pos) else s[nt][lane][e] * scale * L2E
            for r in range(2):
                mx = [max(max(s[nt][lane][2*r], s[nt][lane][2*r+1]) for nt in range(8)) for lane in range(32)]
                mx = [max(mx[l], mx[l ^ 1]) for l in range(32)]; mx = [max(mx[l], mx[l ^ 2]) for l in range(32)]
                for lane in range(32):
                    m_new = max(m[lane][r], mx[lane]); m_use = 0.0 if m_new == -np.inf else m_new
                    alpha = 2.0 ** (m[lane][r] - m_use); tot = 0
                    for nt in range(8):
                        for e in (2*r, 2*r+1):
                            s[nt][lane][e] = 2.0 ** (s[nt][lane][e] - m_use); tot += s[nt][lane][e]
                    lsum[lane][r] = lsum[lane][r] * alpha + tot; m[lane][r] = m_new
                    for dt in range(D//8):
                        o[dt][lane][2*r] *= alpha; o[dt][lane][2*r+1] *= alpha
            for kk in range(4):
                pa = [((bf(s[2*kk][l][0]), bf(s[2*kk][l][1])), (bf(s[2*kk][l][2]), bf(s[2*kk][l][3])),
                       (bf(s[2*kk+1][l][0]), bf(s[2*kk+1][l][1])), (bf(s[2*kk+1][l][2]), bf(s[2*kk+1][l][3]))) for l in range(32)]
                for dp in range(D//16):
                    b = ldmatrix(Vs, [(kk*16 + (l & 7) + ((l >> 3) & 1)*8, dp*16 + (l >> 4)*8) for l in range(32)], True)
                    mma(o[2*dp], pa, [b[l][0] for l in range(32)], [b[l][1] for l in range(32)])
                    mma(o[2*dp+1], pa, [b[l][2] for l in range(32)], [b[l][3] for l in range(32)])
        for r in range(2):
            tots = [lsum[l][r] for l in range(32)]; tots = [tots[l] + tots[l ^ 1] for l in range(32)]; tots = [tots[l] + tots[l ^ 2] for l in range(32)]
            for lane in range(32):
                g, t4 = lane // 4, lane % 4; qi = q0 + warp*16 + g + 8*r
                if qi < c:
                    for dt in range(D//8):
                        out[qi][dt*8 + 2*t4] = o[dt][lane][2*r] / tots[lane]; out[qi][dt*8 + 2*t4 + 1] = o[dt][lane][2*r+1] / tots[lane]
ref = np.zeros((c, D))
for i in range(c):
    s = (K[:p0+i+1] @ q[i]) * scale; p = np.exp(s - s.max()); ref[i] = p @ V[:p0+i+1] / p.sum()
print("unwritten:", np.isnan(out).sum(), " max abs err:", np.nanmax(np.abs(out - ref)), " max |ref|:", np.abs(ref).max())
