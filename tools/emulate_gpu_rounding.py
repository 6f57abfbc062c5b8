#!/usr/bin/env python3
"""Emulates, in numpy, where the GPU engine rounds (bf16 weights; on the prefill path also bf16
GEMM inputs, q and the softmax weights P) against the CPU engine's f32 path (f32 weights, bf16
KV), over every position of the golden prompts: the measurement behind the logits tolerance
of tests/cuda/engine_cuda_test.cpp. Needs numpy and gguf (pip install gguf).

Measured 2026-11-28 (max |logit difference| over all positions of the 6 golden prompts):
  emulated CPU path vs transformers (golden top-10):  0.10  (the real CPU engine: 0.12)
  GPU decode path (bf16 weights) vs CPU path:         0.40
  GPU prefill path (+ bf16 activations, q, P):        0.64
Usage: python3 tools/emulate_gpu_rounding.py [model.gguf] [golden.json]
"""
import json, os, sys
import numpy as np
import gguf
from gguf.quants import dequantize
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, 'models/SmolLM2-135M-Instruct.Q4_1.gguf')
golden = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, 'tests/data/golden/smollm2_golden.json')
r = gguf.GGUFReader(path)
T = {t.name: t for t in r.tensors}
def W(name):
    t = T[name]
    a = dequantize(t.data, t.tensor_type).astype(np.float32)
    return a.reshape([int(x) for x in reversed(t.shape)]) if a.ndim == 1 and len(t.shape) > 1 else a
def bf16(x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    u = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000
    return u.astype(np.uint32).view(np.float32)
L, E, H, KVH, D, F = 30, 576, 9, 3, 64, 1536
emb = W('token_embd.weight').reshape(-1, E)
layers = []
for l in range(L):
    p = f'blk.{l}.'
    layers.append({k: W(p + n) for k, n in [('an', 'attn_norm.weight'), ('q', 'attn_q.weight'), ('k', 'attn_k.weight'),
        ('v', 'attn_v.weight'), ('o', 'attn_output.weight'), ('fn', 'ffn_norm.weight'), ('g', 'ffn_gate.weight'),
        ('u', 'ffn_up.weight'), ('d', 'ffn_down.weight')]})
for Ld in layers:
    for k in ('q', 'k', 'v', 'o', 'g', 'u', 'd'):
        Ld[k] = Ld[k].reshape(Ld[k].shape[0] if Ld[k].ndim == 2 else -1, -1) if Ld[k].ndim == 2 else Ld[k]
onorm = W('output_norm.weight')
inv = 100000.0 ** (-2.0 * np.arange(D // 2) / D)
def rope(x, pos):  # x [n, heads, D]
    a = pos[:, None] * inv[None, :]
    c, s = np.cos(a)[:, None, :], np.sin(a)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y = np.empty_like(x)
    y[..., 0::2] = x0 * c - x1 * s
    y[..., 1::2] = x0 * s + x1 * c
    return y
def rms(x, g):
    return x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-5).astype(np.float32) * g
def forward(tokens, wround, actround, pround):
    n = len(tokens); pos = np.arange(n, dtype=np.float64)
    x = (wround(emb[tokens])).astype(np.float32)
    mask = np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)
    for Ld in layers:
        h = actround(rms(x, Ld['an']))
        q = h @ wround(Ld['q']).T; k = h @ wround(Ld['k']).T; v = h @ wround(Ld['v']).T
        q = actround(rope(q.reshape(n, H, D), pos).astype(np.float32))
        k = bf16(rope(k.reshape(n, KVH, D), pos).astype(np.float32)); v = bf16(v.reshape(n, KVH, D))
        att = np.empty((n, H, D), np.float32)
        for hh in range(H):
            s = (q[:, hh] @ k[:, hh // 3].T) / 8.0 + mask
            m = s.max(-1, keepdims=True); p = np.exp(s - m); l = p.sum(-1, keepdims=True)
            att[:, hh] = (pround(p) @ v[:, hh // 3]) / l
        att = actround(att.reshape(n, -1))
        x = x + att @ wround(Ld['o']).T
        h = actround(rms(x, Ld['fn']))
        g = h @ wround(Ld['g']).T; u = h @ wround(Ld['u']).T
        a = actround(g / (1 + np.exp(-g)) * u)
        x = x + a @ wround(Ld['d']).T
    return rms(x, onorm) @ wround(emb).T
ident = lambda a: a
G = json.load(open(golden))
worst = {'decode': 0, 'prefill': 0, 'golden_cpu': 0}
for P in G['prompts']:
    t = P['tokens']
    cpu = forward(t, ident, ident, ident)
    dec = forward(t, bf16, ident, ident)
    pre = forward(t, bf16, bf16, bf16)
    worst['decode'] = max(worst['decode'], np.abs(dec - cpu).max())
    worst['prefill'] = max(worst['prefill'], np.abs(pre - cpu).max())
    for i, pos in enumerate(P['positions']):
        worst['golden_cpu'] = max(worst['golden_cpu'], max(abs(cpu[i][j] - v) for j, v in zip(pos['ids'], pos['logits'])))
    print(P['name'], len(t), {k: round(float(v), 4) for k, v in worst.items()}, flush=True)
