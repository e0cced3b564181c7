"""Corpus export to a Hugging Face datasets folder and mixture export to Megatron: speed and memory at two sizes.

Each export runs in a fresh process (so its peak RSS is its own) against a baseline measured in the same
run on the same data:
- hf export (no token count) vs pyarrow copying the same shards (read_table + write_table, zstd);
- megatron export of a mixture vs `np.load(train.npy).tofile()` (the bare copy of the stream).
Medians of --repeats; ratios are export / baseline. Sizes: --sizes MB of documents made of random
sentences drawn from ../shared/data C4 + CCNet (seeded), never one file repeated.

    python benchmarks/export.py [--sizes 16 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "cc"


def sentences() -> list[str]:
    texts = [json.loads(line)["text"] for line in (DATA / "c4_sample.jsonl").read_text().splitlines() if line.strip()]
    for f in sorted(DATA.glob("ccnet_head-*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh if line.strip()]
    return [s.strip() for t in texts for s in re.split(r"(?<=[.!?])\s+", t) if len(s.strip()) > 20]


def build_store(root: Path, size_mb: float, shard_mb: float = 16.0) -> None:
    import numpy as np

    from corpora.store import Store, make_documents
    from train.data import MixtureConfig, build_mixture

    pool = sentences()
    rng = np.random.default_rng(0)
    store = Store(root, create=True)
    store.create_corpus("cc", "natural", "train")
    rows, n_bytes, shard_bytes = [], 0, 0
    while n_bytes < size_mb * 1e6:
        text = " ".join(pool[i] for i in rng.integers(0, len(pool), rng.integers(5, 40)))
        rows.append({"text": text, "source": f"bench:{len(rows)}"})
        n_bytes += len(text.encode())
        shard_bytes += len(text.encode())
        if shard_bytes >= shard_mb * 1e6:
            store.append_shard("cc", make_documents(rows))
            rows, shard_bytes = [], 0
    if rows:
        store.append_shard("cc", make_documents(rows))
    # a mixture of a quarter of the corpus's tokens (~4 bytes per cl100k token)
    build_mixture(store, MixtureConfig("m", {"cc": 1.0}, int(size_mb * 1e6 / 16), seq_len=1023), progress=False)


def run_one(store_root: str, what: str, out: str) -> None:
    """One timed step in this process; prints {elapsed_s, maxrss_mb}."""
    import numpy as np
    import pyarrow.parquet as pq

    from corpora.export import ExportConfig, export_corpus
    from corpora.store import Store
    from train.export import ExportConfig as MixExport, export_mixture

    store = Store(store_root)
    t0 = time.perf_counter()
    if what == "hf":
        export_corpus(store, ExportConfig("cc", "hf", out, tokenizer=None, overwrite=True), progress=False)
    elif what == "copy":
        Path(out).mkdir(parents=True, exist_ok=True)
        for s in store.shards("cc"):
            pq.write_table(pq.read_table(s.path), Path(out) / f"{s.shard}.parquet", compression="zstd")
    elif what == "megatron":
        export_mixture(store, MixExport("m", "megatron", out, overwrite=True), progress=False)
    elif what == "tofile":
        Path(out).mkdir(parents=True, exist_ok=True)
        np.load(store.artifact_dir("mixtures", "m") / "train.npy").tofile(Path(out) / "m.bin")
    elapsed = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec
    hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"elapsed_s": elapsed, "maxrss_mb": hwm_kb / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[16, 64])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", nargs=3, metavar=("STORE", "WHAT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        run_one(*args.one)
        return
    if not DATA.exists():
        sys.exit(f"{DATA} is absent: this benchmark draws its documents from ../shared/data")
    with open("/proc/loadavg") as f:
        print(f"load average at start: {f.read().split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        for size in args.sizes:
            root = Path(tmp) / f"store{size:g}"
            build_store(root, size)
            res = {}
            for what in ("copy", "hf", "tofile", "megatron"):
                runs = [json.loads(subprocess.run(
                    [sys.executable, __file__, "--one", str(root), what, str(Path(tmp) / f"out_{what}")],
                    check=True, capture_output=True, text=True).stdout) for _ in range(args.repeats)]
                res[what] = (statistics.median(r["elapsed_s"] for r in runs),
                             statistics.median(r["maxrss_mb"] for r in runs))
            print(f"{size:g} MB: hf export {res['hf'][0]:.2f}s (RSS {res['hf'][1]:.0f} MB) vs pyarrow copy "
                  f"{res['copy'][0]:.2f}s (RSS {res['copy'][1]:.0f} MB): ratio {res['hf'][0] / res['copy'][0]:.2f}; "
                  f"megatron {res['megatron'][0]:.2f}s (RSS {res['megatron'][1]:.0f} MB) vs tofile "
                  f"{res['tofile'][0]:.2f}s (RSS {res['tofile'][1]:.0f} MB): ratio "
                  f"{res['megatron'][0] / res['tofile'][0]:.2f}")
    with open("/proc/loadavg") as f:
        print(f"load average at end: {f.read().split()[0]}")


if __name__ == "__main__":
    main()
