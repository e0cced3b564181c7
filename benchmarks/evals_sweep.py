"""Decisions per metric on a small real sweep (not the demo study): how reliable each downstream metric is.

    python benchmarks/evals_sweep.py STORE_DIR [--limit 100]

Gensim's Lee news text split into two natural corpora (a: 150 articles, b: 110), a 1024-token BPE, three
mixtures (a, a+b 50/50, b) x debugmodel x 16k/32k/64k tokens (wsd branches) x 3 seeds = 27 runs, each
evaluated on the demo's [evals] tasks (ARC-Easy, HellaSwag, PIQA 0-shot, --limit items each); then
`stats.evidence.decisions` and the report's per-metric reliability table (decision accuracy from the smaller
budgets to 64k, signal-to-noise). Prints the wall times, that table and the seed-mean metrics at 64k. A rerun
on the same STORE_DIR trains and scores nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository's packages, not benchmarks/train.py as `train`


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store")
    p.add_argument("--limit", type=int, default=100)
    args = p.parse_args()

    import polars as pl

    from corpora.demo import LEE_FILE, demo_data_dir
    from corpora.store import Store, make_documents
    from reports.section_evals import metric_reliability
    from stats.evals import EvalConfig, evaluate_sweep
    from stats.evidence import decisions
    from train.sweep import parse_sweep, run_sweep
    from train.tokenizer import train_tokenizer

    texts = [t for t in (demo_data_dir() / LEE_FILE).read_text().splitlines() if t.strip()]
    store = Store(args.store, create=True)
    if not store.has_corpus("cc"):
        for name, part, role in (("cc", texts[:150], "train"), ("cc2", texts[150:260], "train"),
                                 ("wiki", texts[260:], "test")):
            store.create_corpus(name, "natural", role, None)
            store.append_shard(name, make_documents([{"text": t, "source": f"lee:{i}"} for i, t in enumerate(part)]))
        train_tokenizer(store, "t_bpe", ["cc", "cc2"], vocab_size=1024)
    mix = {"tokenizer": "t_bpe", "seq_len": 128, "tokens": 60000, "max_epochs": 400}
    doc = {"name": "mini", "val_tokens": 4096, "val_corpora": ["wiki"],
           "grid": {"mixtures": ["a", "ab", "b"], "models": ["debugmodel"], "tokens": ["16k", "32k", "64k"],
                    "lr": [3e-3], "seed": [0, 1, 2]},
           "run": {"batch_size": 16, "eval_tokens": 4096, "schedule": "wsd-branches"},
           "mixtures": {"a": {"parts": {"cc": 1.0}, **mix}, "ab": {"parts": {"cc": 0.5, "cc2": 0.5}, **mix},
                        "b": {"parts": {"cc2": 1.0}, **mix}}}
    t0 = time.perf_counter()
    run_sweep(store, parse_sweep(doc), progress=False)
    print(f"sweep: {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    evaluate_sweep(store, "mini", EvalConfig(tasks=["arc_easy:rc_0shot", "hellaswag:rc_0shot", "piqa:rc_0shot"],
                                             limit=args.limit), progress=False)
    print(f"evals: {time.perf_counter() - t0:.0f} s")
    decisions(store, "mini")
    pl.Config.set_tbl_rows(100)
    pl.Config.set_tbl_width_chars(200)
    print(metric_reliability(store))
    ev = store.read_result("evals").filter(pl.col("tokens") == 64000)
    print(ev.group_by("mixture", "task", "metric").agg(pl.col("value").mean()).sort("task", "metric", "mixture"))


if __name__ == "__main__":
    main()
