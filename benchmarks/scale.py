"""Each per-shard step on both engines, local processes vs Ray Data, on the same realistic corpus and CPUs.

    python benchmarks/scale.py                      # 500 MB and 125 MB, 2 workers, 3 repeats
    python benchmarks/scale.py --mb 60 --repeats 1  # quicker (a quarter-size run is added for growth)
    python benchmarks/scale.py --synth 8            # also 8 generation requests (SmolLM2, 1 actor vs in-process)

The corpus: documents of 3-40 random sentences drawn from the C4 and CCNet files of ../shared/data (unique in
practice, never one file repeated), written as JSONL input files. Per engine, size and repeat, one fresh
child process runs: ingest (readers on the executor -> Parquet parts -> driver dedup + commit), then unigram
counting (recount) of the corpus it ingested. Ray is started before the clock runs (its start-up is reported
apart). Peak RSS is polled from /proc over the child's process tree: the driver, the workers (pool processes,
Ray `ray::` workers and actors) and Ray's own daemons (gcs, raylet, agents). Prints medians and the ratio
ray/local per step (time; > 1 means Ray is slower), with the machine's load.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ingest import tree_rss  # benchmarks/ingest.py: RSS of a process tree, from /proc

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "cc"

CHILD = r"""
import json, sys, time
from pathlib import Path
from corpora.executor import get_executor
from corpora.ingest import IngestConfig, ingest
from corpora.store import Store
from stats.unigram import UnigramConfig, build_unigram_counts

engine, workers, store_dir, files, synth = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5])
out = {}
t0 = time.perf_counter()
ex = get_executor(engine, workers)
if engine == "ray":
    ex.start()
out["startup_s"] = time.perf_counter() - t0
store = Store(Path(store_dir), create=True)
t0 = time.perf_counter()
rep = ingest(store, files, IngestConfig("bench", workers=workers, engine=engine, part_bytes=16 << 20), progress=False)
out["ingest_s"], out["n_docs"], out["n_bytes"] = time.perf_counter() - t0, rep.n_docs, rep.n_bytes
out["n_shards"] = len(store.shards("bench"))
t0 = time.perf_counter()
counts = build_unigram_counts(store, "bench", UnigramConfig(workers=workers, engine=engine, recount=True, progress=False))
out["unigram_s"], out["n_tokens"] = time.perf_counter() - t0, counts.n_tokens
if synth:
    from tests.conftest import add_corpus
    from synth.backends import default_cache_dir, find_smollm2_gguf
    from synth.generate import GenerateConfig, generate
    texts = [t for t in store.sql("SELECT text FROM documents WHERE corpus = 'bench' ORDER BY doc_id LIMIT ?", [synth]).column(0).to_pylist()]
    add_corpus(store, "src", [t[:600] for t in texts])
    cfg = GenerateConfig(type="hq", source="src", out="hq", generator=str(find_smollm2_gguf()), cache_dir=str(default_cache_dir()),
                         num_threads=1, max_new_tokens=32, batch_size=4, engine=engine, workers=1, progress=False)
    t0 = time.perf_counter()
    s = generate(store, cfg)
    out["synth_s"], out["synth_requests"] = time.perf_counter() - t0, s["n_requests_run"]
ex.close()
print("RESULT " + json.dumps(out), flush=True)
"""


def sentences() -> list[str]:
    """Sentences of the C4 sample and the CCNet files."""
    texts = [json.loads(line)["text"] for line in (DATA / "c4_sample.jsonl").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    for path in sorted(DATA.glob("ccnet_*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f if line.strip()]
    out = [s.strip() for t in texts for s in re.split(r"(?<=[.!?])\s+", t)]
    return [s for s in out if 20 <= len(s) <= 1000]


def build_input(out_dir: Path, target_mb: float, n_files: int, seed: int = 0) -> tuple[list[Path], int, int]:
    """JSONL files of >= target_mb of documents of random sentences; returns (files, docs, bytes)."""
    pool = sentences()
    rng = random.Random(seed)
    files = [out_dir / f"docs_{i:02d}.jsonl" for i in range(n_files)]
    handles = [open(f, "w", encoding="utf-8") for f in files]
    written = n_docs = 0
    while written < target_mb * 1e6:
        text = " ".join(rng.choices(pool, k=rng.randint(3, 40)))
        line = json.dumps({"text": text}) + "\n"
        handles[n_docs % n_files].write(line)
        written += len(line.encode())
        n_docs += 1
    for h in handles:
        h.close()
    return files, n_docs, written


def kind(pid: int, root: int, cmd: str, engine: str) -> str:
    """A local run has no Ray daemons: every process under its driver is a worker (pool processes, the
    forkserver, multiprocessing's resource tracker)."""
    if pid == root:
        return "driver"
    if engine == "local" or cmd.startswith("ray::") or "multiprocessing" in cmd or "forkserver" in cmd:
        return "workers"
    return "ray_daemons"


def run_child(engine: str, workers: int, files: list[Path], synth: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"scale-{engine}-", dir="/tmp") as tmp:
        cmd = [sys.executable, "-c", CHILD, engine, str(workers), str(Path(tmp) / "store"),
               json.dumps([str(f) for f in files]), str(synth)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        peak = {"driver": 0, "workers": 0, "ray_daemons": 0, "one_worker": 0}
        done = threading.Event()

        def poll():
            while not done.is_set():
                sums = {"driver": 0, "workers": 0, "ray_daemons": 0}
                one = 0
                for p, (rss, c) in tree_rss(proc.pid).items():
                    k = kind(p, proc.pid, c, engine)
                    sums[k] += rss
                    if k == "workers":
                        one = max(one, rss)
                for k, v in sums.items():
                    peak[k] = max(peak[k], v)
                peak["one_worker"] = max(peak["one_worker"], one)
                time.sleep(0.2)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        out, err = proc.communicate()
        done.set()
        thread.join()
        line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise SystemExit(f"{engine} run failed (exit {proc.returncode}): {err.strip().splitlines()[-3:]}")
        result = json.loads(line[len("RESULT "):])
        result.update({f"peak_rss_{k}_mb": v / 1e6 for k, v in peak.items()})
        return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=500, help="corpus size in MB of JSONL (default: %(default)s)")
    p.add_argument("--small-mb", type=float, default=None, help="second, smaller size (default: mb / 4)")
    p.add_argument("--workers", type=int, default=2, help="worker processes / Ray CPUs (default: %(default)s)")
    p.add_argument("--files", type=int, default=8, help="input files (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--synth", type=int, default=0, help="also generate from this many documents (0: skip)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not DATA.exists():
        print(f"error: {DATA} is absent; the benchmark draws its sentences from ../shared/data", file=sys.stderr)
        return 2
    report = {"load_before": os.getloadavg(), "workers": args.workers, "sizes": []}
    for mb in (args.small_mb or args.mb / 4, args.mb):
        with tempfile.TemporaryDirectory(prefix="scale-input-", dir="/tmp") as tmp:
            files, n_docs, n_bytes = build_input(Path(tmp), mb, args.files)
            runs = {"local": [], "ray": []}
            for _ in range(args.repeats):  # interleaved, so load changes hit both engines alike
                for engine in ("local", "ray"):
                    runs[engine].append(run_child(engine, args.workers, files, args.synth))
                    print(f"{mb:.0f} MB {engine}: {json.dumps(runs[engine][-1])}  load {os.getloadavg()[0]:.1f}",
                          file=sys.stderr, flush=True)
        med = {e: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for e, rs in runs.items()}
        steps = ["ingest", "unigram"] + (["synth"] if args.synth else [])
        size = {"mb": round(n_bytes / 1e6, 1), "docs": n_docs, "median": med,
                "ratio_ray_over_local": {s: med["ray"][f"{s}_s"] / med["local"][f"{s}_s"] for s in steps},
                "docs_per_s": {e: {s: (med[e]["synth_requests"] if s == "synth" else n_docs) / med[e][f"{s}_s"]
                                   for s in steps} for e in med},
                "load_after": os.getloadavg()}
        report["sizes"].append(size)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"workers {args.workers}; load before {report['load_before'][0]:.1f}")
    for s in report["sizes"]:
        print(f"\n{s['mb']} MB, {s['docs']:,} docs (medians of {args.repeats}; load after {s['load_after'][0]:.1f})")
        print(f"  ray start-up {s['median']['ray']['startup_s']:.1f} s (not in the step times)")
        for step, ratio in s["ratio_ray_over_local"].items():
            print(f"  {step:<8} local {s['median']['local'][f'{step}_s']:7.1f} s ({s['docs_per_s']['local'][step]:9.1f} docs/s)"
                  f"   ray {s['median']['ray'][f'{step}_s']:7.1f} s ({s['docs_per_s']['ray'][step]:9.1f} docs/s)"
                  f"   ray/local {ratio:.2f}")
        for e in ("local", "ray"):
            m = s["median"][e]
            print(f"  peak RSS {e:<5} driver {m['peak_rss_driver_mb']:6.0f} MB, workers {m['peak_rss_workers_mb']:6.0f} MB "
                  f"(largest one {m['peak_rss_one_worker_mb']:5.0f} MB), Ray daemons {m['peak_rss_ray_daemons_mb']:5.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
