"""Unigram counting speed and memory, three ways on the same texts and cores, in one run.

    python benchmarks/unigram.py            # >= 500 MB corpus built from the real C4 sample
    python benchmarks/unigram.py --mb 50    # smaller and quicker

(a) ours, end to end from the store: `build_unigram_counts` (Parquet -> tokens -> counts -> result table),
    in a fresh process so that its peak RSS (and its workers') is its own;
(b) raw `tiktoken encode_ordinary_batch(batch, num_threads=cores)` over the texts already in memory:
    the practical limit of tokenizing with tiktoken;
(c) the naive loop a user would write: per-document `encode_ordinary` + `collections.Counter.update`.
Prints medians of the repeats (a and b interleaved, so machine noise hits both alike), the ratios
(a)/(b) and (a)/(c), peak RSS at the full and a quarter corpus size, and the time of a repeated
comparison on cached counts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from corpora.store import Store, make_documents

C4 = REPO.parent / "shared" / "data" / "cc" / "c4_sample.jsonl"
SHARD_MB = 64  # as corpora.ingest writes them

# (a) runs in a child so its memory is measured alone; it prints one JSON line.
CHILD = r"""
import json, os, sys, threading, time
from corpora.store import Store
from stats.unigram import UnigramConfig, build_unigram_counts

def status(pid, key):  # kB from /proc (VmHWM is per process and, unlike ru_maxrss, reset by exec)
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

peak = {"tree_kb": 0, "worker_hwm_kb": 0}
stop = threading.Event()
def sample():
    while not stop.is_set():
        kids = children(os.getpid())
        peak["tree_kb"] = max(peak["tree_kb"], status(os.getpid(), "VmRSS") + sum(status(k, "VmRSS") for k in kids))
        peak["worker_hwm_kb"] = max([peak["worker_hwm_kb"]] + [status(k, "VmHWM") for k in kids])
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()

store = Store(sys.argv[1])
t = time.perf_counter()
counts = build_unigram_counts(store, sys.argv[2], UnigramConfig(recount=True, progress=False))
elapsed_s = time.perf_counter() - t
stop.set()
print(json.dumps({"elapsed_s": elapsed_s, "n_tokens": counts.n_tokens, "n_bytes": counts.n_bytes,
                  "rss_main_mb": status(os.getpid(), "VmHWM") / 1024,
                  "rss_worker_mb": peak["worker_hwm_kb"] / 1024, "rss_tree_mb": peak["tree_kb"] / 1024}))
"""


def build_corpus(store: Store, name: str, target_mb: float) -> None:
    """Repeat the C4 sample, each copy's documents suffixed so that no two documents are equal."""
    docs = [json.loads(line)["text"] for line in C4.read_text(encoding="utf-8").splitlines() if line.strip()]
    store.create_corpus(name, "natural", "train")
    total = copy = 0
    rows: list[dict] = []
    shard_bytes = 0
    while total < target_mb * 1e6:
        for i, text in enumerate(docs):
            row = {"text": f"{text}\n(copy {copy})", "doc_id": f"{copy:06d}-{i:04d}"}
            rows.append(row)
            n = len(row["text"].encode("utf-8"))
            total += n
            shard_bytes += n
            if shard_bytes >= SHARD_MB * 1e6:
                store.append_shard(name, make_documents(rows))
                rows, shard_bytes = [], 0
        copy += 1
    if rows:
        store.append_shard(name, make_documents(rows))


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_ours(store: Store, corpus: str) -> dict:
    t = time.perf_counter()
    cpu0 = _children_cpu_s()
    out = subprocess.run([sys.executable, "-c", CHILD, str(store.root), corpus], check=False, capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode:
        raise SystemExit(f"(a) failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - t
    result["cpu_s"] = _children_cpu_s() - cpu0  # the child and its workers, start-up included
    return result


def load_batches(store: Store, corpus: str, batch_size: int = 1024) -> list[list[str]]:
    return [b.column(0).to_pylist() for b in store.iter_batches(corpus, ["text"], batch_size=batch_size)]


def run_raw(enc, batches: list[list[str]], threads: int) -> tuple[float, int, float]:
    t, cpu = time.perf_counter(), time.process_time()
    n_tokens = 0
    for batch in batches:
        n_tokens += sum(map(len, enc.encode_ordinary_batch(batch, num_threads=threads)))
    return time.perf_counter() - t, n_tokens, time.process_time() - cpu


def run_naive(enc, batches: list[list[str]]) -> tuple[float, int, float]:
    t, cpu = time.perf_counter(), time.process_time()
    counts: Counter = Counter()
    for batch in batches:
        for text in batch:
            counts.update(enc.encode_ordinary(text))
    return time.perf_counter() - t, sum(counts.values()), time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=500, help="corpus size in MB (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of (a) and (b) (default: %(default)s)")
    ap.add_argument("--naive-repeats", type=int, default=1, help="repeats of (c) (default: %(default)s)")
    ap.add_argument("--store", help="reuse/keep a benchmark store here (default: a temporary directory)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()
    if not C4.exists():
        raise SystemExit(f"{C4} is absent: the benchmark builds its corpus from the real C4 sample")

    tmp = tempfile.TemporaryDirectory(prefix="bench-unigram-")
    root = Path(args.store) if args.store else Path(tmp.name) / "store"
    store = Store(root, create=True)
    sizes = {"bench": args.mb, "bench_quarter": args.mb / 4}
    for name, mb in sizes.items():
        if not store.has_corpus(name):
            t = time.perf_counter()
            build_corpus(store, name, mb)
            print(f"built {name}: {store.corpus(name).n_bytes / 1e6:.0f} MB in {store.corpus(name).n_shards} "
                  f"shards ({time.perf_counter() - t:.0f} s)", flush=True)
    info = store.corpus("bench")
    mb = info.n_bytes / 1e6
    cores = os.cpu_count() or 1

    from corpora.tokenizers import load_tokenizer

    enc = load_tokenizer("cl100k_base").encoding
    batches = load_batches(store, "bench")
    ours, raw = [], []
    for r in range(args.repeats):  # interleaved
        ours.append(run_ours(store, "bench"))
        print(f"  (a) repeat {r}: {ours[-1]['elapsed_s']:.1f} s", flush=True)
        raw.append(run_raw(enc, batches, cores))
        print(f"  (b) repeat {r}: {raw[-1][0]:.1f} s", flush=True)
        print(f"      load average {os.getloadavg()[0]:.1f}", flush=True)
    naive = []
    for r in range(args.naive_repeats):
        naive.append(run_naive(enc, batches))
        print(f"  (c) repeat {r}: {naive[-1][0]:.1f} s", flush=True)
    del batches
    quarter = run_ours(store, "bench_quarter")
    assert {o["n_tokens"] for o in ours} == {r[1] for r in raw} == {r[1] for r in naive}, "token totals differ"

    # a repeated comparison on cached counts (counts of both corpora are in the store by now)
    from stats.unigram import UnigramConfig, run_unigram

    cfg = UnigramConfig(train=["bench"], test=["bench_quarter"], progress=False)
    run_unigram(store, cfg)
    cached_s = statistics.median(run_unigram(store, cfg).elapsed_s for _ in range(3))
    t = time.perf_counter()
    cli = subprocess.run([sys.executable, "-m", "stats.unigram", "--store", str(root), "--train", "bench",
                          "--test", "bench_quarter", "--no-progress"], check=False, capture_output=True, text=True, cwd=REPO)
    cli_s = time.perf_counter() - t
    assert cli.returncode == 0, cli.stderr

    a_s = statistics.median(o["elapsed_s"] for o in ours)
    b_s = statistics.median(r[0] for r in raw)
    c_s = statistics.median(r[0] for r in naive)
    # CPU seconds: what each way costs the machine, whatever else runs beside it
    a_cpu = statistics.median(o["cpu_s"] for o in ours)
    b_cpu = statistics.median(r[2] for r in raw)
    c_cpu = statistics.median(r[2] for r in naive)
    result = {
        "corpus_mb": mb, "n_docs": info.n_docs, "n_shards": info.n_shards, "n_tokens": ours[0]["n_tokens"],
        "cores": cores, "repeats": args.repeats,
        "a_ours_s": a_s, "b_raw_batch_s": b_s, "c_naive_s": c_s,
        "a_mb_per_s": mb / a_s, "b_mb_per_s": mb / b_s, "c_mb_per_s": mb / c_s,
        "a_over_b_throughput": b_s / a_s, "a_over_c_throughput": c_s / a_s,
        "a_cpu_s": a_cpu, "b_cpu_s": b_cpu, "c_cpu_s": c_cpu,
        "load_average_1min_end": os.getloadavg()[0],
        "a_wall_with_startup_s": statistics.median(o["wall_s"] for o in ours),
        "peak_rss_main_mb": max(o["rss_main_mb"] for o in ours),
        "peak_rss_worker_mb": max(o["rss_worker_mb"] for o in ours),
        "peak_rss_tree_mb": max(o["rss_tree_mb"] for o in ours),
        "quarter_mb": store.corpus("bench_quarter").n_bytes / 1e6,
        "quarter_peak_rss_main_mb": quarter["rss_main_mb"], "quarter_peak_rss_worker_mb": quarter["rss_worker_mb"],
        "quarter_peak_rss_tree_mb": quarter["rss_tree_mb"],
        "cached_comparison_s": cached_s, "cached_comparison_cli_wall_s": cli_s,
    }
    print(f"\ncorpus: {mb:.0f} MB, {info.n_docs:,} docs, {info.n_shards} shards, {result['n_tokens']:,} tokens; "
          f"{cores} cores; medians of {args.repeats} (a, b) / {args.naive_repeats} (c)")
    print(f"(a) ours, end to end from the store   {a_s:7.1f} s  {mb / a_s:6.1f} MB/s  {a_cpu:7.1f} CPU s")
    print(f"(b) raw encode_ordinary_batch          {b_s:7.1f} s  {mb / b_s:6.1f} MB/s  {b_cpu:7.1f} CPU s")
    print(f"(c) naive encode + Counter             {c_s:7.1f} s  {mb / c_s:6.1f} MB/s  {c_cpu:7.1f} CPU s")
    print(f"(a)/(b) throughput {result['a_over_b_throughput']:.2f}  (target >= 0.85)")
    print(f"(a)/(c) throughput {result['a_over_c_throughput']:.2f}  (target >= 1.7)")
    print(f"CPU seconds (c)/(a) {c_cpu / a_cpu:.2f}: with {cores} idle cores (a) would reach up to about "
          f"{cores * c_cpu / a_cpu:.1f}x (c); load average now {os.getloadavg()[0]:.1f} on {cores} cores "
          "(other jobs share the cores, which hides the parallel speed-up of (a) and (b) over (c))")
    print(f"peak RSS of (a) at {mb:.0f} MB: main {result['peak_rss_main_mb']:.0f} MB, largest worker "
          f"{result['peak_rss_worker_mb']:.0f} MB, whole process tree {result['peak_rss_tree_mb']:.0f} MB")
    print(f"peak RSS of (a) at {result['quarter_mb']:.0f} MB: main {quarter['rss_main_mb']:.0f} MB, largest worker "
          f"{quarter['rss_worker_mb']:.0f} MB, whole process tree {quarter['rss_tree_mb']:.0f} MB "
          "(target < 1024 MB, not growing with size)")
    print(f"repeated comparison on cached counts: {cached_s:.3f} s in the library, {cli_s:.2f} s as a CLI "
          "process (interpreter start and imports included)")
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
