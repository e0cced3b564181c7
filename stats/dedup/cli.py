"""`python -m stats.dedup`: parse flags, run one analysis (or `curate`), print a summary."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from corpora.cli_common import add_common_args, setup_logging, show_progress
from corpora.exits import run_command
from corpora.store import Store, resolve_store_path
from stats.dedup.analyze import DedupReport, _capped_note, analyze_against, analyze_corpus
from stats.dedup.config import add_config_arguments, config_from_args
from stats.dedup.curate import EXAMPLE as CURATE_EXAMPLE
from stats.dedup.curate import main as curate_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stats.dedup",
        description="Near-duplicate analysis with MinHash LSH, inside a corpus or against another corpus.",
        epilog="examples:\n  python -m stats.dedup --corpus cc\n  python -m stats.dedup --corpus hq --against cc\n"
               f"  {CURATE_EXAMPLE}   # curation: keep one document per cluster (see its --help)\n"
               "text normalisation: NFKC, lower case, words = runs of letters/digits/_ (punctuation and "
               "whitespace ignored); a shingle is --ngram consecutive words",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="corpus to analyse")
    p.add_argument("--against", help="compare with this corpus instead of within --corpus")
    p.add_argument("--examples", type=int, default=5, help="clusters / matches to show (default 5)")
    add_config_arguments(p)
    add_common_args(p, overwrite="hash every shard again, ignoring cached signatures")
    return p


def _print_report(report: DedupReport) -> None:
    s = report.summary
    skipped = f" (skipped: {s['n_empty']} empty, {s['n_too_short']} shorter than one shingle)" \
        if s["n_empty"] or s["n_too_short"] else ""
    if s["mode"] == "within":
        print(f"{s['corpus']}: {s['n_docs']} documents{skipped}, {s['n_clusters']} near-duplicate clusters, "
              f"{s['n_docs_in_clusters']} documents in clusters, duplicate rate {s['dup_rate']:.2%} "
              f"(threshold {s['threshold']}, {s['ngram']}-word shingles, {s['num_perm']} permutations)"
              f"{_capped_note(s)}")
        for e in report.examples:
            print(f"  [{e['cluster_size']} docs] {e['snippet']}")
    else:
        print(f"{s['corpus']} vs {s['against']}: {s['n_with_match']} of {s['n_docs_hashed']} documents "
              f"({s['share_with_match']:.2%}) have a near-duplicate in {s['against']}{skipped}{_capped_note(s)}")
        for e in report.examples:
            print(f"  J~{e['jaccard_est']:.2f} {e['snippet'][:70]!r}\n          ~ {e['against_snippet'][:70]!r}")
    if s.get("n_source_found") is not None:
        if s["n_source_found"]:
            print(f"similarity to own source document ({s['n_source_found']} found, {s['n_source_missing']} "
                  f"missing): mean {s['source_jaccard_mean']:.3f}, p10 {s['source_jaccard_p10']:.3f}, median "
                  f"{s['source_jaccard_median']:.3f}, p90 {s['source_jaccard_p90']:.3f}; "
                  f"{s['source_share_near_dup']:.2%} are near-copies of their source")
        else:
            print(f"similarity to own source document: no source document found ({s['n_source_missing']} missing)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["curate"]:
        return curate_main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args)
    return run_command("", lambda: _run(args), user_errors=(ValueError,))  # the one exit path (corpora.exits)


def _run(args) -> int:
    cfg = dataclasses.replace(config_from_args(args), recompute=args.overwrite)
    store = Store(resolve_store_path(args.store))
    with store.writer("python -m stats.dedup"):
        if args.against:
            report = analyze_against(store, args.corpus, args.against, cfg, show_progress(args), args.examples)
        else:
            report = analyze_corpus(store, args.corpus, cfg, show_progress(args), args.examples)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        _print_report(report)
    return 0


