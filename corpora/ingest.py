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
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from corpora.executor import ExecutorConfig, RunsOnExecutor
from corpora.exits import is_interrupt
from corpora.readers import (FileResult, InputError, ReaderConfig, detect_format, read_hf_folder,
                             read_to_parts_job)
from corpora.store import ROW_GROUP_BYTES, Store

log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class IngestConfig(RunsOnExecutor):
    corpus: str
    kind: str = "natural"
    role: str = "train"
    synthetic_type: str | None = None
    format: str | None = None  # None: from each file's name
    reader: ReaderConfig = ReaderConfig()
    workers: int = 0  # 0: one per core
    engine: str | None = None  # where readers run: local | ray (None: $SYNTHMIX_ENGINE, else local)
    ray_address: str | None = None  # join this Ray cluster (None: $RAY_ADDRESS, else a local Ray)
    part_bytes: int = 128 << 20  # text bytes per shard
    row_group_bytes: int = ROW_GROUP_BYTES  # text per row group a worker writes (bounds its memory; a mixture
                                            # reads whole row groups, so smaller ones let its I/O follow its budget)
    meta: dict | None = None  # the corpus's meta when this ingest creates it (e.g. a dataset card's header)


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


def ingest(store: Store, paths: list[str | Path], cfg: IngestConfig, progress: bool = True) -> IngestReport:
    """Driver: ingest input files into corpus `cfg.corpus` (created if needed), resumably."""
    files = [Path(p).resolve() for p in paths]
    cfg.execution.check()  # before the corpus or a run row is written
    for f in files:  # fail before any work on a file that cannot be read at all
        if f.is_dir():
            raise InputError(f"{f}: is a directory; pass the files in it (e.g. {f}/*.jsonl.gz)")
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
        store.create_corpus(cfg.corpus, cfg.kind, cfg.role, cfg.synthetic_type, cfg.meta, exist_ok=True)
        store.recover()  # we hold the lock, so runs still marked running died: mark them, drop their files
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
        tmp_dir = store.tmp_dir("ingest")
        status = "failed"
        bar = None
        try:
            bar = tqdm(total=sum(f.stat().st_size for f in todo), unit="B", unit_scale=True,
                       desc=f"ingest {cfg.corpus}", disable=not progress)
            for result in _map_files(todo, cfg, tmp_dir):
                n_new, n_dup, n_present = _move_in(store, cfg.corpus, result, seen, resuming)
                # the file's documents in the corpus: new ones and those an interrupted run moved in
                store.record_ingest_file(cfg.corpus, run_id, result.path, fingerprint(Path(result.path)),
                                         n_new + n_present, n_dup, result.rejects)
                report.n_docs += n_new
                report.n_duplicates += n_dup
                report.n_already_present += n_present
                reasons.update(result.rejects.column("reason").to_pylist())
                bar.update(result.n_bytes_in)
                bar.set_postfix(docs=report.n_docs, dups=report.n_duplicates, rejects=sum(reasons.values()))
            bar.close()
            status = "done"
        except BaseException as e:
            if not is_interrupt(e):
                raise
            status = "interrupted"
            if isinstance(e, KeyboardInterrupt):
                raise
            # Ctrl-C while DuckDB ran a catalog statement: DuckDB turns it into its own error
            raise KeyboardInterrupt from None
        finally:
            with _no_interrupts():  # a second Ctrl-C must not leave the run row half written
                if bar is not None:
                    bar.close()  # so that a message after it starts on its own line
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


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Hold Ctrl-C back for a block of bookkeeping (main thread only; elsewhere signals never arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _map_files(files: list[Path], cfg: IngestConfig, tmp_dir: Path) -> Iterator[FileResult]:
    """Run the map over files on the executor (local processes or Ray), yielding results in file order,
    so that the first copy of a duplicated document is kept whatever the engine and timing."""
    jobs = [(str(f), cfg.format, cfg.reader, str(tmp_dir), cfg.part_bytes, cfg.row_group_bytes) for f in files]
    done: dict[int, FileResult] = {}
    next_i = 0
    # local: a forkserver preloading only the readers, so workers start clean (no thread pools inherited
    # from polars/duckdb in the parent) and light (spawn would re-import the whole store stack)
    with cfg.execution.executor(len(files)) as ex:
        for i, result in ex.map(read_to_parts_job, jobs, preload=("corpora.readers",), progress=False):
            done[i] = result
            while next_i in done:  # results hold part paths only, so waiting ones cost no memory
                yield done.pop(next_i)
                next_i += 1


def _move_in(store: Store, corpus: str, result: FileResult, seen: set[str],
             resuming: bool) -> tuple[int, int, int]:
    """Append a file's parts as shards, dropping documents whose doc_id is already in `seen`.

    Returns (new, duplicates, already present): a resumed file meets the documents an interrupted
    run already moved in; those are not duplicates in the data, so they are counted apart."""
    present_before = _count_docs_from(store, corpus, result.path) if resuming and seen else 0
    n_new = n_dup = 0
    for part in result.parts:
        ids = pq.read_table(part, columns=["doc_id"]).column(0).to_pylist()
        keep = []
        for doc_id in ids:
            keep.append(doc_id not in seen)
            seen.add(doc_id)
        n_kept = sum(keep)
        n_dup += len(ids) - n_kept
        n_new += n_kept
        if n_kept == len(ids):
            store.adopt_shard(corpus, Path(part))  # the common case: moved in, not rewritten
            continue
        if n_kept:
            store.adopt_shard(corpus, _filter_part(Path(part), keep))
        os.unlink(part)
    n_present = min(present_before, n_dup)
    return n_new, n_dup - n_present, n_present


def _filter_part(part: Path, keep: list[bool]) -> Path:
    """Rewrite a part without the dropped rows, one row group at a time (bounded memory)."""
    out = part.with_name(part.stem + ".kept.parquet")
    pf = pq.ParquetFile(part)
    with pq.ParquetWriter(out, pf.schema_arrow, compression="zstd") as writer:
        row = 0
        for i in range(pf.num_row_groups):
            group = pf.read_row_group(i)
            mask = pa.array(keep[row:row + group.num_rows])
            row += group.num_rows
            writer.write_table(group.filter(mask))
    return out


def _count_docs_from(store: Store, corpus: str, path: str) -> int:
    """Documents of `corpus` whose source is in input file `path`."""
    if not store.shards(corpus):
        return 0
    rows = store.catalog_rows(
        "SELECT count(*) FROM documents WHERE corpus = ? AND (starts_with(source, ?) OR starts_with(source, ?))",
        [corpus, path + ":", path + "#"],
    )
    return int(rows[0][0])


def ingest_hf_folder(store: Store, folder: str | Path, corpus: str, *, kind: str | None = None,
                     role: str | None = None, synthetic_type: str | None = None, split: str | None = None,
                     reader: ReaderConfig = ReaderConfig(), workers: int = 0, engine: str | None = None,
                     ray_address: str | None = None, progress: bool = True) -> IngestReport:
    """Ingest a Hugging Face datasets folder (`save_to_disk` Arrow files, or Parquet files named by its
    dataset card / under data/) into `corpus`, every split unless `split` names one.

    The card's YAML header (and a save_to_disk folder's dataset_info.json) is kept in the corpus's meta
    under "hf". A folder written by `python -m corpora export --format hf` comes back as it left: the same
    documents (same doc_ids), their provenance columns, and the original corpus's kind, type, role and meta;
    arguments given here win over the card."""
    ExecutorConfig(engine, workers, ray_address).check()
    hf = read_hf_folder(folder)
    splits = hf.splits
    if split is not None:
        if split not in splits:
            raise InputError(f"{hf.path}: no split {split!r}; it has {', '.join(splits)}")
        splits = {split: splits[split]}
    ours = hf.card.get("synthmix") if isinstance(hf.card.get("synthmix"), dict) else {}
    ours = {k: v for k, v in ours.items() if k == "meta" or v is None or isinstance(v, str)}  # the card is input
    meta = dict(ours["meta"]) if isinstance(ours.get("meta"), dict) else {}
    card = {**hf.card, "synthmix": {k: v for k, v in ours.items() if k != "meta"}} if ours else hf.card
    meta["hf"] = {"folder": str(hf.path.resolve()), "layout": hf.layout,  # the card's meta is merged above
                  "splits": {s: len(files) for s, files in splits.items()},
                  "card": card, "dataset_info": hf.info}
    kind = kind or ours.get("kind") or "natural"
    if ours:  # our own export: its doc_ids are ours too (a synthetic doc_id hashes its recipe, not its text)
        reader = dataclasses.replace(reader, keep_doc_ids=True)
    cfg = IngestConfig(corpus=corpus, kind=kind, role=role or ours.get("role") or "train",
                       synthetic_type=synthetic_type or (ours.get("synthetic_type") if kind == "synthetic" else None),
                       format="hf", reader=reader, workers=workers, engine=engine, ray_address=ray_address,
                       meta=meta)
    return ingest(store, [f for files in splits.values() for f in files], cfg, progress)
