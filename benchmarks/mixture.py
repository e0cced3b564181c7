"""Do mixtures and tokenizers cost what they need? Mixture builds, full-corpus tokenization and tokenizer
training at two corpus sizes, in one run.

    python benchmarks/mixture.py                          # 100 MB and 500 MB corpora, 5M-token mixtures
    python benchmarks/mixture.py --sizes 100,5000 --only tokenizer,mixture --sample-bytes 10M --no-read-all
                                                          # 100 MB vs 5 GB (issue 28: cold build within 1.2x)
    python benchmarks/mixture.py --sizes 20,100 --repeats 1 --workdir /tmp/bench-mix   # quicker

Corpora: unique documents of random sentences drawn from ../shared/data C4 + CCNet (seeded; each document
5-40 sentences, ~1-5 KB), ingested into a store per size as 64 MB shards (kept in --workdir for reruns).
Every measurement runs in a fresh child process (peak RSS is its own, VmHWM of the main process plus the
largest sum over its worker tree), sizes interleaved within each repeat so machine noise hits both:

(t) `train_tokenizer` (byte-level BPE, --vocab) on a seeded --sample-bytes sample of each corpus;
(m) `build_mixture` of --tokens from one part (`big=1.0`), cold token cache; and the same again with a
    warm cache (another mixture name): what a second mixture over the same documents costs;
(f) tokenizing the whole corpus into the token cache (what a unigram count or an all-corpus mixture
    does), against (b), the raw tokenizer (`encode_batch_flat`) on 32 MB of the same texts in memory,
    measured in the same child: the floor.

All sizes use the same tokenizer (the one trained at the smallest size). Prints medians and the ratios
large/small, which are what the targets are about; absolute times depend on the machine's load (printed).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from corpora.store import Store  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cc"
SHARD_MB = 64  # as corpora.ingest writes them

CHILD = r"""
import json, os, shutil, sys, threading, time

def status(pid, key):  # kB from /proc
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

def children(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
        except OSError:
            pass
    return out + [g for c in out for g in children(c)]

peak = {"tree_kb": 0}
stop = threading.Event()
def sample():
    while not stop.is_set():
        kids = children(os.getpid())
        peak["tree_kb"] = max(peak["tree_kb"], status(os.getpid(), "VmRSS") + sum(status(k, "VmRSS") for k in kids))
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()

from corpora.store import Store
args = json.loads(sys.argv[1])
store = Store(args["store"])
out = {}
if args["what"] == "tokenizer":
    from train.tokenizer import train_tokenizer
    t = time.perf_counter()
    row = train_tokenizer(store, args["name"], ["big"], args["vocab"], sample_bytes=args["sample_bytes"])
    out = {"elapsed_s": time.perf_counter() - t, "sample_mb": row["sample_bytes"] / 1e6}
elif args["what"] == "mixture":
    import logging
    from train.data import MixtureConfig, build_mixture
    rounds, groups = [], []
    class Rounds(logging.Handler):
        def emit(self, record):
            if "round(s)" in record.getMessage():
                rounds.append(record.args[2])
            if "row groups" in record.getMessage():  # a budget-proportional draw: row groups read, of all
                groups.append(f"{record.args[3]}/{record.args[4]}")
    logging.getLogger("train.data").addHandler(Rounds())
    logging.getLogger("train.data").setLevel(logging.INFO)
    shutil.rmtree(store.root / "artifacts" / "tokens", ignore_errors=True)
    shutil.rmtree(store.root / "artifacts" / "mixtures", ignore_errors=True)
    times = []
    for name in ("cold", "warm"):
        t = time.perf_counter()
        build_mixture(store, MixtureConfig(name, {"big": 1.0}, args["tokens"], seed=0, tokenizer="bpe"),
                      progress=False)
        times.append(time.perf_counter() - t)
    import numpy as np
    n_docs = sum(len(np.load(p)) for p in (store.root / "artifacts" / "tokens").glob("*/*/*.docs.npy"))
    import pyarrow.parquet as pq
    t = time.perf_counter()  # what reading every document's text costs: what a build must not grow with
    for shard in store.shards("big") if args["read_all"] else []:
        pf = pq.ParquetFile(shard.path)
        for g in range(pf.num_row_groups):
            pf.read_row_group(g, columns=["text"])
    out = {"elapsed_s": times[0], "warm_s": times[1], "docs_tokenized": n_docs, "rounds": rounds[0],
           "row_groups_read": groups[0] if groups else "all (a draw over every document)",
           "read_text_s": time.perf_counter() - t if args["read_all"] else float("nan")}
elif args["what"] == "full":
    from corpora.tokenizers import load_tokenizer
    from corpora.tokens import TokenCache
    tok = load_tokenizer("bpe", store)
    texts, n = [], 0
    for batch in store.iter_batches("big", ["text"], batch_size=1024):
        texts += batch.column(0).to_pylist()
        n = sum(map(len, texts))
        if n > 32e6:
            break
    raw_mb = sum(len(t.encode()) for t in texts) / 1e6
    t = time.perf_counter()
    tok.encode_batch_flat(texts)
    raw_s = time.perf_counter() - t
    del texts
    shutil.rmtree(store.root / "artifacts" / "tokens", ignore_errors=True)
    cache = TokenCache(store, tok)
    t = time.perf_counter()
    cache.ensure([(s, None) for s in store.shards("big")], progress=False)
    out = {"elapsed_s": time.perf_counter() - t, "raw_mb_per_s": raw_mb / raw_s}
stop.set()
out.update(rss_main_mb=status(os.getpid(), "VmHWM") / 1024, rss_tree_mb=peak["tree_kb"] / 1024)
print(json.dumps(out))
"""


def sentences() -> list[str]:
    """Sentences of the real C4 and CCNet samples (split at ., ! or ? followed by a space)."""
    texts = [json.loads(line)["text"] for line in (DATA / "c4_sample.jsonl").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    for path in sorted(DATA.glob("ccnet_head-*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [json.loads(line).get("text") or "" for line in f if line.strip()]
    out = [s.strip() for t in texts for s in re.split(r"(?<=[.!?])\s+", t)]
    return [s for s in out if len(s) > 20]


def build_corpus(store: Store, target_mb: float, seed: int = 0) -> None:
    """Unique documents of 5-40 random sentences, written as ~SHARD_MB shards (bounded memory). Vectorized
    (pyarrow joins the sentences), so a 5 GB corpus builds in minutes; doc_ids are BLAKE2b of the text."""
    import hashlib

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from corpora.documents import DOC_SCHEMA

    pool = pa.array(sentences(), pa.large_string())
    mean_doc_bytes = (pc.mean(pc.binary_length(pool)).as_py() + 1) * 22.5  # 5-40 sentences: 22.5 on average
    rng = np.random.default_rng(seed)
    store.create_corpus("big", "natural", "train")
    total, start = 0, 0
    while total < target_mb * 1e6:
        n = max(1, int(min(SHARD_MB * 1e6, target_mb * 1e6 - total) / mean_doc_bytes))
        k = rng.integers(5, 41, n)
        offsets = pa.array(np.concatenate([[0], np.cumsum(k)]), pa.int64())
        texts = pc.binary_join(pa.LargeListArray.from_arrays(offsets, pool.take(rng.integers(0, len(pool), k.sum()))),
                               pa.scalar(" ", pa.large_string()))
        n_bytes = pc.binary_length(texts).cast(pa.int64())
        doc_ids = [hashlib.blake2b(t, digest_size=8).hexdigest() for t in texts.cast(pa.large_binary()).to_pylist()]
        nulls = pa.nulls(n, pa.string())
        store.append_shard("big", pa.table([pa.array(doc_ids), texts, n_bytes,
                                            pa.array([f"bench:{seed}:{i}" for i in range(start, start + n)]),
                                            nulls, nulls, nulls, nulls], schema=DOC_SCHEMA))
        total += pc.sum(n_bytes).as_py()
        start += n


def child(what: str, store: Path, **kwargs) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"what": what, "store": str(store), **kwargs})],
                         check=False, capture_output=True, text=True, cwd=REPO, env=env)
    if out.returncode:
        raise SystemExit(f"{what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from train.data import parse_count

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,500", help="corpus sizes in MB (default: %(default)s)")
    ap.add_argument("--tokens", default="5M", help="mixture budget (default: %(default)s)")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--sample-bytes", default="100M", help="tokenizer training sample (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the mixture builds (default: %(default)s)")
    ap.add_argument("--train-repeats", type=int, default=1, help="repeats of tokenizer training and of the "
                    "full-corpus tokenization (default: %(default)s)")
    ap.add_argument("--workdir", default="/tmp/bench-mixture", help="stores are built (once) and kept here")
    ap.add_argument("--build-only", action="store_true", help="build the corpora, measure nothing")
    ap.add_argument("--only", default="tokenizer,mixture,full",
                    help="which measurements (default: %(default)s; without tokenizer, the stores must hold "
                         "the tokenizer bpe_r0 of an earlier run)")
    ap.add_argument("--no-read-all", action="store_true",
                    help="skip timing a read of all the corpus's text after each mixture (minutes at 5 GB)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not (DATA / "c4_sample.jsonl").exists():
        raise SystemExit(f"{DATA} is absent: the benchmark builds its corpora from the real C4/CCNet samples")
    sizes = [float(s) for s in args.sizes.split(",")]
    tokens, sample_bytes = parse_count(args.tokens), parse_count(args.sample_bytes)
    stores = {}
    for mb in sizes:
        root = Path(args.workdir) / f"store_{mb:g}mb"
        done = root / ".built"
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)
            t = time.perf_counter()
            build_corpus(Store(root, create=True), mb)
            done.touch()
            print(f"built {mb:g} MB corpus in {time.perf_counter() - t:.0f} s", flush=True)
        stores[mb] = root
    if args.build_only:
        return
    info = {mb: Store(root).corpus("big") for mb, root in stores.items()}
    print(f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)

    res = {mb: {"tokenizer": [], "mixture": [], "full": []} for mb in sizes}
    only = set(args.only.split(","))
    for r in range(args.train_repeats if "tokenizer" in only else 0):
        for mb in sizes:
            res[mb]["tokenizer"].append(child("tokenizer", stores[mb], name=f"bpe_r{r}", vocab=args.vocab,
                                              sample_bytes=sample_bytes))
            print(f"  tokenizer {mb:g} MB: {res[mb]['tokenizer'][-1]}  load {os.getloadavg()[0]:.1f}", flush=True)
    # one tokenizer for every size: the one trained at the smallest
    src = stores[sizes[0]] / "artifacts" / "tokenizers" / "bpe_r0"
    for root in stores.values():
        dest = root / "artifacts" / "tokenizers" / "bpe"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "tokenizer.json", dest / "tokenizer.json")
    for r in range(args.repeats if "mixture" in only else 0):
        for mb in sizes:
            res[mb]["mixture"].append(child("mixture", stores[mb], tokens=tokens, read_all=not args.no_read_all))
            print(f"  mixture {mb:g} MB: {res[mb]['mixture'][-1]}  load {os.getloadavg()[0]:.1f}", flush=True)
    for r in range(args.train_repeats if "full" in only else 0):
        for mb in sizes:
            res[mb]["full"].append(child("full", stores[mb]))
            print(f"  full {mb:g} MB: {res[mb]['full'][-1]}  load {os.getloadavg()[0]:.1f}", flush=True)

    def med(mb, what, key="elapsed_s"):
        return statistics.median(x[key] for x in res[mb][what])

    def peak(mb, what):
        return max(x["rss_tree_mb"] for x in res[mb][what])

    small, large = sizes[0], sizes[-1]
    summary = {"sizes_mb": {f"{mb:g}": info[mb].n_bytes / 1e6 for mb in sizes},
               "n_docs": {f"{mb:g}": info[mb].n_docs for mb in sizes}, "tokens": tokens, "repeats": args.repeats,
               "load_average_end": os.getloadavg()[0], "cores": os.cpu_count()}
    print(f"\ncorpora: " + ", ".join(f"{info[mb].n_bytes / 1e6:.0f} MB ({info[mb].n_docs:,} docs, "
                                      f"{info[mb].n_shards} shards)" for mb in sizes)
          + f"; medians of {args.repeats} (mixtures) / {args.train_repeats} (training, full tokenization)")
    print(f"{'':34}" + "".join(f"{f'{mb:g} MB':>14}" for mb in sizes) + f"{'ratio':>10}")
    rows = [
        (f"mixture build, {args.tokens} tokens, cold (s)", "mixture", "elapsed_s", 1.2),
        ("mixture build, warm cache (s)", "mixture", "warm_s", None),
        ("documents tokenized by the build", "mixture", "docs_tokenized", None),
        ("rounds over the corpus (median)", "mixture", "rounds", None),
        ("reading all text of the corpus (s)", "mixture", "read_text_s", None),
        (f"tokenizer training, {args.sample_bytes} sample (s)", "tokenizer", "elapsed_s", 1.5),
        ("full-corpus tokenization (s)", "full", "elapsed_s", None),
    ]
    for label, what, key, target in rows:
        if not res[sizes[0]][what]:
            continue
        vals = [med(mb, what, key) for mb in sizes]
        if all(v != v for v in vals):  # NaN: not measured (--no-read-all)
            continue
        ratio = vals[-1] / vals[0] if vals[0] else float("nan")
        summary[f"{what}_{key}"] = dict(zip([f"{mb:g}" for mb in sizes], vals))
        print(f"{label:34}" + "".join(f"{v:>14.2f}" for v in vals) + f"{ratio:>9.2f}x"
              + (f"  (target <= {target}x)" if target else ""))
    for mb in sizes if res[sizes[0]]["full"] else []:
        mbps = info[mb].n_bytes / 1e6 / med(mb, "full")
        raw = med(mb, "full", "raw_mb_per_s")
        summary[f"full_mb_per_s_{mb:g}"], summary[f"raw_mb_per_s_{mb:g}"] = mbps, raw
        print(f"full-corpus tokenization at {mb:g} MB: {mbps:.1f} MB/s (raw tokenizer on 32 MB in memory, "
              f"same process: {raw:.1f} MB/s; ratio {mbps / raw:.2f})")
    for mb in sizes if res[sizes[0]]["mixture"] else []:
        read = [x["row_groups_read"] for x in res[mb]["mixture"]]
        summary[f"row_groups_read_{mb:g}"] = read
        print(f"row groups read by the cold build at {mb:g} MB (of all): {', '.join(map(str, read))}")
    for what in [w for w in ("mixture", "tokenizer", "full") if res[sizes[0]][w]]:
        vals = [peak(mb, what) for mb in sizes]
        summary[f"peak_rss_{what}_mb"] = dict(zip([f"{mb:g}" for mb in sizes], vals))
        print(f"peak RSS (process tree), {what:9}: " + ", ".join(f"{v:.0f} MB at {mb:g} MB" for v, mb in
                                                                   zip(vals, sizes)) + "  (target < 1024, flat)")
    print(f"load average at end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.json:
        print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
