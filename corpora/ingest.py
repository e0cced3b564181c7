"""Ingest: input files -> exact-deduplicated document shards in the store.

Map (`read_to_parts`, one input file per worker process) reads a file with its format's reader and
writes the documents to temporary Parquet parts of bounded size; it touches no catalog. The driver
(`ingest`) owns the store: it drops documents whose normalized text is already in the corpus, moves
each part in as a shard, and marks the file done together with its rejects. A killed ingest therefore
leaves whole shards only; re-running it skips finished files and, for a file that was half done, skips
the documents already present, so nothing is duplicated or lost.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from corpora.readers import Doc, InputError, ReaderConfig, Reject, detect_format, read_file
from corpora.store import DOC_SCHEMA, Store, StoreError, make_documents

log = logging.getLogger(__name__)

REJECT_SCHEMA = pa.schema([("source", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    corpus: str
    kind: str = "natural"
    role: str = "train"
    synthetic_type: str | None = None
    format: str | None = None  # None: from each file's name
    reader: ReaderConfig = ReaderConfig()
    workers: int = 0  # 0: one per core
    part_bytes: int = 64 << 20  # text bytes per shard; bounds a worker's memory


@dataclasses.dataclass
class FileResult:
    path: str
    parts: list[str]
    n_docs: int
    n_bytes_in: int
    rejects: pa.Table


@dataclasses.dataclass
class IngestReport:
    corpus: str
    run_id: str
    n_files: int = 0
    n_files_skipped: int = 0
    n_docs: int = 0
    n_bytes: int = 0
    n_duplicates: int = 0  # exact duplicates of a document already in the corpus or this run
    n_already_present: int = 0  # documents a resumed run found already ingested
    rejects_by_reason: dict = dataclasses.field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def n_rejects(self) -> int:
        return sum(self.rejects_by_reason.values())

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["n_rejects"] = self.n_rejects
        return d


def fingerprint(path: Path) -> str:
    """Identity of an input file's content for resume: size and modification time."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def read_to_parts(path: str, fmt: str | None, reader: ReaderConfig, tmp_dir: str, part_bytes: int) -> FileResult:
    """Map: one input file -> temporary Parquet parts of documents (+ its rejects). Pure but for tmp_dir."""
    rows: list[dict] = []
    parts: list[str] = []
    rejects: list[Reject] = []
    n_docs = n_bytes = 0

    def flush() -> None:
        if rows:
            part = Path(tmp_dir) / f"{uuid.uuid4().hex}.parquet"
            pq.write_table(make_documents(rows), part, compression="zstd")
            parts.append(str(part))
            rows.clear()

    for item in read_file(Path(path), fmt, reader):
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        size = len(item.text.encode("utf-8"))
        rows.append({"text": item.text, "source": item.source,
                     "meta": json.dumps(item.meta, ensure_ascii=False, default=str) if item.meta else None})
        n_docs += 1
        n_bytes += size
        if n_bytes >= part_bytes * (len(parts) + 1):
            flush()
    flush()
    table = pa.table(
        {"source": [r.source for r in rejects], "reason": [r.reason for r in rejects],
         "detail": [r.detail for r in rejects]},
        schema=REJECT_SCHEMA,
    )
    return FileResult(path, parts, n_docs, Path(path).stat().st_size, table)


def _read_to_parts_star(args) -> FileResult:
    return read_to_parts(*args)


def ingest(store: Store, paths: list[str | Path], cfg: IngestConfig, progress: bool = True) -> IngestReport:
    """Driver: ingest input files into corpus `cfg.corpus` (created if needed), resumably."""
    files = [Path(p).resolve() for p in paths]
    for f in files:  # fail before any work on a file that cannot be read at all
        if not f.is_file():
            raise InputError(f"{f}: no such file; check the path")
        if not os.access(f, os.R_OK):
            raise InputError(f"{f}: not readable; check its permissions")
        if cfg.format is None:
            detect_format(f)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    report = IngestReport(cfg.corpus, run_id)
    started = time.monotonic()
    with store.lock(purpose=f"ingest {cfg.corpus}"):
        store.create_corpus(cfg.corpus, cfg.kind, cfg.role, cfg.synthetic_type, exist_ok=True)
        store.remove_orphans(cfg.corpus)
        done = store.ingested_files(cfg.corpus)
        todo = []
        for f in files:
            if (str(f), fingerprint(f)) in done:
                report.n_files_skipped += 1
            else:
                todo.append(f)
        report.n_files = len(files)
        store.execute(
            "INSERT INTO ingest_runs VALUES (?, ?, now(), NULL, ?, 0, 0, 0, '{}', 'running')",
            [run_id, cfg.corpus, json.dumps([str(f) for f in files])],
        )
        seen = store.doc_ids(cfg.corpus)
        # documents of an interrupted earlier run are "already present", not duplicates (counted apart)
        resuming = bool(store.catalog_rows(
            "SELECT 1 FROM ingest_runs WHERE corpus = ? AND status <> 'done' AND run_id <> ?", [cfg.corpus, run_id]))
        reasons: collections.Counter = collections.Counter()
        tmp_dir = store.artifact_dir("ingest_tmp", run_id)
        status = "failed"
        try:
            bar = tqdm(total=sum(f.stat().st_size for f in todo), unit="B", unit_scale=True,
                       desc=f"ingest {cfg.corpus}", disable=not progress)
            for result in _map_files(todo, cfg, tmp_dir):
                n_new, n_dup, n_present = _move_in(store, cfg.corpus, result, seen, resuming)
                store.record_ingest_file(cfg.corpus, run_id, result.path, fingerprint(Path(result.path)),
                                         n_new, n_dup, result.rejects)
                report.n_docs += n_new
                report.n_duplicates += n_dup
                report.n_already_present += n_present
                reasons.update(result.rejects.column("reason").to_pylist())
                bar.update(result.n_bytes_in)
                bar.set_postfix(docs=report.n_docs, dups=report.n_duplicates, rejects=sum(reasons.values()))
            bar.close()
            status = "done"
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            report.rejects_by_reason = dict(reasons.most_common())
            report.elapsed_s = time.monotonic() - started
            report.n_bytes = int(sum(s.n_bytes for s in store.shards(cfg.corpus)))
            store.execute(
                """UPDATE ingest_runs SET finished_at = now(), n_docs = ?, n_duplicates = ?, n_rejects = ?,
                   rejects_by_reason = ?, status = ? WHERE run_id = ?""",
                [report.n_docs, report.n_duplicates, report.n_rejects, json.dumps(report.rejects_by_reason),
                 status, run_id],
            )
    return report


def _map_files(files: list[Path], cfg: IngestConfig, tmp_dir: Path) -> Iterator[FileResult]:
    """Run the map over files, in parallel worker processes when there is more than one file."""
    jobs = [(str(f), cfg.format, cfg.reader, str(tmp_dir), cfg.part_bytes) for f in files]
    workers = min(cfg.workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        yield from map(_read_to_parts_star, jobs)
        return
    # spawn: workers start clean (no inherited thread pools from polars/duckdb in the parent)
    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_read_to_parts_star, jobs)


def _move_in(store: Store, corpus: str, result: FileResult, seen: set[str],
             resuming: bool) -> tuple[int, int, int]:
    """Append a file's parts as shards, dropping documents whose doc_id is already in `seen`.

    Returns (new, duplicates, already present): a resumed file meets the documents an interrupted
    run already moved in; those are not duplicates in the data, so they are counted apart."""
    present_before = _count_docs_from(store, corpus, result.path) if resuming and seen else 0
    n_new = n_dup = 0
    for part in result.parts:
        table = pq.read_table(part)
        keep = []
        for doc_id in table.column("doc_id").to_pylist():
            keep.append(doc_id not in seen)
            seen.add(doc_id)
        n_kept = sum(keep)
        n_dup += table.num_rows - n_kept
        if n_kept:
            store.append_shard(corpus, table if n_kept == table.num_rows else table.filter(pa.array(keep)))
        n_new += n_kept
        os.unlink(part)
    n_present = min(present_before, n_dup)
    return n_new, n_dup - n_present, n_present


def _count_docs_from(store: Store, corpus: str, path: str) -> int:
    """Documents of `corpus` whose source is in input file `path`."""
    if not store.shards(corpus):
        return 0
    rows = store.catalog_rows(
        "SELECT count(*) FROM documents WHERE corpus = ? AND (starts_with(source, ?) OR starts_with(source, ?))",
        [corpus, path + ":", path + "#"],
    )
    return int(rows[0][0])
