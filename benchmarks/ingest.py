"""Ingest throughput (MB/s) and peak RSS on a >= 500 MB corpus built by repeating the C4 sample.

Each repeat appends a copy number to every document so that nothing is an exact duplicate (exact
duplicates would be dropped and measure nothing). The input is split into several files so that the
worker processes have something to share. Peak RSS is measured for the whole process tree (driver plus
workers) by polling /proc, since the work happens in child processes.

    python benchmarks/ingest.py                 # 500 MB, 2 workers, 3 repeats
    python benchmarks/ingest.py --mb 100 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
C4 = REPO.parent / "shared" / "data" / "cc" / "c4_sample.jsonl"


def build_input(out_dir: Path, target_mb: int, n_files: int) -> int:
    """Write >= target_mb of JSONL (C4 documents repeated with a copy suffix) over n_files files."""
    docs = [json.loads(line)["text"] for line in C4.read_text(encoding="utf-8").splitlines() if line.strip()]
    files = [open(out_dir / f"c4_{i:02d}.jsonl", "w", encoding="utf-8") for i in range(n_files)]
    written = copy = 0
    while written < target_mb * 1e6:
        f = files[copy % n_files]
        for text in docs:
            line = json.dumps({"text": f"{text}\n(copy {copy})"}) + "\n"
            f.write(line)
            written += len(line.encode())
        copy += 1
    for f in files:
        f.close()
    return written


def tree_rss(pid: int) -> dict[int, tuple[int, str]]:
    """{pid: (resident bytes, command)} for a process and all its descendants (children of every thread,
    so processes started from a pool's or Ray's threads are found too)."""
    out = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                rss = next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:")), 0)
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            out[p] = (rss, cmd)
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            continue
    return out


def run_once(inputs: list[Path], store: Path, workers: int) -> tuple[float, int, dict]:
    shutil.rmtree(store, ignore_errors=True)
    cmd = [sys.executable, "-m", "corpora", "--store", str(store), "ingest", "c4x", *map(str, inputs),
           "--workers", str(workers), "--json"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0
    per_process: dict[int, tuple[int, str]] = {}
    done = threading.Event()

    def poll():
        nonlocal peak
        while not done.is_set():
            tree = tree_rss(proc.pid)
            peak = max(peak, sum(r for r, _ in tree.values()))
            for p, (r, cmd) in tree.items():
                if r > per_process.get(p, (0, ""))[0]:
                    per_process[p] = (r, cmd)
            time.sleep(0.05)

    t = threading.Thread(target=poll)
    t.start()
    out, _ = proc.communicate()
    elapsed = time.perf_counter() - t0
    done.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed with exit code {proc.returncode}")
    report = json.loads(out)
    report["per_process_peak_mb"] = {f"{p} {cmd[:60]}": round(r / 1e6) for p, (r, cmd) in per_process.items()}
    return elapsed, peak, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=500, help="input size in MB (>= 500 for the issue's figure)")
    ap.add_argument("--files", type=int, default=8, help="number of input files")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not C4.exists():
        raise SystemExit(f"{C4} is absent: this benchmark needs ../shared/data")
    with tempfile.TemporaryDirectory(prefix="synthmix-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        n_bytes = build_input(tmp / "in", args.mb, args.files)
        inputs = sorted((tmp / "in").glob("*.jsonl"))
        # baseline in the same run: just reading the bytes (what the disk/page cache gives)
        t0 = time.perf_counter()
        for p in inputs:
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass
        read_s = time.perf_counter() - t0
        runs = [run_once(inputs, tmp / "store", args.workers) for _ in range(args.repeats)]
    secs = statistics.median(r[0] for r in runs)
    peak = max(r[1] for r in runs)
    result = {
        "input_mb": round(n_bytes / 1e6, 1), "files": args.files, "workers": args.workers,
        "docs": runs[0][2]["n_docs"], "elapsed_s_median": round(secs, 2),
        "elapsed_s_all": [round(r[0], 2) for r in runs],
        "ingest_mb_per_s": round(n_bytes / 1e6 / secs, 2), "raw_read_mb_per_s": round(n_bytes / 1e6 / read_s, 1),
        "peak_rss_mb": round(peak / 1e6, 1), "peak_rss_under_1gb": peak < 1e9,
        "per_process_peak_mb": runs[0][2]["per_process_peak_mb"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")


if __name__ == "__main__":
    main()
