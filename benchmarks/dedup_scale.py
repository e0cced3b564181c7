"""stats.dedup at scale: wall time, docs/s, peak RSS of the process tree and precision/recall, at two sizes.

Corpus: realistic, mostly unique documents, each 8-16 sentences drawn at random from the ~10k distinct
sentences of ../shared/data's C4 + CCNet samples; 2% of the documents are near-copies of an earlier
document with words substituted, deleted or inserted at a controlled edit rate (EDIT_RATES). Documents
are a pure function of their index (splitmix64 of the index picks the sentences), so the corpus is
streamed into the store shard by shard and any document can be rebuilt without keeping texts in memory.

For each size, `analyze_corpus` runs cold (no cached signatures) in its own subprocess with the signature
map on `--workers` processes; a sampler thread records the peak RSS of that process and all its children
(every 50 ms). Precision and recall at J >= 0.8 are measured against exact shingle-set Jaccard, computed
for every candidate pair the LSH produced plus every planted pair (and pairs of copies of one original);
all other pairs of the random documents share at most a sentence or two (J far below 0.8).

    python benchmarks/dedup_scale.py --sizes 200000 1000000      # JSON to benchmarks/out/dedup_scale.json
    python benchmarks/dedup_scale.py --sizes 20000 100000 --json
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from corpora.store import Store, make_documents  # noqa: E402
from stats import dedup  # noqa: E402
from stats.dedup import DedupConfig  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
EDIT_RATES = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]  # as benchmarks/dedup.py
COPY_SHARE = 0.02
SHARD_DOCS = 10_000
_M64 = (1 << 64) - 1


def load_sentences() -> list[str]:
    """Distinct sentences (>= 4 words) of the C4 and CCNet samples, in a fixed order."""
    texts = [json.loads(line)["text"] for line in (SHARED / "cc" / "c4_sample.jsonl").open()]
    for p in sorted((SHARED / "cc").glob("ccnet_head-*.jsonl.gz")):
        texts += [json.loads(line)["text"] for line in gzip.open(p, "rt")]
    out = {}
    for t in texts:
        for s in re.split(r"(?<=[.!?])\s+|\n+", t):
            s = " ".join(s.split())
            if len(s.split()) >= 4:
                out.setdefault(s, None)
    return list(out)


def splitmix(x: np.ndarray) -> np.ndarray:
    x = (x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class Corpus:
    """Document k of a corpus of n: its text and, for planted copies, its original and edit rate."""

    def __init__(self, n: int, sentences: list[str], seed: int = 0):
        self.n, self.sentences, self.seed = n, sentences, seed
        k = np.arange(n, dtype=np.uint64)
        h = splitmix(k ^ np.uint64(seed * 1_000_003 + 17))
        is_copy = (h % np.uint64(10_000)) < np.uint64(int(COPY_SHARE * 10_000))
        is_copy[:100] = False
        window = np.minimum(np.maximum(np.arange(n), 1), 5000).astype(np.uint64)
        back = 1 + (splitmix(h) % window).astype(np.int64)  # original: up to 5000 documents back
        orig = np.maximum(np.arange(n) - back, 0)
        root = np.where(is_copy, orig, np.arange(n))
        for _ in range(20):  # a copy of a copy is a copy of the root original
            root = np.where(is_copy[root], root[root], root)
        root[is_copy & is_copy[root]] = -1  # (none in practice: chains end within 20 steps)
        self.is_copy, self.root = is_copy & (root >= 0), root
        self.rate = np.array(EDIT_RATES)[(h >> np.uint64(20)) % np.uint64(len(EDIT_RATES))]

    def _base_texts(self, ks: np.ndarray) -> list[str]:
        ks = np.asarray(ks, dtype=np.uint64)
        n_sent = 8 + (splitmix(ks * np.uint64(7919) + np.uint64(self.seed)) % np.uint64(9)).astype(np.int64)
        out = []
        for k, m in zip(ks, n_sent):
            ids = splitmix(np.uint64(k) * np.uint64(64) + np.arange(m, dtype=np.uint64)) % np.uint64(len(self.sentences))
            out.append(" ".join(self.sentences[i] for i in ids.tolist()))
        return out

    def texts(self, ks: np.ndarray) -> list[str]:
        ks = np.asarray(ks, dtype=np.int64)
        base = self._base_texts(np.where(self.is_copy[ks], self.root[ks], ks))
        vocab = self.sentences[:200]
        for pos in np.flatnonzero(self.is_copy[ks]):
            base[pos] = edit(base[pos], float(self.rate[ks[pos]]), random.Random(int(ks[pos])), vocab)
        return base

    def planted_pairs(self) -> set[tuple[int, int]]:
        """Every pair inside a family (an original and its copies)."""
        fam: dict[int, list[int]] = {}
        for c in np.flatnonzero(self.is_copy).tolist():
            fam.setdefault(int(self.root[c]), [int(self.root[c])]).append(c)
        return {(a, b) for m in fam.values() for x, a in enumerate(sorted(m)) for b in sorted(m)[x + 1:]}


def edit(text: str, rate: float, rng: random.Random, vocab: list[str]) -> str:
    """Substitute, delete or insert (a word after) each word with probability `rate`."""
    words = text.split()
    out = []
    for w in words:
        if rng.random() < rate:
            op = rng.randrange(3)
            if op == 0:
                out.append(rng.choice(rng.choice(vocab).split()))
            elif op == 2:
                out += [w, rng.choice(rng.choice(vocab).split())]
        else:
            out.append(w)
    return " ".join(out)


def write_corpus(root: Path, corpus: Corpus) -> Store:
    store = Store(root, create=True)
    store.create_corpus("bench", "natural", "train")
    for start in range(0, corpus.n, SHARD_DOCS):
        ks = np.arange(start, min(start + SHARD_DOCS, corpus.n))
        store.append_shard("bench", make_documents(
            [{"text": t, "source": f"bench:{k}"} for k, t in zip(ks.tolist(), corpus.texts(ks))]))
    return store


def shingles(text: str, n: int) -> set[str]:
    w = re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower())
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}


def exact_jaccard(corpus: Corpus, pairs: list[tuple[int, int]], n: int) -> dict[tuple[int, int], float]:
    docs = sorted({d for p in pairs for d in p})
    sets = dict(zip(docs, (shingles(t, n) for t in corpus.texts(np.array(docs, dtype=np.int64)))))
    return {(a, b): len(sets[a] & sets[b]) / max(len(sets[a] | sets[b]), 1) for a, b in pairs}


# ----------------------------------------------------------------------------------------- measured child
def child(store_path: str, workers: int, memory_limit: str, engine: str | None = None,
          ray_address: str | None = None) -> None:
    import psutil

    me = psutil.Process()
    peak = {"total": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                total = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
                peak["total"] = max(peak["total"], total)
            except psutil.Error:
                pass
            stop.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    report = dedup.analyze_corpus(Store(store_path), "bench",
                                  DedupConfig(workers=workers, memory_limit=memory_limit, engine=engine,
                                              ray_address=ray_address), progress=False)
    elapsed = time.perf_counter() - t0
    stop.set()
    thread.join()
    import resource  # CPU seconds of this process and of its (joined) worker processes

    cpu = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    print(json.dumps({"elapsed_s": elapsed, "cpu_s": cpu, "peak_rss_tree_mib": peak["total"] / 2**20,
                      "candidates": str(report.candidates_path), "summary": report.summary}, default=str))


def run_size(n: int, tmp: Path, sentences: list[str], args) -> dict:
    corpus = Corpus(n, sentences)
    root = tmp / f"s{n}"
    t0 = time.perf_counter()
    if (root / "catalog.duckdb").exists() and Store(root).corpus("bench").n_docs == n:
        store = Store(root)  # written before (e.g. by --write-only): reuse it, cold
        shutil.rmtree(root / "artifacts", ignore_errors=True)
    else:
        shutil.rmtree(root, ignore_errors=True)
        store = write_corpus(root, corpus)
    t_write = time.perf_counter() - t0
    load = os.getloadavg()
    engine = [*(["--engine", args.engine] if args.engine else []),
              *(["--ray-address", args.ray_address] if args.ray_address else [])]
    out = subprocess.run([sys.executable, __file__, "--child", str(root), "--workers", str(args.workers),
                          "--memory-limit", args.memory_limit, *engine], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"analysis of {n} documents failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    load_after = os.getloadavg()
    # ---------------------------------------------------------------- precision / recall
    bases = {s.shard: k * SHARD_DOCS for k, s in enumerate(store.shards("bench"))}
    pairs = store.read_result("dup_pairs")
    found = {(bases[a] + b, bases[c] + d) for a, b, c, d in
             zip(pairs["shard"], pairs["row"], pairs["against_shard"], pairs["against_row"])}
    found = {(min(p), max(p)) for p in found}
    # the reported pairs (and so the clusters, their connected components) as one hash: equal across engines
    pairs_hash = hashlib.blake2b(json.dumps(sorted(found)).encode(), digest_size=8).hexdigest()
    cand = pq.read_table(r["candidates"])
    cand_pairs = {(min(a, b), max(a, b)) for a, b in zip(cand["i"].to_pylist(), cand["j"].to_pylist())}
    planted = corpus.planted_pairs()
    t0 = time.perf_counter()
    jac = exact_jaccard(corpus, sorted(cand_pairs | planted), DedupConfig.ngram)
    truth = {p for p, j in jac.items() if j >= DedupConfig.threshold}
    tp = len(found & truth)
    by_rate = {}
    for rate in EDIT_RATES:
        ps = [(int(corpus.root[c]), int(c)) for c in np.flatnonzero(corpus.is_copy & (corpus.rate == rate))]
        js = np.array([jac[p] for p in ps])
        by_rate[str(rate)] = {"n": len(ps), "exact_jaccard_median": float(np.median(js)) if len(js) else None,
                              "share_true_dup": float((js >= 0.8).mean()) if len(js) else None,
                              "share_reported": float(np.mean([p in found for p in ps])) if ps else None}
    s = r["summary"]
    return {
        "n_docs": n, "engine": args.engine or "local", "pairs_hash": pairs_hash,
        "n_planted_copies": int(corpus.is_copy.sum()), "n_shards": len(bases),
        "write_store_s": t_write, "elapsed_s": r["elapsed_s"], "docs_per_s": n / r["elapsed_s"],
        "cpu_s": r["cpu_s"], "docs_per_cpu_s": n / r["cpu_s"], "stage_s": {k: s[k] for k in ("map_s", "candidates_s", "verify_s")},
        "peak_rss_tree_mib": r["peak_rss_tree_mib"], "load_before": load, "load_after": load_after,
        "n_candidates": s["n_candidates"], "n_pairs": s["n_pairs"], "n_clusters": s["n_clusters"],
        "n_capped_buckets": s["n_capped_buckets"], "bands": s["bands"], "rows_per_band": s["rows_per_band"],
        "n_true_pairs": len(truth), "true_positives": tp,
        "precision": tp / len(found) if found else 1.0, "recall": tp / len(truth) if truth else 1.0,
        "exact_jaccard_s": time.perf_counter() - t0, "planted_by_edit_rate": by_rate,
        "disk_artifacts_mib": sum(f.stat().st_size for f in (root / "artifacts").rglob("*") if f.is_file()) / 2**20,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000], help="corpus sizes (docs)")
    ap.add_argument("--workers", type=int, default=2, help="signature worker processes (default 2)")
    ap.add_argument("--memory-limit", default=DedupConfig.memory_limit, help="DuckDB memory limit")
    ap.add_argument("--tmp", help="folder for the benchmark stores (default: a temporary folder)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON only")
    ap.add_argument("--write-only", action="store_true", help="only write the stores under --tmp (kept)")
    ap.add_argument("--keep", action="store_true", help="keep the stores under --tmp after measuring")
    ap.add_argument("--engine", choices=["local", "ray"], help="where the signature map runs (default: local)")
    ap.add_argument("--ray-address", help="a Ray cluster to join, e.g. 127.0.0.1:6390 (two `ray start` nodes)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.workers, args.memory_limit, args.engine, args.ray_address)
        return 0
    if not SHARED.exists():
        print(f"error: {SHARED} is absent; this benchmark reads real text from ../shared/data", file=sys.stderr)
        return 2
    sentences = load_sentences()
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="dedup_scale_"))
    tmp.mkdir(parents=True, exist_ok=True)
    results = {"n_sentences": len(sentences), "edit_rates": EDIT_RATES, "copy_share": COPY_SHARE,
               "workers": args.workers, "memory_limit": args.memory_limit, "cpus": os.cpu_count(), "sizes": []}
    if args.write_only:
        for n in args.sizes:
            write_corpus(tmp / f"s{n}", Corpus(n, sentences))
        return 0
    try:
        for n in args.sizes:
            res = run_size(n, tmp, sentences, args)
            results["sizes"].append(res)
            if not args.keep:
                shutil.rmtree(tmp / f"s{n}", ignore_errors=True)
            if not args.json:
                print(f"{n:>9} docs ({res['engine']}, pairs {res['pairs_hash']}): {res['elapsed_s']:.1f} s, {res['docs_per_s']:.0f} docs/s, peak RSS (tree) "
                      f"{res['peak_rss_tree_mib']:.0f} MiB, CPU {res['cpu_s']:.0f} s ({res['docs_per_cpu_s']:.0f} docs/CPU-s), P {res['precision']:.4f} R {res['recall']:.4f} "
                      f"({res['n_true_pairs']} true pairs, {res['n_candidates']} candidates, {res['n_pairs']} "
                      f"reported); load {res['load_before'][0]:.1f}->{res['load_after'][0]:.1f}", flush=True)
    finally:
        if not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if len(results["sizes"]) >= 2:
        a, b = results["sizes"][0], results["sizes"][-1]
        results["time_ratio"] = b["elapsed_s"] / a["elapsed_s"]
        results["size_ratio"] = b["n_docs"] / a["n_docs"]
        results["rss_ratio"] = b["peak_rss_tree_mib"] / a["peak_rss_tree_mib"]
    out_dir = REPO / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "dedup_scale.json").write_text(json.dumps(results, indent=2))
    if args.json:
        print(json.dumps(results, indent=2))
    elif "time_ratio" in results:
        print(f"{results['size_ratio']:.0f}x documents: {results['time_ratio']:.2f}x time, "
              f"{results['rss_ratio']:.2f}x peak RSS")
        for res in results["sizes"]:
            print(f"  {res['n_docs']} docs, recall of planted copies by edit rate: " + ", ".join(
                f"{k}: J~{v['exact_jaccard_median']:.2f} {v['share_reported']:.2f}"
                for k, v in res["planted_by_edit_rate"].items() if v["n"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
