#!/usr/bin/env python3
"""Test fixtures for the GGUF reader, made with gguf-py, ggml's own Python package, so the
C++ reader and dequantisers are checked against an independent implementation.

  pip install gguf numpy        (tested with gguf 0.19.0, numpy 2.4)
  python3 tools/make_quant_vectors.py            # writes the files below (deterministic)

Writes
  tests/data/quants/<type>.bin   per supported type: raw rows + gguf.quants.dequantize output
  tests/data/gguf/tiny.gguf      a small GGUF written by gguf.GGUFWriter (every metadata type,
                                 nested arrays, alignment 64, tensors of several types)
  tests/data/gguf/tiny.json      what tiny.gguf holds, including each tensor's dequantised values
  tests/data/gguf/tiny.gguf.sha256   `sha256sum` output for tiny.gguf (sha256_file() test)
  tests/data/gguf/smollm2_rows.json  a few dequantised row slices of the real model, when
                                 models/SmolLM2-135M-Instruct.Q4_1.gguf is present

<type>.bin layout (little-endian): "SRQV", u32 format 1, u32 ggml type id, u32 rows,
u32 values per row, u32 bytes per row, rows * row bytes of raw blocks, rows * values f32.

Rows: where gguf.quants can quantise the type (f32, f16, bf16, q4_0..q8_0) most rows are
quantised random data; every type also gets rows of random *raw* blocks (random bits,
with the f16 scale fields overwritten by random finite halves, subnormals included), which
is the only source for the k-quants, whose quantisers gguf-py does not implement.
"""
import hashlib
import json
import os
import struct
import subprocess
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
QUANT_DIR = os.path.join(ROOT, "tests", "data", "quants")
GGUF_DIR = os.path.join(ROOT, "tests", "data", "gguf")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
SEED = 20240611

# type -> (values per row, quantised rows, raw rows, byte offsets of f16 scale fields per block)
CASES = {
    T.F32: (37, 5, 0, []),
    T.F16: (45, 4, 2, None),  # raw rows: random finite halves
    T.BF16: (45, 4, 2, None),  # raw rows: random finite bf16
    T.Q4_0: (7 * 32, 5, 2, [0]),
    T.Q4_1: (7 * 32, 5, 2, [0, 2]),
    T.Q5_0: (7 * 32, 5, 2, [0]),
    T.Q5_1: (7 * 32, 5, 2, [0, 2]),
    T.Q8_0: (7 * 32, 5, 2, [0]),
    T.Q2_K: (2 * 256, 0, 4, [80, 82]),
    T.Q3_K: (2 * 256, 0, 4, [108]),
    T.Q4_K: (2 * 256, 0, 4, [0, 2]),
    T.Q5_K: (2 * 256, 0, 4, [0, 2]),
    T.Q6_K: (2 * 256, 0, 4, [208]),
}


def random_rows(rng, rows, n):
    """Random data with a different scale and offset per row (never zeros)."""
    scale = 10.0 ** rng.uniform(-3, 2, size=(rows, 1))
    offset = rng.uniform(-1, 1, size=(rows, 1)) * scale
    return (rng.standard_normal((rows, n)) * scale + offset).astype(np.float32)


def random_finite_halves(rng, count):
    """Random finite f16 values over the whole range, subnormals and both signs included."""
    mag = 10.0 ** rng.uniform(-7, 2, size=count)
    sign = np.where(rng.random(count) < 0.5, -1.0, 1.0)
    h = (sign * mag).astype(np.float16)
    assert np.all(np.isfinite(h))
    return h


def raw_rows(rng, qtype, rows, n, scale_offsets):
    block_values, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    if qtype == T.F16:
        bits = rng.integers(0, 1 << 16, size=(rows, n), dtype=np.uint16)
        bits[(bits & 0x7C00) == 0x7C00] &= 0xBFFF  # clear an exponent bit: no inf / NaN
        return bits.view(np.uint8).reshape(rows, -1)
    if qtype == T.BF16:
        bits = rng.integers(0, 1 << 16, size=(rows, n), dtype=np.uint16)
        bits[(bits & 0x7F80) == 0x7F80] &= 0xBFFF
        return bits.view(np.uint8).reshape(rows, -1)
    blocks = rng.integers(0, 256, size=(rows * n // block_values, block_bytes), dtype=np.uint8)
    for off in scale_offsets:
        blocks[:, off:off + 2] = random_finite_halves(rng, blocks.shape[0]).view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, -1)


def write_quant_vectors(rng):
    os.makedirs(QUANT_DIR, exist_ok=True)
    total = 0
    for qtype, (n, n_quant, n_raw, scale_offsets) in CASES.items():
        parts = []
        if n_quant:
            parts.append(np.asarray(quantize(random_rows(rng, n_quant, n), qtype)).view(np.uint8).reshape(n_quant, -1))
        if n_raw:
            parts.append(raw_rows(rng, qtype, n_raw, n, scale_offsets))
        raw = np.ascontiguousarray(np.concatenate(parts, axis=0))
        rows, row_bytes = raw.shape
        expected = np.asarray(dequantize(raw, qtype), dtype=np.float32).reshape(rows, n)
        assert np.all(np.isfinite(expected)), qtype.name
        path = os.path.join(QUANT_DIR, qtype.name.lower() + ".bin")
        with open(path, "wb") as f:
            f.write(b"SRQV" + struct.pack("<5I", 1, int(qtype), rows, n, row_bytes))
            f.write(raw.tobytes())
            f.write(expected.astype("<f4").tobytes())
        total += os.path.getsize(path)
        print(f"{path}: {rows} rows x {n} values")
    print(f"quant vectors: {total} bytes")


def dump_json(obj, path):
    """Top-level fields and list items one per line, each item compact."""
    lines = []
    for k, v in obj.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            items = ",\n  ".join(json.dumps(x, separators=(",", ":")) for x in v)
            lines.append(f" {json.dumps(k)}: [\n  {items}\n ]")
        else:
            lines.append(f" {json.dumps(k)}: {json.dumps(v)}")
    with open(path, "w") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def f32_list(a):
    # repr of the float32 value as a double: parses back to the same float32 exactly
    return [float(x) for x in np.asarray(a, dtype=np.float32).ravel()]


def write_tiny_gguf(rng):
    """A small file from gguf-py's writer, and a JSON of what it holds."""
    os.makedirs(GGUF_DIR, exist_ok=True)
    path = os.path.join(GGUF_DIR, "tiny.gguf")
    w = gguf.GGUFWriter(path, "llama")  # adds general.architecture = "llama"
    w.add_custom_alignment(64)
    V = gguf.GGUFValueType
    meta = [  # key, type, value (the JSON keeps the type name and value)
        ("test.u8", V.UINT8, 200), ("test.i8", V.INT8, -100), ("test.u16", V.UINT16, 60000),
        ("test.i16", V.INT16, -30000), ("test.u32", V.UINT32, 4000000000), ("test.i32", V.INT32, -2000000000),
        ("test.f32", V.FLOAT32, 0.1), ("test.bool", V.BOOL, True), ("test.string", V.STRING, "h\u00e9llo \"gguf\"\n"),
        ("test.u64", V.UINT64, 18000000000000000000), ("test.i64", V.INT64, -9000000000000000000),
        ("test.f64", V.FLOAT64, -2.5e-300),
    ]
    for key, vt, val in meta:
        w.add_key_value(key, val, vt)
    strings = ["<s>", "</s>", "\u0120the", "a b"]
    w.add_array("test.strings", strings)
    ints = [int(x) for x in rng.integers(-(1 << 31), 1 << 31, size=11)]
    w.add_key_value("test.i32s", ints, V.ARRAY, V.INT32)
    floats = [float(np.float32(x)) for x in rng.standard_normal(5)]
    w.add_key_value("test.f32s", floats, V.ARRAY, V.FLOAT32)
    nested = [[1, 2, 3], [4], [5, 6]]
    w.add_key_value("test.nested", nested, V.ARRAY, V.ARRAY)  # inner arrays: i32 (python int)

    tensors = []
    # (name, type, ne) -- gguf-py takes numpy shapes, i.e. ne reversed
    specs = [("norm.weight", T.F32, [37]), ("emb.weight", T.Q8_0, [64, 3]), ("proj.weight", T.Q4_1, [96, 2, 2]),
             ("half.weight", T.F16, [5, 3]), ("bf.weight", T.BF16, [7, 2]), ("k.weight", T.Q4_K, [256, 2]),
             ("six.weight", T.Q6_K, [256, 1])]
    for name, qtype, ne in specs:
        shape = tuple(reversed(ne))
        rows, n = int(np.prod(ne[1:])), ne[0]
        if qtype in (T.F32, T.F16):
            data = random_rows(rng, rows, n).astype(np.float32 if qtype == T.F32 else np.float16).reshape(shape)
            w.add_tensor(name, data)
            raw = data.view(np.uint8).reshape(rows, -1)
        else:
            if qtype in (T.Q4_K, T.Q6_K):
                raw = raw_rows(rng, qtype, rows, n, CASES[qtype][3])
            else:
                raw = np.asarray(quantize(random_rows(rng, rows, n), qtype)).view(np.uint8).reshape(rows, -1)
            w.add_tensor(name, raw.reshape(*shape[:-1], -1), raw_dtype=qtype)  # byte shape: gguf-py derives ne
        values = np.asarray(dequantize(np.ascontiguousarray(raw), qtype), dtype=np.float32)
        tensors.append({"name": name, "type": qtype.name.lower(), "type_id": int(qtype), "ne": ne,
                        "nbytes": int(raw.nbytes), "values": f32_list(values)})
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    def type_name(vt):
        return {V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16", V.UINT32: "u32", V.INT32: "i32",
                V.FLOAT32: "f32", V.BOOL: "bool", V.STRING: "string", V.ARRAY: "array", V.UINT64: "u64",
                V.INT64: "i64", V.FLOAT64: "f64"}[vt]
    metadata = [{"key": "general.architecture", "type": "string", "value": "llama"},
                {"key": "general.alignment", "type": "u32", "value": 64}]
    metadata += [{"key": k, "type": type_name(vt), "value": float(np.float32(v)) if vt == V.FLOAT32 else v}
                 for k, vt, v in meta]
    metadata += [{"key": "test.strings", "type": "array", "element": "string", "value": strings},
                 {"key": "test.i32s", "type": "array", "element": "i32", "value": ints},
                 {"key": "test.f32s", "type": "array", "element": "f32", "value": floats},
                 {"key": "test.nested", "type": "array", "element": "array", "value": nested}]
    # Check our description against gguf-py's own reader before trusting it.
    r = gguf.GGUFReader(path)
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    assert keys == [m["key"] for m in metadata], keys
    assert [t.name for t in r.tensors] == [t["name"] for t in tensors]
    dump_json({"generator": f"tools/make_quant_vectors.py, gguf {gguf_version()}", "version": 3, "alignment": 64,
               "file_size": os.path.getsize(path), "metadata": metadata, "tensors": tensors},
              os.path.join(GGUF_DIR, "tiny.json"))
    sums = subprocess.run(["sha256sum", "tiny.gguf"], cwd=GGUF_DIR, check=True, capture_output=True, text=True)
    with open(os.path.join(GGUF_DIR, "tiny.gguf.sha256"), "w") as f:
        f.write(sums.stdout)
    assert sums.stdout.split()[0] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    print(f"{path}: {os.path.getsize(path)} bytes")


def write_model_rows():
    """Dequantised row slices of the real model, as gguf-py reads them."""
    if not os.path.exists(MODEL):
        print(f"{MODEL} absent: smollm2_rows.json not regenerated (tools/fetch_model.sh fetches it)")
        return
    r = gguf.GGUFReader(MODEL)
    by_name = {t.name: t for t in r.tensors}
    picks = [("token_embd.weight", 1), ("token_embd.weight", 19556), ("blk.0.attn_q.weight", 7),
             ("blk.0.attn_k.weight", 191), ("blk.29.ffn_down.weight", 300), ("blk.13.ffn_gate.weight", 1000),
             ("output_norm.weight", 0), ("blk.0.attn_norm.weight", 0)]
    slice_len = 32  # the first and the last block of 32 of each row (plus the whole row's sum)
    rows = []
    for name, row in picks:
        t = by_name[name]
        qtype = T(t.tensor_type)
        data = np.asarray(t.data)
        flat = data.reshape(-1, data.shape[-1])[row:row + 1] if data.ndim > 1 else data.reshape(1, -1)
        values = np.asarray(dequantize(np.ascontiguousarray(flat), qtype), dtype=np.float32).ravel()
        ne0 = int(t.shape[0])
        assert values.size == ne0
        rows.append({"tensor": name, "type": qtype.name.lower(), "row": row, "ne0": ne0,
                     "head": f32_list(values[:slice_len]), "tail": f32_list(values[-slice_len:]),
                     "sum": float(np.sum(values, dtype=np.float64))})
    dump_json({"generator": f"tools/make_quant_vectors.py, gguf {gguf_version()}",
               "model": os.path.basename(MODEL), "rows": rows}, os.path.join(GGUF_DIR, "smollm2_rows.json"))
    print(f"smollm2_rows.json: {len(rows)} rows")


def gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:  # noqa: BLE001 -- provenance only
        return "unknown"


def main():
    rng = np.random.default_rng(SEED)
    write_quant_vectors(rng)
    write_tiny_gguf(rng)
    write_model_rows()
    return 0


if __name__ == "__main__":
    sys.exit(main())
