#!/usr/bin/env python3
"""Writes tests/data/tokenizer/smollm2_vectors.json: reference tokenizations that the C++
tokenizer (src/model/tokenizer.cpp) is tested against. It installs nothing; it needs

    pip install transformers tokenizers gguf sentencepiece jinja2

(no torch). Run from anywhere:

    python3 tools/make_tokenizer_vectors.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]

How the reference is built (see docs/TOKENIZER.md):
  * The GGUF metadata is read with the `gguf` package (transformers' own GGUF reader
    imports torch even for metadata, so AutoTokenizer.from_pretrained(dir, gguf_file=...)
    fails without torch). The tokenizer is then built by transformers' own GGUF converter
    (`convert_gguf_tokenizer`), i.e. the same code AutoTokenizer runs, and wrapped in the
    same TokenizersBackend class.
  * transformers' converter has no entry for tokenizer.ggml.pre = "smollm" and falls back
    to plain GPT-2 splitting. The published SmolLM2 tokenizer.json (and llama.cpp's
    "smollm" pre-tokeniser) split every digit first: Sequence[Digits(individual_digits),
    ByteLevel(use_regex)]. The two differ, e.g. on "a  1" (['a','Ġ','Ġ','1'] against
    ['a','ĠĠ','1']), so for "smollm" we set that pre-tokeniser on the converted tokenizer.
    Everything else (vocabulary, merges, special tokens, decoder) is transformers'.
  * Chat prompts come from transformers' `render_jinja_template` (the renderer behind
    apply_chat_template) on the template stored in the GGUF, and on Llama 3 / 3.1 style
    templates written below (abridged: the tool-calling branches are left out).
  * Pre-tokeniser splits come from the `tokenizers` pre-tokenisers directly, and a small
    byte-level BPE trained here with `tokenizers` exercises the "llama-bpe" path
    (Llama 3 split regex, ignore_merges) without a Llama 3 model file.
"""

import argparse
import hashlib
import json
import os
import random
import re
import sys

import tokenizers
import transformers
from gguf import GGUFReader
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.integrations.gguf.gguf_tokenizer_mapping import (
    _LLAMA3_SPLIT,
    _SPECIAL_TOKENS,
    GGUF_TOKENIZER_MAPPING,
    convert_gguf_tokenizer,
)
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# Public-domain prose (Dickens, Austen, Melville, Carroll): about 2 KB.
PROSE = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it "
    "was the season of Light, it was the season of Darkness, it was the spring of hope, it was "
    "the winter of despair, we had everything before us, we had nothing before us, we were all "
    "going direct to Heaven, we were all going direct the other way.\n\n"
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may "
    "be on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered the rightful property of some one or other of "
    "their daughters.\n\n"
    "Call me Ishmael. Some years ago--never mind how long precisely--having little or no money "
    "in my purse, and nothing particular to interest me on shore, I thought I would sail about "
    "a little and see the watery part of the world. It is a way I have of driving off the "
    "spleen and regulating the circulation. Whenever I find myself growing grim about the "
    "mouth; whenever it is a damp, drizzly November in my soul; whenever I find myself "
    "involuntarily pausing before coffin warehouses, and bringing up the rear of every funeral "
    "I meet; and especially whenever my hypos get such an upper hand of me, that it requires a "
    "strong moral principle to prevent me from deliberately stepping into the street, and "
    "methodically knocking people's hats off--then, I account it high time to get to sea as "
    "soon as I can.\n\n"
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    "nothing to do: once or twice she had peeped into the book her sister was reading, but it "
    "had no pictures or conversations in it, \"and what is the use of a book,\" thought Alice "
    "\"without pictures or conversations?\" So she was considering in her own mind (as well as "
    "she could, for the hot day made her feel very sleepy and stupid), whether the pleasure of "
    "making a daisy-chain would be worth the trouble of getting up and picking the daisies, "
    "when suddenly a White Rabbit with pink eyes ran close by her.\n"
)

CODE = (
    "def fib(n):\n"
    "    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
    "    a, b = 0, 1\n"
    "    for _ in range(n):\n"
    "        a, b = b, a + b  # tuple swap\n"
    "    return a\n"
    "\n"
    "int main(void) {\n"
    "\tfor (int i = 0; i < 10; ++i) {\n"
    "\t\tprintf(\"%d\\n\", i * i);\n"
    "\t}\n"
    "\treturn 0;\n"
    "}\n"
)

TEXTS = [
    "",
    " ",
    "  ",
    "\n",
    "\n\n\n",
    "\t",
    " \t \n \r\n ",
    "Hello world! 123",
    "The capital of France is",
    "Hello, world. How are you today?",
    "12345678",
    "3.14159",
    "In 2024, 1,000,000 people paid $12.50 (or 3.5%).",
    "x   2024",
    "a  1",
    "version 10.4.2-rc1, build #4567",
    CODE,
    "    indented line\n        deeper\n\ttab\n\t\ttwo tabs\n",
    "trailing spaces   \nand newlines\n\n\n\nend",
    "many     spaces      between  words",
    "I'm sure they'll say it's fine, don't you think? We've seen it, I'd say.",
    "DON'T SHOUT, THEY'LL HEAR. I'M HERE. WE'VE GONE. 'Quoted' words",
    "Hello , world . I 'm n't",
    "Café naïve résumé façade Ångström coöperate",
    "你好，世界！这是一个测试。北京是中国的首都。",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "Привет, мир! Как дела? Съешь же ещё этих мягких французских булок.",
    "日本語のテキストとカタカナ ー 한국어 텍스트입니다",
    "Emoji: 😀 👍🏽 🇺🇸 ❤️ 🎉🎉🎉",
    "Family: 👨‍👩‍👧‍👦 and 🏳️‍🌈 and 🧑🏿‍💻!",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "text<|endoftext|>more text<|im_end|><|im_start|>",
    "almost special: <|im_start| and <|im_end and <im_start|>",
    "<repo_name>sinkrouter<file_sep>src/main.cpp<filename>",
    "Zero\u200bwidth\u00a0nbsp\u2009thin\u3000ideographic\u2028line\u0085nel",
    "control a\x00b\x01c\x04d\x06e\x1bf",
    "he\x04llo wor\x06ld !\x04! ..\x06.. ?\x1d?",
    "math: ∀x ∈ ℝ, x² ≥ 0; ∑ᵢ aᵢ = ∞ ½ ⅓ ²³",
    "Ünïcödé ǅ ﬁ ﬃ Ⅻ ① ⑽",
    "URL https://example.com/path?q=1&r=two#frag and email a.b@c.org",
    "!!! ??? ... --- ((())) [[]] {{}} <<>> ***",
    " " * 300 + "x" + "\n" * 70 + "!" * 101 + "a" * 257 + "7" * 40,
    PROSE,
]

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Llama 3.1 Instruct's template without its tool-calling branches.
LLAMA31_TEMPLATE = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}"""

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello. What do you need?"},
        {"role": "user", "content": "  Name three primes.\n"},
    ],
    [
        {"role": "user", "content": "Translate: 你好"},
        {"role": "assistant", "content": "Hello 👋"},
        {"role": "user", "content": "Thanks\n\nand now in French?"},
    ],
]


def random_texts(count, seed=20240602):
    """Random strings over the whole BMP and planes 1-3, weighted towards ASCII and the
    whitespace and apostrophe characters the split patterns care about. Code points whose
    bytes SmolLM2's vocabulary lacks (and which the reference silently drops) are left out
    so that the same strings also serve round-trip checks."""
    rng = random.Random(seed)
    special = [0x20, 0x0A, 0x09, 0x0D, 0x0B, 0x0C, 0x85, 0xA0, 0x1680, 0x2000, 0x2028, 0x3000, 0x180E,
               0x200B, 0x27, 0x30, 0x39]
    dropped = {0x04, 0x06, 0x13, 0x14, 0x16, 0x1D}

    def char():
        r = rng.random()
        if r < 0.3:
            c = rng.randrange(0x20, 0x7F)
        elif r < 0.4:
            c = rng.choice(special)
        elif r < 0.8:
            c = rng.randrange(0x80, 0x10000)
        else:
            c = rng.randrange(0x10000, 0x40000)
        return "A" if 0xD800 <= c <= 0xDFFF or c in dropped else chr(c)

    return ["".join(char() for _ in range(rng.randrange(1, 40))) for _ in range(count)]


def read_gguf_tokenizer(path):
    """(architecture, tokenizer_dict, tokenizer_config) as transformers' get_gguf_tokenizer
    builds them, but read with the `gguf` package (no torch)."""
    reader = GGUFReader(path)
    meta = {k: f.contents() for k, f in reader.fields.items()
            if k.startswith("tokenizer.") or k == "general.architecture"}
    grouped = {group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items()
                       if f"tokenizer.{key}" in meta}
               for group, renames in GGUF_TOKENIZER_MAPPING.items()}
    tokenizer_dict, config = grouped["tokenizer"], grouped["tokenizer_config"]
    for name, key in _SPECIAL_TOKENS.items():
        token_id = meta.get(f"tokenizer.ggml.{key}")
        config[name] = tokenizer_dict["tokens"][token_id] if token_id is not None else None
    return meta["general.architecture"], tokenizer_dict, config


def smollm_pre_tokenizer():
    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])


def reference_tokenizer(path):
    arch, tokenizer_dict, config = read_gguf_tokenizer(path)
    backend, _ = convert_gguf_tokenizer(arch, tokenizer_dict)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **config)
    if tokenizer_dict.get("pre_tokenizer_type") == "smollm":
        tok.backend_tokenizer.pre_tokenizer = smollm_pre_tokenizer()
    return tok, tokenizer_dict, config


def unbyte(piece):
    """A byte-level piece ('Ġworld') back to its text (' world')."""
    inverse = {c: b for b, c in bytes_to_unicode().items()}
    return bytes(inverse[c] for c in piece).decode("utf-8")


def pretokenize_cases():
    byte_level = lambda regex: pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    splitters = {
        "smollm": smollm_pre_tokenizer(),
        "llama-bpe": byte_level(_LLAMA3_SPLIT),
        "gpt2": pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    }
    extra = ["a  1", "x\n\n  y", "  lead", "trail  ", "a\r\nb", "I'M DON'T they'LL", "ab123456cd",
             "  \n\n  x", "٣٤٥ and ⅷ and ²", "\u00a0\u00a0x", "a\u3000\u3000b", "a\u180e\u180eb", "x\x85\x85y", "a\u180e b"]
    out = {}
    for name, splitter in splitters.items():
        out[name] = [{"text": t, "pieces": [unbyte(p) for p, _ in splitter.pre_tokenize_str(t)]}
                     for t in TEXTS + extra if t]
    return out


def mini_llama3_case():
    """A 700-token byte-level BPE trained on the prose with the Llama 3 split regex, plus
    vocabulary entries that no merge reaches (only ignore_merges can produce them)."""
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>"]
    split = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = split
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    trainer_tok.train_from_iterator([PROSE, CODE] + TEXTS, trainer=trainer)
    model = json.loads(trainer_tok.to_str())["model"]
    vocab = dict(model["vocab"])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    for word in ["Ġhippopotamus", "Ġzebra", "QQQ", "ĠSinkRouter"]:
        if word not in vocab:
            vocab[word] = len(vocab)
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    assert all(t is not None for t in tokens)

    ref = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges],
                               ignore_merges=True))
    ref.pre_tokenizer = split
    ref.decoder = decoders.ByteLevel()
    ref.add_special_tokens([tokenizers.AddedToken(s, normalized=False, special=True) for s in specials])
    texts = TEXTS + ["a hippopotamus and a zebra met QQQ at SinkRouter", "QQQQQQ hippopotamuses"]
    cases = [{"text": t, "ids": ref.encode(t, add_special_tokens=False).ids} for t in texts]
    return {
        "tokens": tokens,
        "types": [3 if t in specials else 1 for t in tokens],
        "merges": merges,
        "pre": "llama-bpe",
        "bos": vocab["<|begin_of_text|>"],
        "eos": vocab["<|eot_id|>"],
        "cases": cases,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    parser.add_argument("--out", default=os.path.join(ROOT, "tests/data/tokenizer/smollm2_vectors.json"))
    args = parser.parse_args()

    tok, tokenizer_dict, config = reference_tokenizer(args.model)
    with open(args.model, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()

    encode = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        encode.append({
            "text": text,
            "ids": ids,
            "ids_split_special": tok.encode(text, add_special_tokens=False, split_special_tokens=True),
            "decoded": tok.decode(ids, skip_special_tokens=False),
        })

    encode_random = [{"text": t, "ids": tok.encode(t, add_special_tokens=False)} for t in random_texts(400)]

    # ids -> text, including sequences that cut UTF-8 characters (decode replaces the
    # incomplete bytes with U+FFFD) and random ids from the whole vocabulary.
    rng = random.Random(20240601)
    n = len(tokenizer_dict["tokens"])
    emoji_ids = tok.encode("👨‍👩‍👧‍👦", add_special_tokens=False)
    id_lists = [emoji_ids[:k] for k in range(1, len(emoji_ids) + 1)] + [emoji_ids[1:3]]
    id_lists += [[0, 1, 2], [1, 4093, 198, 2]]
    id_lists += [[rng.randrange(n) for _ in range(rng.randrange(1, 40))] for _ in range(40)]
    decode = [{"ids": ids, "text": tok.decode(ids, skip_special_tokens=False)} for ids in id_lists]

    chat = []
    templates = [("gguf", config["chat_template"]), ("llama3", LLAMA3_TEMPLATE),
                 ("llama31", LLAMA31_TEMPLATE)]
    for name, template in templates:
        for conversation in CONVERSATIONS:
            for gen in (True, False):
                rendered, _ = render_jinja_template(
                    conversations=[conversation], chat_template=template, add_generation_prompt=gen,
                    bos_token="<|begin_of_text|>" if name != "gguf" else config["bos_token"],
                    eos_token="<|eot_id|>" if name != "gguf" else config["eos_token"])
                chat.append({"template": name, "messages": conversation,
                             "add_generation_prompt": gen, "rendered": rendered[0]})

    out = {
        "format": "sinkrouter tokenizer vectors v1",
        "generator": {
            "script": "tools/make_tokenizer_vectors.py",
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "python": sys.version.split()[0],
            "method": "transformers convert_gguf_tokenizer on metadata read by the gguf package; "
                      "pre-tokeniser 'smollm' set to Sequence[Digits(individual), ByteLevel]",
        },
        "model": {"file": "models/" + os.path.basename(args.model), "sha256": sha,
                  "pre": tokenizer_dict.get("pre_tokenizer_type"),
                  "vocab_size": n, "bos": tokenizer_dict.get("bos_token_id"),
                  "eos": tokenizer_dict.get("eos_token_id")},
        "templates": {"llama3": LLAMA3_TEMPLATE, "llama31": LLAMA31_TEMPLATE},
        "encode": encode,
        "encode_random": encode_random,
        "decode": decode,
        "chat": chat,
        "pretokenize": pretokenize_cases(),
        "mini_llama3": mini_llama3_case(),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    text = json.dumps(out, ensure_ascii=False, indent=1)
    # Lists of ids on one line each: the file stays small and its diffs readable.
    text = re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]", lambda m: "[" + re.sub(r"\s+", "", m.group(1)) + "]", text)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(f"wrote {args.out}: {len(encode)} encode, {len(decode)} decode, {len(chat)} chat cases")


if __name__ == "__main__":
    main()
