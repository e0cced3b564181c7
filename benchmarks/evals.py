"""Downstream evaluation speed on CPU: items/s of `stats.evals` for a demo-sized run and for SmolLM2-135M.

    python benchmarks/evals.py [--tasks arc_easy:rc_0shot,hellaswag:rc_0shot] [--limit 100] [--runs 4]
                               [--smollm2-limit 40] [--dtype auto]

The demo model is the demo study's shape (`debugmodel`, a 2048-token BPE trained on the demo's Lee text,
seq_len 128), randomly initialised (speed does not depend on the weights) and saved as `--runs` finished
runs. The first run pays the request encoding, later runs of the same tokenizer reuse it (as a sweep
does): per-run time is the median over the later ones. SmolLM2-135M-Instruct is the demo generator, as a
Hugging Face directory (converted once into the synthmix cache). Nothing is cached between measurements
(a fresh store each time). Prints one JSON object with wall and CPU seconds (CPU time is what an idle
machine's wall time approaches with one busy thread) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository's packages, not benchmarks/train.py as `train`


def _demo_runs(store, n_runs: int) -> list[dict]:
    import polars as pl
    import torch

    from corpora.demo import LEE_FILE, demo_data_dir
    from corpora.store import make_documents
    from train.loop import RunConfig, final_weights_path, save_final_weights
    from train.model import Transformer, build_model_config
    from train.tokenizer import train_tokenizer

    texts = [t for t in (demo_data_dir() / LEE_FILE).read_text().splitlines() if t.strip()]
    store.create_corpus("cc", "natural", "train", None)
    store.append_shard("cc", make_documents([{"text": t, "source": "lee"} for t in texts]))
    train_tokenizer(store, "demo_bpe", ["cc"], vocab_size=2048)
    rows = []
    for i in range(n_runs):
        torch.manual_seed(i)
        model = Transformer(build_model_config("debugmodel", 2048, max_seq_len=128))
        run_id = f"bench{i}"
        save_final_weights(final_weights_path(store, run_id), model,
                           RunConfig(run_id=run_id, mixture="m", model="debugmodel", tokens=1, weights_dtype="bf16"))
        rows.append({"run_id": run_id, "sweep": "bench", "mixture": "m", "model": "debugmodel", "tokens": 1,
                     "seed": i, "status": "done", "tokenizer": "demo_bpe"})
    store.put_result("runs", "bench", pl.DataFrame(rows))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="arc_easy:rc_0shot,hellaswag:rc_0shot,piqa:rc_0shot")  # the demo's
    p.add_argument("--limit", type=int, default=100, help="items per task for the demo model")
    p.add_argument("--runs", type=int, default=4, help="demo runs (the first pays the encoding)")
    p.add_argument("--smollm2-limit", type=int, default=40, help="items per task for SmolLM2 (0: skip)")
    p.add_argument("--dtype", default="auto")
    args = p.parse_args()

    from corpora.store import Store
    from stats.evals import EvalConfig, ModelSpec, evaluate_model, load_tasks

    specs = args.tasks.split(",")
    out = {"tasks": specs, "dtype_requested": args.dtype}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store", create=True)
        runs = _demo_runs(store, args.runs)
        cfg = EvalConfig(tasks=specs, limit=args.limit, dtype=args.dtype)
        tasks = load_tasks(specs, args.limit)
        n_items = sum(len(t.items) for t in tasks)
        encodings, times, cpu = {}, [], []
        for run in runs:
            t0, c0 = time.perf_counter(), time.process_time()
            df = evaluate_model(store, ModelSpec(store=str(store.root), run_id=run["run_id"]), tasks, cfg, run=run,
                                progress=False, encodings=encodings)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        later = times[1:] or times
        out["demo"] = {"items": n_items, "first_run_s": round(times[0], 2),
                       "per_run_s_median": round(statistics.median(later), 3),
                       "per_run_cpu_s_median": round(statistics.median(cpu[1:] or cpu), 3),
                       "items_per_s": round(n_items / statistics.median(later), 1), "dtype": df["dtype"][0]}
        if args.smollm2_limit:
            from synth.backends import convert_gguf, default_cache_dir, find_smollm2_gguf

            hf_dir = str(convert_gguf(find_smollm2_gguf(), default_cache_dir()))
            tasks = load_tasks(specs, args.smollm2_limit)
            n_items = sum(len(t.items) for t in tasks)
            t0, c0 = time.perf_counter(), time.process_time()
            df = evaluate_model(store, ModelSpec(path=hf_dir), tasks, EvalConfig(tasks=specs, dtype=args.dtype),
                                progress=False)
            elapsed = time.perf_counter() - t0
            out["smollm2_135m"] = {"items": n_items, "elapsed_s": round(elapsed, 1),
                                   "cpu_s": round(time.process_time() - c0, 1),
                                   "items_per_s": round(n_items / elapsed, 2), "dtype": df["dtype"][0]}
    out["load_avg"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
