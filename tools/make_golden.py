#!/usr/bin/env python3
"""Makes the golden file the engine is tested against: Hugging Face transformers, on the
CPU in float32, loading the same GGUF (transformers dequantises the weights itself).

For each prompt it records the prompt's token ids (from transformers' own tokenizer),
the top-10 logits at every prompt position, and a 64-token greedy continuation with the
top-2 logit margin at each step. CI checks the committed file without torch.

Needs: pip install torch transformers gguf numpy   (run where torch is available)
Usage: python3 tools/make_golden.py models/SmolLM2-135M-Instruct.Q4_1.gguf tests/data/golden/smollm2_golden.json
"""
import hashlib
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

FORMAT = "sinkrouter-golden"
VERSION = 1
TOP_K = 10
NEW_TOKENS = 64

PROMPTS = [
    {"name": "plain", "text": "The capital of France is"},
    {"name": "chat", "chat": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]},
    {"name": "code", "text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"},
    {"name": "list", "text": "Monday, Tuesday, Wednesday, Thursday,"},
    {"name": "prose", "text": (
        "It was a bright cold day in April, and the clocks were striking thirteen. The old lighthouse keeper "
        "climbed the spiral stairs for the last time, counting each of the one hundred and twelve steps as he "
        "had done every evening for forty years. At the top he paused by the great lens, polished it with the "
        "corner of his sleeve, and looked out over the grey water toward the harbour, where the fishing boats "
        "were coming home one by one, their lamps swinging in the swell. He thought of the letter in his coat "
        "pocket, the one that said the light would be automated by the end of the summer, and of the small "
        "house in the village where his daughter had offered him a room. Below him the gulls wheeled and cried."
        " He lit the lamp.")},
    {"name": "chat_long", "chat": [{"role": "user", "content": (
        "Here is a short story. A fox found a vineyard with ripe grapes hanging high on the vine. He jumped and "
        "jumped but could not reach them. At last he walked away, saying the grapes were probably sour anyway. "
        "Question: what did the fox say about the grapes?")}]},
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    model_path, out_path = sys.argv[1], sys.argv[2]
    directory, name = os.path.split(os.path.abspath(model_path))
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, torch_dtype=torch.float32)
    model.eval()
    records = []
    for p in PROMPTS:
        if "chat" in p:
            text = tok.apply_chat_template(p["chat"], tokenize=False, add_generation_prompt=True)
        else:
            text = p["text"]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
            positions = []
            for row in logits:
                v, i = torch.topk(row, TOP_K)
                positions.append({"ids": i.tolist(), "logits": [round(float(x), 6) for x in v]})
            seq = list(ids)
            greedy, margins = [], []
            for _ in range(NEW_TOKENS):
                row = model(torch.tensor([seq])).logits[0, -1].float()
                v, i = torch.topk(row, 2)
                greedy.append(int(i[0]))
                margins.append(round(float(v[0] - v[1]), 6))
                seq.append(int(i[0]))
        records.append({"name": p["name"], "text": text, "tokens": ids, "positions": positions,
                        "greedy": greedy, "greedy_top2_margin": margins})
        print(f"{p['name']}: {len(ids)} tokens; greedy: {tok.decode(greedy)!r}")
    out = {"format": FORMAT, "version": VERSION, "model_sha256": sha256(model_path),
           "generator": f"transformers {transformers.__version__}, torch {torch.__version__}, float32, CPU",
           "top_k": TOP_K, "prompts": records}
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
