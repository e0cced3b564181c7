"""Curation: a new corpus with one document per near-duplicate cluster (`curate`), and its command
`python -m stats.dedup curate CORPUS --out NEW` (also `synthmix corpora dedup`)."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from corpora.cli_common import add_common_args, setup_logging, show_progress
from corpora.exits import run_command
from corpora.results import declare
from corpora.store import Store, StoreError, resolve_store_path
from stats.dedup.analyze import analyze_corpus
from stats.dedup.config import DedupConfig, add_config_arguments, config_from_args

declare("dedup_dropped", {
    "out": "str, the deduplicated corpus", "corpus": "str", "doc_id": "str", "shard": "int", "row": "int",
    "cluster_id": "str", "cluster_size": "int", "kept_doc_id": "str", "kept_shard": "int", "kept_row": "int",
    "jaccard_est": "float", "reason": "str", "threshold": "float", "num_perm": "int", "ngram": "int", "seed": "int",
    "config": "json DedupConfig"},
    "One row per document `python -m stats.dedup --out` left out, with the kept document of its cluster.")


# ---------------------------------------------------------------------------------------------- curation
@dataclasses.dataclass
class CurateResult:
    corpus: str
    out: str
    n_docs: int
    n_kept: int
    n_dropped: int
    n_already_written: int
    summary: dict

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def curate(store: Store, corpus: str, out: str, cfg: DedupConfig, progress: bool = True) -> CurateResult:
    """Write corpus `out`: `corpus` with one document per near-duplicate cluster (the first in corpus order).

    Dropped documents are listed in result table `dedup_dropped` (part `out`) with the document kept in
    their place and the reason. Empty and too-short documents are not duplicates and are kept. Rerunning
    after an interruption appends only the shards not yet written.
    """
    info = store.corpus(corpus)
    report = analyze_corpus(store, corpus, cfg, progress)
    c = report.clusters
    dropped = c.filter(~pl.col("is_representative"))
    reps = c.filter(pl.col("is_representative")).select(
        "cluster_id", kept_doc_id="doc_id", kept_shard="shard", kept_row="row")
    dropped_df = (dropped.join(reps, on="cluster_id", how="left")
                  .select(pl.lit(out).alias("out"), "corpus", "doc_id", "shard", "row", "cluster_id",
                          "cluster_size", "kept_doc_id", "kept_shard", "kept_row",
                          pl.col("jaccard_to_representative").alias("jaccard_est"),
                          pl.when(pl.col("jaccard_to_representative") >= 1.0)
                          .then(pl.lit("near_duplicate:identical_signature"))
                          .otherwise(pl.lit("near_duplicate")).alias("reason"),
                          "threshold", "num_perm", "ngram", "seed", "config"))
    meta = {"dedup_of": corpus, "dedup_config": json.loads(cfg.as_json()),
            "dedup_content_hash": report.summary["content_hash"],
            "n_dropped": dropped_df.height, **({"source": info.meta["source"]} if "source" in info.meta else {})}
    with store.lock(wait_s=60, purpose=f"dedup {corpus} -> {out}"):
        if store.has_corpus(out):
            cur = store.corpus(out)
            if cur.meta.get("dedup_of") != corpus or cur.meta.get("dedup_config") != meta["dedup_config"] \
                    or cur.meta.get("dedup_content_hash") != meta["dedup_content_hash"]:
                raise StoreError(f"corpus {out!r} already exists and is not this deduplication of {corpus!r}; "
                                 f"`python -m corpora rm {out}` first or pick another --out")
            # resuming: skip what an interrupted run already wrote
            written = np.array(sorted(store.doc_ids(out)), dtype=str)
        else:
            store.create_corpus(out, info.kind, info.role, info.synthetic_type, meta)
            written = np.zeros(0, dtype=str)
        drop_by_shard = {int(sh): np.asarray(rows, dtype=np.int64)
                         for sh, rows in dropped_df.group_by("shard").agg(pl.col("row")).iter_rows()}
        n_kept = n_prev = 0
        for s in tqdm(store.shards(corpus), desc=f"dedup {corpus} -> {out}", unit="shard", disable=not progress):
            table = pq.read_table(s.path)
            keep = np.ones(table.num_rows, dtype=bool)
            keep[drop_by_shard.get(s.shard, np.zeros(0, np.int64))] = False
            n_kept += int(keep.sum())
            if len(written):
                done = np.isin(table.column("doc_id").to_numpy(zero_copy_only=False).astype(str), written)
                n_prev += int((keep & done).sum())
                keep &= ~done
            if keep.any():
                store.append_shard(out, table.filter(pa.array(keep)))
    store.put_result("dedup_dropped", out, dropped_df)
    return CurateResult(corpus, out, report.summary["n_docs"], n_kept, dropped_df.height, n_prev, report.summary)



# ---------------------------------------------------------------------------------------------- CLI
EXAMPLE = "python -m stats.dedup curate cc --out cc_dedup"


def add_curate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m stats.dedup curate CORPUS --out NEW`."""
    parser.add_argument("corpus", help="corpus to deduplicate")
    parser.add_argument("--out", required=True, help="name of the new, deduplicated corpus")
    add_config_arguments(parser)
    add_common_args(parser, overwrite="replace an existing --out corpus (default: resume it if it is this "
                                      "deduplication, else refuse)")


def build_curate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stats.dedup curate",
        description="Write a near-deduplicated copy of a corpus: one document per near-duplicate cluster (the "
                    "first in corpus order); dropped documents and why go to result table dedup_dropped.",
        epilog=f"example:\n  {EXAMPLE}\n  synthmix corpora dedup cc --out cc_dedup   # the same command",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_curate_arguments(p)
    return p


def run_curate_cli(args) -> int:
    """Curate under the store's writer lock, print a summary; usage errors return 2 (corpora.exits)."""
    setup_logging(args)
    return run_command("", lambda: _curate(args), user_errors=(ValueError,))


def _curate(args) -> int:
    cfg = config_from_args(args)
    if args.out == args.corpus:
        raise ValueError(f"--out {args.out} is the corpus itself; name a new corpus")
    store = Store(resolve_store_path(args.store))
    with store.writer(f"python -m stats.dedup curate {args.corpus} --out {args.out}"):
        if getattr(args, "overwrite", False) and store.has_corpus(args.out):
            store.remove_corpus(args.out)
        result = curate(store, args.corpus, args.out, cfg, progress=show_progress(args))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
        return 0
    print(f"{result.corpus} -> {result.out}: {result.n_docs} documents, kept {result.n_kept}, "
          f"dropped {result.n_dropped} near-duplicates "
          f"(threshold {cfg.threshold}, {cfg.ngram}-word shingles, {cfg.num_perm} permutations)")
    print(f"dropped documents and why: python -m corpora sql \"SELECT * FROM dedup_dropped WHERE out = '{result.out}'\"")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_curate_cli(build_curate_parser().parse_args(argv))
