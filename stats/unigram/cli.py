"""`python -m stats.unigram`: parse flags, run the comparisons, print them."""

from __future__ import annotations

import argparse
import dataclasses
import json

from corpora.cli_common import add_common_args, setup_logging
from corpora.executor import add_engine_args
from corpora.exits import run_command
from corpora.store import Store, resolve_store_path
from corpora.tokenizers import DEFAULT_TOKENIZER
from stats.unigram.analyze import UnigramReport, run_unigram
from stats.unigram.counts import DEFAULT_ALPHA, UnigramConfig


def format_report(report: UnigramReport) -> str:
    lines = []
    for r in report.comparisons:
        lines += [
            (f"train={r['train']}  test={r['test']}  tokenizer={r['tokenizer']}  "
             f"alpha={r['alpha']:g} (additive smoothing of train; logs in nats)"),
            f"  tokens          test {r['n_tokens_test']:>12,}   train {r['n_tokens_train']:>12,}",
            f"  distinct types  test {r['n_types_test']:>12,}   train {r['n_types_train']:>12,}",
            f"  type coverage   {r['type_coverage']:.4f}    token coverage {r['token_coverage']:.4f}",
            f"  KL(test||train) {r['kl_nats']:.4f} nats ({r['kl_bits']:.4f} bits)    JS {r['js_nats']:.4f} nats",
            f"  entropy         test {r['entropy_test_nats']:.4f} nats   train {r['entropy_train_nats']:.4f} nats",
        ]
        top = json.loads(r["top_kl_tokens"])
        if top:
            lines.append(f"  top {len(top)} test tokens by KL contribution:")
            lines.append(f"    {'token':<24} {'p_test':>10} {'q_train':>10} {'n_test':>8} {'n_train':>8} {'KL nats':>9}")
            for t in top:
                shown = repr(t["token"])  # quoted, so leading spaces and newlines show
                lines.append(f"    {shown:<24} {t['p_test']:>10.2e} {t['q_train']:>10.2e} "
                             f"{t['count_test']:>8,} {t['count_train']:>8,} {t['kl_nats']:>9.5f}")
        lines.append("")
    if len(report.comparisons) > 1:
        trains = list(dict.fromkeys(r["train"] for r in report.comparisons))
        tests = list(dict.fromkeys(r["test"] for r in report.comparisons))
        cell = {(r["train"], r["test"]): r for r in report.comparisons}
        width = max(12, *(len(t) + 2 for t in tests))
        for metric in ("kl_nats", "token_coverage", "type_coverage"):
            lines.append(f"{metric} (rows: train, columns: test)")
            lines.append(" " * 24 + "".join(f"{t:>{width}}" for t in tests))
            for tr in trains:
                lines.append(f"{tr[:23]:<24}" + "".join(f"{cell[tr, te][metric]:>{width}.4f}" for te in tests))
            lines.append("")
    for s in report.shrinkage:
        lines.append(
            f"shrinkage {s['synthetic']} vs source {s['source']} at {s['budget_tokens']:,} tokens: types "
            f"{s['types_at_budget_synthetic']:,.0f} vs {s['types_at_budget_source']:,.0f} "
            f"(ratio {s['types_ratio']:.3f}), entropy {s['entropy_at_budget_synthetic_nats']:.4f} vs "
            f"{s['entropy_at_budget_source_nats']:.4f} nats")
    lines.append(f"({report.elapsed_s:.2f} s)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stats.unigram",
        description="Token unigram coverage, KL(test||train), JS and entropy between training and test corpora "
                    "(nats; additive smoothing alpha on train). Example: "
                    "python -m stats.unigram --train cc --train cc=0.67,hq=0.33 --test wiki",
    )
    p.add_argument("--train", action="extend", nargs="+", default=[], metavar="CORPUS|MIX",
                   help="training corpus, or mixture NAME=WEIGHT,... with weights summing to 1 (e.g. cc=0.67,hq=0.33); "
                        "several (--train cc hq, or --train repeated) give the full matrix")
    p.add_argument("--test", action="extend", nargs="+", default=[], metavar="CORPUS|MIX",
                   help="test corpus or mixture; several give the full matrix")
    p.add_argument("--tokenizer", default=DEFAULT_TOKENIZER,
                   help="cl100k_base (offline), a tiktoken name or .tiktoken file, smollm2, a tokenizer.json/"
                        "GGUF/directory, or a tokenizer registered in the store (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help="additive smoothing pseudo-count per vocabulary id of train for KL (default: %(default)s)")
    p.add_argument("--top", type=int, default=10, help="test tokens with the largest KL contribution to list")
    add_engine_args(p, workers_help="worker processes (or Ray tasks), one shard each (0: automatic)")
    p.add_argument("--threads", type=int, default=0, help="tokenizer threads per process (0: automatic)")
    p.add_argument("--batch-size", type=int, default=1024, help="documents per record batch")
    p.add_argument("--no-shrinkage", dest="shrinkage", action="store_false",
                   help="skip the shrinkage comparison of synthetic corpora with their sources")
    p.add_argument("--n-subsamples", type=int, default=5, help="subsamples for entropy at equal token budget")
    p.add_argument("--seed", type=int, default=0, help="seed of those subsamples")
    add_common_args(p, overwrite="ignore cached counts and count again (old spelling: --recount)",
                    overwrite_aliases=("--recount",))
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    fields = {f.name for f in dataclasses.fields(UnigramConfig)}
    cfg = UnigramConfig(**{k: v for k, v in vars(args).items() if k in fields}, recount=args.overwrite)
    setup_logging(args)
    return run_command("", lambda: _run(args, cfg))  # the one exit path (corpora.exits)


def _run(args, cfg: UnigramConfig) -> int:
    store = Store(resolve_store_path(args.store))
    with store.writer("python -m stats.unigram"):
        report = run_unigram(store, cfg)  # UnknownCorpus, UnknownTokenizer, UnigramError: StoreErrors, exit 2
    if args.json:
        out = {
            "comparisons": [{**r, "top_kl_tokens": json.loads(r["top_kl_tokens"]),
                             "created_at": r["created_at"].isoformat()} for r in report.comparisons],
            "shrinkage": [{**s, "created_at": s["created_at"].isoformat()} for s in report.shrinkage],
            "elapsed_s": report.elapsed_s,
        }
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0
