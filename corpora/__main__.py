"""python -m corpora: build, inspect and query a synthmix store.

Examples:
    python -m corpora demo
    python -m corpora ingest cc ../shared/data/cc/c4_sample.jsonl --role train
    python -m corpora ingest web crawl/*.warc.gz --workers 2
    python -m corpora list --json
    python -m corpora show wiki
    python -m corpora sql "SELECT corpus, count(*) FROM documents GROUP BY corpus"
    python -m corpora export cc --format jsonl --out cc.jsonl.gz
    python -m corpora export hq --format hf --out hq_hf        # load_dataset("hq_hf") reads it offline
    python -m corpora ingest hq2 hq_hf                         # a Hugging Face datasets folder

Near-deduplicated copies of a corpus are written by `python -m stats.dedup curate cc --out cc_dedup`
(or `synthmix corpora dedup cc --out cc_dedup`): curation needs the stats layer's clusters.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime
import decimal
import json
import math
import sys
import uuid
from pathlib import Path

from corpora.exits import exit_on_early_interrupt, run_command

if __name__ == "__main__":  # before pyarrow and DuckDB load: a Ctrl-C meanwhile is one line too
    exit_on_early_interrupt("")

import pyarrow as pa  # noqa: E402

from corpora.cli_common import build_command_parser, setup_logging, show_progress  # noqa: E402
from corpora.export import FORMATS as EXPORT_FORMATS  # noqa: E402
from corpora.readers import FORMATS, TEXT_MODES, InputError, ReaderConfig  # noqa: E402
from corpora.store import ROLES, SqlLimits, Store, resolve_store_path  # noqa: E402


# Shown under each command's --help (tests/test_cli_help.py checks that every command has one).
EXAMPLES = {
    "ingest": ["python -m corpora ingest cc data/*.jsonl.gz --role train",
               "python -m corpora ingest web crawl/*.warc.gz --workers 2",
               "python -m corpora ingest hq2 hq_hf            # a Hugging Face datasets folder (card kept in meta)"],
    "list": ["python -m corpora list --json"],
    "show": ["python -m corpora show wiki --samples 5"],
    "sql": ['python -m corpora sql "SELECT corpus, count(*) FROM documents GROUP BY corpus" --csv'],
    "export": ["python -m corpora export hq --format hf --out hq_hf   # then datasets.load_dataset('hq_hf')",
               "python -m corpora export cc --format jsonl --out cc.jsonl.gz"],
    "rm": ["python -m corpora rm cc_old"],
    "demo": ["python -m corpora --store /tmp/demo demo"],
}


def _print_table(cols: list[str], rows: list[dict], max_width: int = 60) -> None:
    """A plain aligned text table (long cells cut to max_width)."""
    rows = [[_cell(v, max_width) for v in row.values()] for row in rows]
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
    from corpora.ingest import IngestConfig, ingest, ingest_hf_folder

    reader = ReaderConfig(text_field=args.text_field, text_mode=args.text_mode, html_extractor=args.html_extractor)
    store = _open(args, create=True)
    folders = [p for p in args.paths if Path(p).is_dir()]
    if folders:  # a Hugging Face datasets folder: kind, type and role default to what its card says
        if len(args.paths) > 1:
            raise InputError(f"{folders[0]} is a folder: ingest a Hugging Face datasets folder on its own")
        report = ingest_hf_folder(store, folders[0], args.name, kind=args.kind, role=args.role,
                                  synthetic_type=args.synthetic_type, split=args.split, reader=reader,
                                  workers=args.workers, engine=args.engine, ray_address=args.ray_address,
                                  progress=show_progress(args))
    else:
        cfg = IngestConfig(
            corpus=args.name, kind=args.kind or "natural", role=args.role or "train",
            synthetic_type=args.synthetic_type, format=args.format, workers=args.workers, reader=reader,
            engine=args.engine, ray_address=args.ray_address,
        )
        report = ingest(store, args.paths, cfg, progress=show_progress(args))
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
        "SELECT coalesce(sum(n_docs + n_duplicates), 0) FROM ingest_files WHERE corpus = ? AND EXISTS "
        "(SELECT 1 FROM unnest(?) AS t(p) WHERE file = p OR starts_with(file, p || '/'))",  # a folder's files
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
        _print_table(list(rows[0]), rows)
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
        print(json.dumps(_json_value(info), indent=2, allow_nan=False))  # NaN/inf in a card's meta: null
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


def _rows(table: pa.Table) -> list[dict]:
    """A query result as Python rows; a value Python cannot hold (DuckDB's 'infinity' dates and timestamps,
    years past 9999) becomes text instead of ending the command."""
    columns = {}
    for name, column in zip(table.column_names, table.columns):
        try:
            columns[name] = column.to_pylist()
        except (ValueError, OverflowError):
            columns[name] = [_scalar(v) for v in column]
    names = table.column_names
    return [dict(zip(names, values)) for values in zip(*(columns[n] for n in names))] if names else []


def _scalar(value: pa.Scalar):
    try:
        return value.as_py()
    except (ValueError, OverflowError):
        raw = getattr(value, "value", None)  # the stored integer (days, or time units since the epoch)
        if raw is not None and abs(raw) >= 2**31 - 1 and (pa.types.is_date32(value.type) or abs(raw) >= 2**63 - 1):
            return "infinity" if raw > 0 else "-infinity"  # DuckDB's infinite dates and timestamps
        return f"out of range ({value.type}: {raw})"


def cmd_sql(args) -> int:
    limits = SqlLimits(max_rows=args.max_rows, timeout_s=args.timeout,
                       **({} if args.memory_limit is None else {"memory_mb": args.memory_limit}))
    table = _open(args).sql(args.query, limits=limits)
    rows = _rows(table)
    if args.json:
        print(json.dumps([_json_value(r) for r in rows], indent=2, allow_nan=False))
    elif args.csv:
        w = csv.writer(sys.stdout)
        w.writerow(table.column_names)
        for row in rows:
            w.writerow(row.values())
    else:
        _print_table(table.column_names, rows, max_width=args.max_width)
    return 0


def cmd_export(args) -> int:
    from corpora.export import ExportConfig, export_corpus

    cfg = ExportConfig(corpus=args.name, format=args.format, out=args.out,
                       tokenizer=None if args.tokenizer == "none" else args.tokenizer, split=args.split,
                       license=args.license, language=tuple(args.language or ()), overwrite=args.overwrite,
                       workers=args.workers, engine=args.engine, ray_address=args.ray_address)
    report = export_corpus(_open(args), cfg, progress=show_progress(args))
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        s = report.stats
        tokens = f", {s.n_tokens:,} {report.tokenizer} tokens" if report.tokenizer else ""
        print(f"exported {s.n_docs} documents of {args.name} ({s.n_bytes:,} bytes{tokens}) to {report.path}")
    return 0


def cmd_rm(args) -> int:
    _open(args).remove_corpus(args.name)
    print(f"removed corpus {args.name}")
    return 0


def cmd_demo(args) -> int:
    from corpora.demo import build_demo

    store = _open(args, create=True)
    with store.writer("python -m corpora demo"):
        reports = build_demo(store, progress=show_progress(args))
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


def _non_negative(kind: type):
    """An argparse type: a finite number of `kind` (int or float), 0 or more."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not 0 <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text} must be a finite number of 0 or more")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p, add_command = build_command_parser("python -m corpora", __doc__.splitlines()[0], EXAMPLES)

    def add(name, func, help, **kw):
        sp = add_command(name, help, **kw)
        sp.set_defaults(func=func)
        return sp

    sp = add("ingest", cmd_ingest, "ingest files (JSONL, Parquet, text, WARC, MediaWiki XML) or a Hugging Face "
                                   "datasets folder into a corpus", engine=True,
             workers_help="worker processes or Ray tasks (default: number of cores / of the cluster's CPUs)")
    sp.add_argument("name", help="corpus name, e.g. cc or wiki")
    sp.add_argument("paths", nargs="+", help="input files (.jsonl[.gz|.zst|.bz2], .parquet, .txt, .warc.gz, .xml.bz2), "
                                             "or one Hugging Face datasets folder (save_to_disk, or Parquet + README.md)")
    sp.add_argument("--kind", choices=["natural", "synthetic"],
                    help="default: natural (for a datasets folder: what its card says, else natural)")
    sp.add_argument("--synthetic-type", help="hq, qa, txbk or your own (with --kind synthetic)")
    sp.add_argument("--role", choices=ROLES, help="default: train (for a datasets folder: its card's, else train)")
    sp.add_argument("--split", help="a datasets folder: ingest only this split (default: every split)")
    sp.add_argument("--format", choices=FORMATS, help="input format (default: from each file name)")
    sp.add_argument("--text-field", default="text", help="JSONL/Parquet field holding the text")
    sp.add_argument("--text-mode", choices=TEXT_MODES, default="line",
                    help="plain text: a document per line, per blank-line-separated block, per file, "
                         "or per WikiText article (' = Title = ' lines)")
    sp.add_argument("--html-extractor", choices=["resiliparse", "trafilatura"], default="resiliparse")

    add("list", cmd_list, "list the corpora in the store")

    sp = add("show", cmd_show, "show a corpus: counts, bytes, ingest runs and a few sample documents")
    sp.add_argument("name")
    sp.add_argument("--samples", type=int, default=3)

    sp = add("sql", cmd_sql, "run a read-only SQL query over the catalog (documents, results, ...)")
    sp.add_argument("query", help='e.g. "SELECT corpus, count(*) FROM documents GROUP BY corpus"')
    sp.add_argument("--csv", action="store_true", help="rows as CSV (--json: a JSON list of objects)")
    sp.add_argument("--max-width", type=int, default=60, help="cut table cells to this width")
    d = SqlLimits()
    sp.add_argument("--max-rows", type=_non_negative(int), default=d.max_rows,
                    help=f"refuse a result of more rows (default {d.max_rows:,}; 0: no cap)")
    sp.add_argument("--timeout", type=_non_negative(float), default=d.timeout_s,
                    help=f"stop the query after this many seconds (default {d.timeout_s:g}; 0: no limit)")
    sp.add_argument("--memory-limit", type=_non_negative(int), default=None, metavar="MB",
                    help=f"memory for the query and its result, in MB (default {d.memory_mb}: half the "
                         "machine's memory, at most 4096; 0: DuckDB's default)")

    sp = add("export", cmd_export, "export a corpus as a Hugging Face datasets folder with a dataset card, "
                                   "JSONL(.gz) or one Parquet file", overwrite="replace an existing output",
             engine=True, workers=1, workers_help="hf: shards exported in parallel (default 1)")
    sp.add_argument("name")
    sp.add_argument("--format", choices=EXPORT_FORMATS, default="jsonl",
                    help="hf: data/*.parquet + README.md dataset card (load_dataset(DIR) reads it); jsonl: one JSON "
                         "object per line, gzip-compressed when --out ends in .gz; parquet: one file (default jsonl)")
    sp.add_argument("--out", help="output folder or file (default NAME_hf, NAME.jsonl.gz, NAME.parquet)")
    sp.add_argument("--tokenizer", default="cl100k_base",
                    help="tokenizer that counts the card's tokens, or 'none' (default cl100k_base)")
    sp.add_argument("--split", default="train", help="split name of an hf folder (default train)")
    sp.add_argument("--license", help="hf: the card's license field (e.g. cc-by-4.0)")
    sp.add_argument("--language", action="append", help="hf: a language code for the card (repeatable)")

    sp = add("rm", cmd_rm, "remove a corpus and its shards")
    sp.add_argument("name")

    add("demo", cmd_demo, "build the demo store (cc: 300 news articles, wiki: 106 Wikipedia articles)")

    return p


# Commands that moved to a higher layer, kept for one release as deprecated aliases: the old spelling runs
# the new command in a child process (corpora never imports a higher layer, tests/test_layers.py).
MOVED = {"dedup": ["stats.dedup", "curate"]}


def _moved_command(argv: list[str]) -> int | None:
    """The position in argv of the command word (skipping --store VALUE and flags) if it moved, else None."""
    i = 0
    while i < len(argv):
        if argv[i] == "--store":
            i += 2
        elif argv[i].startswith("-"):
            i += 1
        else:
            return i if argv[i] in MOVED else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    at = _moved_command(argv)
    if at is not None:
        moved, rest = argv[at], argv[:at] + argv[at + 1:]  # by position: a --store path may be the same word
        new = ["python", "-m", *MOVED[moved]]
        print(f"warning: `python -m corpora {moved}` is deprecated and goes in the next release; use "
              f"`{' '.join(new)} ...` (or `synthmix corpora {moved} ...`)", file=sys.stderr)
        import subprocess

        return subprocess.call([sys.executable, *new[1:], *rest])
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args)
    return run_command("", lambda: args.func(args), user_errors=(ValueError,))


if __name__ == "__main__":
    sys.exit(main())
