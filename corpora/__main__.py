"""python -m corpora: build, inspect and query a synthmix store.

Examples:
    python -m corpora demo
    python -m corpora ingest cc ../shared/data/cc/c4_sample.jsonl --role train
    python -m corpora ingest web crawl/*.warc.gz --workers 2
    python -m corpora list --json
    python -m corpora show wiki
    python -m corpora sql "SELECT corpus, count(*) FROM documents GROUP BY corpus"
    python -m corpora export cc --format jsonl --out cc.jsonl
    python -m corpora dedup cc --out cc_dedup
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime
import decimal
import json
import logging
import math
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from corpora.cli import run_command
from corpora.readers import FORMATS, TEXT_MODES, ReaderConfig
from corpora.store import ROLES, Store, resolve_store_path


def _print_table(table: pa.Table, max_width: int = 60) -> None:
    """A plain aligned text table (long cells cut to max_width)."""
    cols = table.column_names
    rows = [[_cell(v, max_width) for v in row.values()] for row in table.to_pylist()]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def _cell(value, max_width: int) -> str:
    s = "NULL" if value is None else str(value).replace("\n", " ")
    return s if len(s) <= max_width else s[: max_width - 1] + "…"


def _open(args, create: bool = False) -> Store:
    return Store(resolve_store_path(args.store), create=create)


def cmd_ingest(args) -> int:
    from corpora.ingest import IngestConfig, ingest

    cfg = IngestConfig(
        corpus=args.name, kind=args.kind, role=args.role, synthetic_type=args.synthetic_type,
        format=args.format, workers=args.workers,
        reader=ReaderConfig(text_field=args.text_field, text_mode=args.text_mode,
                            html_extractor=args.html_extractor),
    )
    store = _open(args, create=True)
    report = ingest(store, args.paths, cfg, progress=not args.json)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(f"{report.corpus}: +{report.n_docs} documents from {report.n_files} file(s) "
              f"({report.n_files_skipped} already done) in {report.elapsed_s:.1f}s; "
              f"{report.n_duplicates} exact duplicates dropped, {report.n_already_present} already present")
        if report.rejects_by_reason:
            print("rejected: " + ", ".join(f"{k}={v}" for k, v in report.rejects_by_reason.items())
                  + f"  (SELECT * FROM rejects WHERE run_id = '{report.run_id}')")
    # the same answer on every run: do the inputs hold any document at all (now or in an earlier run)?
    files = [str(Path(p).resolve()) for p in args.paths]
    (n_held,) = store.catalog_rows(
        "SELECT coalesce(sum(n_docs + n_duplicates), 0) FROM ingest_files WHERE corpus = ? AND list_contains(?, file)",
        [report.corpus, files])[0]
    if n_held == 0:
        print(f"error: no documents in {', '.join(args.paths)}: every record was rejected "
              f"or the input is empty; see SELECT * FROM rejects WHERE corpus = '{report.corpus}'", file=sys.stderr)
        return 2
    return 0


def cmd_list(args) -> int:
    corpora = _open(args).corpora()
    rows = [{"corpus": c.name, "kind": c.kind, "synthetic_type": c.synthetic_type, "role": c.role,
             "docs": c.n_docs, "mb": round(c.n_bytes / 1e6, 2), "shards": c.n_shards} for c in corpora]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        _print_table(pa.Table.from_pylist(rows))
    else:
        print("the store has no corpora yet: python -m corpora demo, or python -m corpora ingest")
    return 0


def cmd_show(args) -> int:
    store = _open(args)
    c = store.corpus(args.name)
    samples = store.scan(args.name).select("doc_id", "source", "text").head(args.samples).collect()
    runs = store.sql("SELECT run_id, started_at, n_docs, n_duplicates, n_rejects, rejects_by_reason, status "
                     "FROM ingest_runs WHERE corpus = ? ORDER BY started_at", [args.name]).to_pylist()
    info = {"corpus": c.name, "kind": c.kind, "synthetic_type": c.synthetic_type, "role": c.role,
            "docs": c.n_docs, "bytes": c.n_bytes, "shards": c.n_shards, "content_hash": c.content_hash,
            "meta": c.meta, "ingest_runs": runs, "samples": samples.to_dicts()}
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{c.name}: {c.kind}{'/' + c.synthetic_type if c.synthetic_type else ''}, role {c.role}, "
          f"{c.n_docs} docs, {c.n_bytes / 1e6:.2f} MB in {c.n_shards} shard(s)")
    for r in runs:
        print(f"  ingest {r['run_id']}: +{r['n_docs']} docs, {r['n_duplicates']} duplicates, "
              f"{r['n_rejects']} rejects {r['rejects_by_reason']} [{r['status']}]")
    for s in samples.to_dicts():
        print(f"\n[{s['doc_id']}] {s['source']}\n  {_cell(s['text'], 300)}")
    return 0


def _json_value(v):
    """A query value as JSON: numbers stay numbers (HUGEINT, DECIMAL), NaN/inf become null, bytes base64."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, decimal.Decimal):
        if not v.is_finite():
            return None
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, datetime.timedelta):
        return v.total_seconds()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, tuple) and len(x) == 2 for x in v) and v:  # a MAP comes back as (key, value) pairs
            return {str(k): _json_value(x) for k, x in v}
        return [_json_value(x) for x in v]
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return str(v)


def cmd_sql(args) -> int:
    table = _open(args).sql(args.query)
    if args.json:
        print(json.dumps([_json_value(r) for r in table.to_pylist()], indent=2, allow_nan=False))
    elif args.csv:
        w = csv.writer(sys.stdout)
        w.writerow(table.column_names)
        for row in table.to_pylist():
            w.writerow(row.values())
    else:
        _print_table(table, max_width=args.max_width)
    return 0


def cmd_export(args) -> int:
    store = _open(args)
    store.corpus(args.name)
    out = Path(args.out or f"{args.name}.{args.format}")
    from corpora.store import atomic_path

    n = 0
    with atomic_path(out) as tmp:
        if args.format == "parquet":
            writer = None
            for batch in store.iter_batches(args.name):
                writer = writer or pq.ParquetWriter(tmp, batch.schema, compression="zstd")
                writer.write_batch(batch)
                n += batch.num_rows
            if writer:
                writer.close()
            else:
                pq.write_table(pa.table({}), tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for batch in store.iter_batches(args.name):
                    for row in batch.to_pylist():
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
                        n += 1
    summary = {"corpus": args.name, "docs": n, "path": str(out), "format": args.format}
    print(json.dumps(summary) if args.json else f"exported {n} documents of {args.name} to {out}")
    return 0


def cmd_rm(args) -> int:
    _open(args).remove_corpus(args.name)
    print(f"removed corpus {args.name}")
    return 0


def cmd_demo(args) -> int:
    from corpora.demo import build_demo

    store = _open(args, create=True)
    with store.writer("python -m corpora demo"):
        reports = build_demo(store, progress=not args.json)
    corpora = store.corpora()
    if args.json:
        print(json.dumps({"store": str(store.root), "ingest": [r.as_dict() for r in reports],
                          "corpora": [{"corpus": c.name, "role": c.role, "docs": c.n_docs} for c in corpora]},
                         indent=2))
        return 0
    print(f"demo store at {store.root}")
    for c in corpora:
        print(f"  {c.name:<8} {c.kind:<9} role={c.role:<5} {c.n_docs:>5} docs  {c.n_bytes / 1e6:.2f} MB")
    for r in reports:
        if r.rejects_by_reason:
            print(f"  {r.corpus}: skipped " + ", ".join(f"{k}={v}" for k, v in r.rejects_by_reason.items()))
    return 0


def _curate_with_lock(run_curate_cli):
    """`corpora dedup` writes a corpus: hold the writer lock for the whole command."""
    def run(args) -> int:
        with _open(args).writer(f"python -m corpora dedup {args.corpus} --out {args.out}"):
            return run_curate_cli(args)
    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m corpora", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="store directory (default: $SYNTHMIX_STORE, else ./store)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help, **kw):
        sp = sub.add_parser(name, help=help, description=help, **kw)
        sp.add_argument("--store", default=argparse.SUPPRESS, help="store directory")
        sp.set_defaults(func=func)
        return sp

    sp = add("ingest", cmd_ingest, "ingest files (JSONL, Parquet, text, WARC, MediaWiki XML) into a corpus")
    sp.add_argument("name", help="corpus name, e.g. cc or wiki")
    sp.add_argument("paths", nargs="+", help="input files (.jsonl[.gz|.zst|.bz2], .parquet, .txt, .warc.gz, .xml.bz2)")
    sp.add_argument("--kind", choices=["natural", "synthetic"], default="natural")
    sp.add_argument("--synthetic-type", help="hq, qa, txbk or your own (with --kind synthetic)")
    sp.add_argument("--role", choices=ROLES, default="train")
    sp.add_argument("--format", choices=FORMATS, help="input format (default: from each file name)")
    sp.add_argument("--text-field", default="text", help="JSONL/Parquet field holding the text")
    sp.add_argument("--text-mode", choices=TEXT_MODES, default="line",
                    help="plain text: a document per line, per blank-line-separated block, per file, "
                         "or per WikiText article (' = Title = ' lines)")
    sp.add_argument("--html-extractor", choices=["resiliparse", "trafilatura"], default="resiliparse")
    sp.add_argument("--workers", type=int, default=0, help="worker processes (default: number of cores)")
    sp.add_argument("--json", action="store_true", help="print the ingest report as JSON")

    sp = add("list", cmd_list, "list the corpora in the store")
    sp.add_argument("--json", action="store_true")

    sp = add("show", cmd_show, "show a corpus: counts, bytes, ingest runs and a few sample documents")
    sp.add_argument("name")
    sp.add_argument("--samples", type=int, default=3)
    sp.add_argument("--json", action="store_true")

    sp = add("sql", cmd_sql, "run a read-only SQL query over the catalog (documents, results, ...)")
    sp.add_argument("query", help='e.g. "SELECT corpus, count(*) FROM documents GROUP BY corpus"')
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="rows as a JSON list of objects")
    g.add_argument("--csv", action="store_true", help="rows as CSV")
    sp.add_argument("--max-width", type=int, default=60, help="cut table cells to this width")

    sp = add("export", cmd_export, "export a corpus as JSONL or Parquet")
    sp.add_argument("name")
    sp.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    sp.add_argument("--out", help="output file (default NAME.FORMAT)")
    sp.add_argument("--json", action="store_true")

    sp = add("rm", cmd_rm, "remove a corpus and its shards")
    sp.add_argument("name")

    sp = add("demo", cmd_demo, "build the demo store (cc: 300 news articles, wiki: 106 Wikipedia articles)")
    sp.add_argument("--json", action="store_true")

    try:
        from stats import dedup
    except ImportError:
        dedup = None
    if dedup is not None and hasattr(dedup, "add_curate_arguments"):
        sp = add("dedup", _curate_with_lock(dedup.run_curate_cli),
                 "write a near-deduplicated copy of a corpus (one document per cluster)")
        dedup.add_curate_arguments(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return run_command("", lambda: args.func(args), user_errors=(ValueError,))


if __name__ == "__main__":
    sys.exit(main())
