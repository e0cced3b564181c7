"""Benchmark stats.dedup: pair precision/recall on planted near-duplicates, signature throughput, peak RSS.

Documents: real text from ../shared/data (C4 sample, CCNet head, WikiText-2 paragraphs, GitHub code) and
gensim's Lee news articles; a random subset gets copies altered by known word-edit rates (each word is,
with probability `rate`, substituted, deleted or followed by an inserted word).

1. Quality: every pair's exact Jaccard over shingle sets (brute force over all pairs, as a sparse
   doc x shingle product) vs the pairs stats.dedup reports at the threshold: precision and recall.
2. Speed: signatures per second, one process, on the same documents: the vectorised signatures of
   stats.dedup against the naive datasketch loop (one MinHash per document, `update` per shingle);
   medians of repeats, and the ratio. Also the full per-shard map with worker processes.
3. Memory: peak RSS of `analyze_corpus` (cold signature cache) on the corpus at 1x and 4x size, each in its
   own subprocess, with 1 process and with worker processes.

    python benchmarks/dedup.py            # prints a table; JSON to benchmarks/out/dedup.json
    python benchmarks/dedup.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np
from datasketch import MinHash
from scipy.sparse import csr_matrix, triu

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from corpora.store import Store, make_documents  # noqa: E402
from stats import dedup  # noqa: E402
from stats.dedup import DedupConfig  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
EDIT_RATES = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]


def load_real_texts() -> list[str]:
    """Every usable document of ../shared/data plus the Lee articles (no planted copies yet)."""
    texts = [json.loads(line)["text"] for line in (SHARED / "cc" / "c4_sample.jsonl").open()]
    for p in sorted((SHARED / "cc").glob("ccnet_head-*.jsonl.gz")):
        texts += [json.loads(line)["text"] for line in gzip.open(p, "rt")]
    # WikiText-2 test: one paragraph per line; headings (" = Title = ") and short lines left out
    texts += [line.strip() for line in (SHARED / "wiki" / "wikitext2_test.txt").open()
              if len(line.split()) >= 40 and not line.strip().startswith("=")]
    texts += [json.loads(line)["text"] for line in (SHARED / "code" / "github_sample_50.jsonl").open()]
    import importlib.util
    gensim_dir = Path(list(importlib.util.find_spec("gensim").submodule_search_locations)[0])
    texts += [t.strip() for t in (gensim_dir / "test" / "test_data" / "lee_background.cor").open() if t.strip()]
    return texts


def edit(text: str, rate: float, rng: np.random.Generator, vocab: list[str]) -> str:
    words = text.split()
    out = []
    for w in words:
        if rng.random() < rate:
            op = rng.integers(3)
            if op == 0:
                out.append(vocab[rng.integers(len(vocab))])  # substitute
            elif op == 2:
                out += [w, vocab[rng.integers(len(vocab))]]  # insert after
            # op == 1: delete
        else:
            out.append(w)
    return " ".join(out)


def build_planted(seed: int = 0, n_copied: int = 700) -> tuple[list[str], list[tuple[int, int, float]]]:
    rng = np.random.default_rng(seed)
    texts = load_real_texts()
    vocab = sorted({w for t in texts[:500] for w in t.split()})
    eligible = [k for k, t in enumerate(texts) if len(t.split()) >= 50]
    chosen = rng.choice(eligible, size=min(n_copied, len(eligible)), replace=False)
    planted = []
    out = list(texts)
    for n, k in enumerate(chosen):
        rate = EDIT_RATES[n % len(EDIT_RATES)]
        out.append(edit(texts[k], rate, rng, vocab))
        planted.append((int(k), len(out) - 1, rate))
    return out, planted


def exact_pairs(texts: list[str], ngram: int, threshold: float) -> dict[tuple[int, int], float]:
    """All pairs with exact shingle-set Jaccard >= threshold (brute force via a sparse product)."""
    words, n_words = dedup.split_words(texts)  # the library's normalisation: the definition being tested
    words = words.to_pylist()
    ids: dict[str, int] = {}
    indptr, indices = [0], []
    pos = 0
    for n in n_words.tolist():
        w = words[pos:pos + n]
        pos += n
        doc = {ids.setdefault(" ".join(w[i:i + ngram]), len(ids)) for i in range(len(w) - ngram + 1)}
        indices += sorted(doc)
        indptr.append(len(indices))
    x = csr_matrix((np.ones(len(indices), dtype=np.int32), indices, indptr), shape=(len(texts), len(ids)))
    sizes = np.asarray(x.sum(axis=1)).ravel()
    inter = triu(x @ x.T, k=1).tocoo()  # every pair sharing at least one shingle; others have J = 0
    jac = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    keep = jac >= threshold
    return {(int(i), int(j)): float(v) for i, j, v in zip(inter.row[keep], inter.col[keep], jac[keep])}


def exact_jaccard_of(texts, pairs, ngram):
    sets = {}
    def shingles(k):
        if k not in sets:
            w = re.findall(r"\w+", unicodedata.normalize("NFKC", texts[k]).lower())
            sets[k] = {" ".join(w[i:i + ngram]) for i in range(len(w) - ngram + 1)}
        return sets[k]
    return [len(shingles(a) & shingles(b)) / max(len(shingles(a) | shingles(b)), 1) for a, b in pairs]


def naive_signatures(texts: list[str], cfg: DedupConfig) -> list[MinHash]:
    """The loop the issue compares against: one MinHash per document, `update` per shingle."""
    out = []
    for t in texts:
        w = re.findall(r"\w+", unicodedata.normalize("NFKC", t).lower())
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        for i in range(len(w) - cfg.ngram + 1):
            m.update(" ".join(w[i:i + cfg.ngram]).encode("utf-8"))
        out.append(m)
    return out


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_store(root: Path, texts: list[str], shard_size: int = 500) -> Store:
    store = Store(root, create=True)
    store.create_corpus("bench", "natural", "train")
    for i in range(0, len(texts), shard_size):
        store.append_shard("bench", make_documents(
            [{"text": t, "source": f"bench:{i + k}"} for k, t in enumerate(texts[i:i + shard_size])]))
    return store


def _vm_hwm_mib() -> float:
    """Peak RSS of this process image (VmHWM). Not ru_maxrss: Linux carries that over fork and exec,
    so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_child(store_path: str, workers: int) -> None:
    """Runs in a subprocess: analyse the corpus; peak RSS of this process and, sampled every 50 ms,
    of this process plus its worker processes together."""
    import threading

    import psutil  # installed with accelerate

    me = psutil.Process()
    peak = {"total": 0, "worker": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                kids = [c.memory_info().rss for c in me.children(recursive=True)]
            except psutil.Error:
                kids = []
            peak["total"] = max(peak["total"], me.memory_info().rss + sum(kids))
            peak["worker"] = max([peak["worker"], *kids])
            stop.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    store = Store(store_path)
    t0 = time.perf_counter()
    report = dedup.analyze_corpus(store, "bench", DedupConfig(workers=workers), progress=False)
    elapsed = time.perf_counter() - t0
    stop.set()
    thread.join()
    print(json.dumps({
        "n_docs": report.summary["n_docs"], "workers": workers, "elapsed_s": elapsed,
        "peak_rss_driver_mib": _vm_hwm_mib(), "peak_rss_worker_mib": peak["worker"] / 2**20,
        "peak_rss_total_mib": peak["total"] / 2**20,
    }))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--json", action="store_true", help="print the results as JSON only")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=2, help="worker processes for the map (default 2)")
    args = ap.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child, args.workers)
        return 0
    if not SHARED.exists():
        print(f"error: {SHARED} is absent; this benchmark reads real text from ../shared/data", file=sys.stderr)
        return 2
    repeats = 2 if args.quick else 3
    cfg = DedupConfig(workers=args.workers)
    texts, planted = build_planted()
    results: dict = {"n_docs": len(texts), "n_planted_copies": len(planted), "edit_rates": EDIT_RATES,
                     "config": json.loads(cfg.as_json())}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # ---------------------------------------------------------------- quality
        store = write_store(tmp / "s1", texts)
        t0 = time.perf_counter()
        report = dedup.analyze_corpus(store, "bench", cfg, progress=False)
        results["analyze_elapsed_s"] = time.perf_counter() - t0
        sigs = dedup.build_signatures(store, "bench", cfg, progress=False).sigs
        gidx = {(int(s), int(r)): k for k, (s, r) in enumerate(zip(sigs.shard, sigs.row))}
        p = report.pairs
        found = {tuple(sorted((gidx[(a, b)], gidx[(c, d)]))) for a, b, c, d in
                 zip(p["shard"], p["row"], p["against_shard"], p["against_row"])}
        t0 = time.perf_counter()
        truth = exact_pairs(texts, cfg.ngram, cfg.threshold)
        results["brute_force_elapsed_s"] = time.perf_counter() - t0
        tp = len(found & truth.keys())
        results.update(n_true_pairs=len(truth), n_found_pairs=len(found), true_positives=tp,
                       precision=tp / len(found) if found else 1.0, recall=tp / len(truth) if truth else 1.0)
        # recall of the planted pairs by edit rate, with their exact Jaccard (what the rate means)
        by_rate = {}
        exact_planted = exact_jaccard_of(texts, [(a, b) for a, b, _ in planted], cfg.ngram)
        for rate in EDIT_RATES:
            rows = [(a, b, j) for (a, b, r), j in zip(planted, exact_planted) if r == rate]
            js = np.array([j for _, _, j in rows])
            hit = np.array([(min(a, b), max(a, b)) in found for a, b, _ in rows])
            by_rate[str(rate)] = {"n": len(rows), "exact_jaccard_median": float(np.median(js)),
                                  "share_true_dup": float((js >= cfg.threshold).mean()),
                                  "share_reported": float(hit.mean())}
        results["planted_by_edit_rate"] = by_rate
        fp = sorted(found - truth.keys())
        fn = sorted(truth.keys() - found)
        results["false_positive_exact_jaccard"] = sorted(round(j, 3) for j in exact_jaccard_of(texts, fp, cfg.ngram))
        results["false_negative_exact_jaccard"] = sorted(round(truth[k], 3) for k in fn)

        # ---------------------------------------------------------------- speed (one process, same docs)
        sample = texts[: min(len(texts), 600)]
        dedup.compute_signatures(sample[:50], cfg)  # warm-up: polars' regex compile, numpy dispatch
        t_ours = median_time(lambda: dedup.compute_signatures(sample, cfg), repeats + 2)
        t_naive = median_time(lambda: naive_signatures(sample, cfg), repeats)
        t_ours_all = median_time(lambda: [dedup.compute_signatures(texts[i:i + cfg.batch_docs], cfg)
                                          for i in range(0, len(texts), cfg.batch_docs)], repeats)
        n_shingles = int(dedup.compute_signatures(sample, cfg)[1].sum())
        results["speed"] = {
            "n_docs": len(sample), "n_shingles": n_shingles, "repeats": repeats,
            "ours_docs_per_s": len(sample) / t_ours, "naive_docs_per_s": len(sample) / t_naive,
            "speedup": t_naive / t_ours, "ours_all_docs_per_s": len(texts) / t_ours_all,
        }
        # the whole per-shard map with worker processes (cold cache; includes process start-up)
        def cold_map():
            shutil.rmtree(store.artifact_dir("dedup_bands", "bench"))
            dedup.build_signatures(store, "bench", cfg, progress=False)
        results["speed"]["map_workers"] = cfg.workers
        results["speed"]["map_docs_per_s"] = len(texts) / median_time(cold_map, repeats)

        # ---------------------------------------------------------------- memory (subprocesses)
        rss = {}
        for scale in (1, 4):
            rng = np.random.default_rng(scale)
            vocab = sorted({w for t in texts[:500] for w in t.split()})
            # replicas get 30% word edits so the 4x corpus is 4x distinct text, not 4 exact copies
            big = texts + [edit(t, 0.3, rng, vocab) for _ in range(scale - 1) for t in texts]
            write_store(tmp / f"rss{scale}", big)
            del big
            for workers in (1, args.workers):
                shutil.rmtree(tmp / f"rss{scale}" / "artifacts", ignore_errors=True)  # each run hashes from scratch
                out = subprocess.run([sys.executable, __file__, "--rss-child", str(tmp / f"rss{scale}"),
                                      "--workers", str(workers)], capture_output=True, text=True, check=True)
                rss[f"{scale}x_w{workers}"] = json.loads(out.stdout.strip().splitlines()[-1])
        results["rss"] = rss

    out_dir = REPO / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "dedup.json").write_text(json.dumps(results, indent=2))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    sp = results["speed"]
    print(f"documents: {results['n_docs']} ({results['n_planted_copies']} planted copies, edit rates {EDIT_RATES})")
    print(f"pairs at J >= {cfg.threshold}: exact {results['n_true_pairs']}, reported {results['n_found_pairs']}, "
          f"precision {results['precision']:.4f}, recall {results['recall']:.4f}")
    print(f"  false positives' exact J: {results['false_positive_exact_jaccard']}")
    print(f"  false negatives' exact J: {results['false_negative_exact_jaccard']}")
    for rate, r in by_rate.items():
        print(f"  edit rate {rate:>6}: n={r['n']:>3} exact J median {r['exact_jaccard_median']:.3f}, "
              f"true dup {r['share_true_dup']:.2f}, reported {r['share_reported']:.2f}")
    print(f"signatures, 1 process, {sp['n_docs']} docs ({sp['n_shingles']} shingles), median of repeats: "
          f"stats.dedup {sp['ours_docs_per_s']:.0f} docs/s, naive datasketch loop {sp['naive_docs_per_s']:.0f} docs/s, "
          f"speedup {sp['speedup']:.1f}x")
    print(f"  all {results['n_docs']} docs: {sp['ours_all_docs_per_s']:.0f} docs/s; per-shard map with "
          f"{sp['map_workers']} workers (cold, incl. start-up): {sp['map_docs_per_s']:.0f} docs/s")
    for k, r in results["rss"].items():
        print(f"peak RSS {k} ({r['n_docs']} docs, {r['workers']} worker(s)): driver {r['peak_rss_driver_mib']:.0f} MiB, "
              f"largest worker {r['peak_rss_worker_mib']:.0f} MiB, all processes {r['peak_rss_total_mib']:.0f} MiB; "
              f"analyze_corpus {r['elapsed_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
