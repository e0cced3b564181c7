"""How fast does `build_mixture` materialise a token stream, cold (tokenizing) and warm (token cache)?

Baseline in the same run: tokenizing the same texts with the tokenizer alone (`encode_batch_flat`), the
floor a cold build cannot beat. Prints medians of repeats and ratios.

    python benchmarks/mixture.py [--tokens 2M] [--repeats 3] [--tokenizer cl100k_base]

Text: ../shared/data/cc/c4_sample.jsonl when present (real C4), plus gensim's Lee news corpus, copied
until the corpus holds about --corpus-mb megabytes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from corpora.demo import LEE_FILE, demo_data_dir  # noqa: E402
from corpora.store import Store, make_documents  # noqa: E402
from corpora.tokenizers import load_tokenizer  # noqa: E402
from train.data import MixtureConfig, build_mixture, parse_count  # noqa: E402


def real_texts(corpus_mb: float) -> list[str]:
    texts = [t.strip() for t in (demo_data_dir() / LEE_FILE).read_text(encoding="utf-8").splitlines() if t.strip()]
    c4 = REPO.parent / "shared" / "data" / "cc" / "c4_sample.jsonl"
    if c4.exists():
        texts += [json.loads(line)["text"] for line in c4.read_text(encoding="utf-8").splitlines() if line.strip()]
    out, n_bytes, i = [], 0, 0
    while n_bytes < corpus_mb * 1e6:  # copies are fine: we time tokenizing and packing, not learning
        t = texts[i % len(texts)] + ("" if i < len(texts) else f" [{i // len(texts)}]")
        out.append(t)
        n_bytes += len(t.encode())
        i += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default="2M")
    ap.add_argument("--corpus-mb", type=float, default=8.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokenizer", default="cl100k_base")
    args = ap.parse_args()
    texts = real_texts(args.corpus_mb)
    n_bytes = sum(len(t.encode()) for t in texts)
    tok = load_tokenizer(args.tokenizer)
    budget = parse_count(args.tokens)

    base, cold, warm = [], [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        tok.encode_batch_flat(texts)
        base.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as d:
            store = Store(Path(d) / "store", create=True)
            store.create_corpus("cc", "natural", "train")
            store.create_corpus("hq", "synthetic", "train", "hq")
            half = len(texts) // 2
            for name, part in (("cc", texts[:half]), ("hq", texts[half:])):
                for i in range(0, len(part), 2000):
                    store.append_shard(name, make_documents({"text": t} for t in part[i:i + 2000]))
            cfg = MixtureConfig(f"m{r}", {"cc": 0.67, "hq": 0.33}, budget, seed=r, tokenizer=args.tokenizer,
                                seq_len=1024, max_epochs=100)
            t0 = time.perf_counter()
            build_mixture(store, cfg, progress=False)
            cold.append(time.perf_counter() - t0)
            cfg2 = MixtureConfig(f"w{r}", {"cc": 0.5, "hq": 0.5}, budget, seed=r, tokenizer=args.tokenizer,
                                 seq_len=1024, max_epochs=100)
            t0 = time.perf_counter()
            build_mixture(store, cfg2, progress=False)
            warm.append(time.perf_counter() - t0)
    b, c, w = (statistics.median(x) for x in (base, cold, warm))
    print(f"corpus {n_bytes / 1e6:.1f} MB ({len(texts)} docs), budget {budget} tokens, tokenizer {tok.name}, "
          f"{args.repeats} repeats (medians)")
    print(f"tokenize only (baseline): {b:.2f} s  {n_bytes / b / 1e6:.1f} MB/s")
    print(f"build_mixture cold:       {c:.2f} s  {n_bytes / c / 1e6:.1f} MB/s  ratio to baseline {c / b:.2f}x")
    print(f"build_mixture warm cache: {w:.2f} s  {budget / w / 1e6:.1f} M tokens/s  speed-up vs cold {c / w:.1f}x")


if __name__ == "__main__":
    main()
